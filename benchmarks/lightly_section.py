"""Write the "against lightly" section of BENCHMARKS.md from the JSON the two races left.

    python benchmarks/vs_lightly.py --output runs/vs_lightly.json
    python benchmarks/race_vs_lightly.py --output runs/race_vs_lightly.json
    python benchmarks/lightly_section.py          # -> runs/bench/fashion-mnist/vs-lightly.md, BENCHMARKS.md

Every figure is read from those files; a missing file leaves its table out with the command that
would produce it. The section sits beside the ``selfsup bench`` sections, which
``selfsup.commands.bench.assemble`` keeps in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

from selfsup.commands.bench import assemble

GOAL_RATIO = 1.5  # issue: full-step throughput at least 1.5× lightly's
GOAL_DATA_SHARE = 0.10  # and the data pipeline at most 10 % of the step


def throughput_table(result: Dict) -> List[str]:
    lines = [f"Machine: {result['machine']}, {result['threads']} torch threads, torch {result['torch']}, "
             f"lightly {result['lightly']}; {result['backbone']}, {result['image_size']} px, batch "
             f"{result['batch_size']}. Images/s are medians over the timed steps and rounds.", "",
             "| method | selfsup model | selfsup full | data wait | lightly model | lightly full (workers) | "
             "data wait | ratio model | ratio full | ≥ 1.5× |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in result["methods"].items():
        ours, theirs = row["selfsup"], row["lightly"]
        workers = sorted({run["workers"] for run in row["runs"]["lightly/system"]})
        lines.append(
            f"| {name} | {ours['model_img_per_s']:.1f} | {ours['full_img_per_s']:.1f} | "
            f"{100 * ours['data_wait_share']:.1f} % | {theirs['model_img_per_s']:.1f} | "
            f"{theirs['full_img_per_s']:.1f} ({', '.join(map(str, workers))}) | {100 * theirs['data_wait_share']:.1f} % | "
            f"{row['ratio_model']:.2f}× | {row['ratio_full']:.2f}× | {'yes' if row['ratio_full'] >= GOAL_RATIO else 'no'} |")
    met = [name for name, row in result["methods"].items() if row["ratio_full"] >= GOAL_RATIO]
    lines += ["", f"Full step at least {GOAL_RATIO}× lightly's: {len(met)} of {len(result['methods'])} methods"
                  f"{' (' + ', '.join(met) + ')' if met else ''}."]
    return lines


def allocator_table(result: Dict) -> List[str]:
    """The controls of ``--allocator-controls``: each side on both C allocator settings."""
    rows = {name: row["controls"] for name, row in result["methods"].items() if "controls" in row}
    if not rows:
        return []
    lines = ["Each side's normal usage is selfsup on the tuned allocator (its trainer's default, "
             "`selfsup.engine.tune_cpu_allocator`) and lightly on the system one. The controls swap them: "
             "full-step images/s and ratios. selfsup's columns use Winograd convolutions, whose short-lived "
             "tile buffers the system allocator maps and faults in anew at every call.", "",
             "| method | selfsup, system | selfsup, tuned | lightly, system | lightly, tuned | "
             "ratio, both system | ratio, normal usage | ratio, both tuned |",
             "|---|---|---|---|---|---|---|---|"]
    for name, controls in rows.items():
        row = result["methods"][name]
        lines.append(
            f"| {name} | {controls['selfsup_system_allocator']['full_img_per_s']:.1f} | "
            f"{row['selfsup']['full_img_per_s']:.1f} | {row['lightly']['full_img_per_s']:.1f} | "
            f"{controls['lightly_tuned_allocator']['full_img_per_s']:.1f} | {controls['ratio_full_both_system']:.2f}× | "
            f"{row['ratio_full']:.2f}× | {controls['ratio_full_both_tuned']:.2f}× |")
    return lines


def convolution_table(result: Dict) -> List[str]:
    """The control of ``--convolution-controls``: selfsup with PyTorch's direct convolutions."""
    rows = {name: row["convolution_control"] for name, row in result["methods"].items() if "convolution_control" in row}
    if not rows:
        return []
    lines = ["selfsup's trainer computes 3×3 stride-1 convolutions of CPU steps with Winograd F(4×4, 3×3) "
             "(`trainer.cpu_convolution=winograd`, `selfsup.ops.winograd`); the control runs the same step "
             "with PyTorch's direct (oneDNN) convolutions, as lightly does: full-step images/s and ratios.", "",
             "| method | selfsup, direct | selfsup, Winograd | lightly | Winograd speed-up | "
             "ratio, direct | ratio, normal usage |",
             "|---|---|---|---|---|---|---|"]
    for name, control in rows.items():
        row = result["methods"][name]
        direct, ours = control["selfsup_direct_convolution"]["full_img_per_s"], row["selfsup"]["full_img_per_s"]
        lines.append(f"| {name} | {direct:.1f} | {ours:.1f} | {row['lightly']['full_img_per_s']:.1f} | "
                     f"{ours / direct:.2f}× | {control['ratio_full_direct_convolution']:.2f}× | {row['ratio_full']:.2f}× |")
    return lines


def race_table(result: Dict) -> List[str]:
    settings = result["settings"]
    lines = [f"Budget: {settings['minutes']:g} minutes of training per side, {settings['threads']} threads, "
             f"{settings['machine']}; backbone {settings['backbone']}, batch {settings['batch']}; lightly's views "
             f"in {settings['lightly_workers']} DataLoader workers. Same evaluation code for both (kNN k=200, "
             "linear probe, all 60 000 / 10 000 images).", "",
             "| pipeline | C allocator | 3×3 convolution | steps | epochs | kNN | linear |", "|---|---|---|---|---|---|---|"]
    for side in ("selfsup", "lightly"):
        if side in result:
            r = result[side]
            # Runs made before the allocator was tuned, or before Winograd, recorded nothing: they
            # ran on the system allocator, with direct convolutions.
            lines.append(f"| {side} | {r.get('allocator', 'system')} | {r.get('convolution', 'direct')} | "
                         f"{r['steps']} | {r['epochs']:.1f} | "
                         f"{100 * r['knn_top1']:.2f} | {100 * r['linear_top1']:.2f} |")
    if "floor" in result:
        floor = result["floor"]
        lines.append(f"| random init (floor) | — | — | 0 | 0 | {100 * floor['knn_top1']:.2f} | "
                     f"{100 * floor['linear_top1']:.2f} |")
    if "selfsup" in result and "lightly" in result:
        gap = 100 * (result["selfsup"]["knn_top1"] - result["lightly"]["knn_top1"])
        lines += ["", f"kNN difference, selfsup − lightly: {gap:+.2f} points "
                      f"({'selfsup ahead' if gap > 0 else 'selfsup not ahead'})."]
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--throughput", default="runs/vs_lightly.json")
    p.add_argument("--race", default="runs/race_vs_lightly.json")
    p.add_argument("--root", default="runs/bench/fashion-mnist", help="the bench root whose sections form BENCHMARKS.md")
    p.add_argument("--output", default="BENCHMARKS.md")
    args = p.parse_args(argv)

    section = ["## Against lightly (issue: faster than the peers on a CPU)", ""]
    throughput, race = Path(args.throughput), Path(args.race)
    section += ["### Throughput: the same training step, images/s", ""]
    if throughput.is_file():
        result = json.loads(throughput.read_text())
        section += [f"Command: `{result.get('command', 'python benchmarks/vs_lightly.py')}`", ""]
        section += throughput_table(result)
        section += ["", f"*model*: forward, backward and update on views already in memory; *full*: the loop with its "
                        f"data pipeline. Goals: full ≥ {GOAL_RATIO}× lightly, data wait ≤ {100 * GOAL_DATA_SHARE:.0f} %."]
        convolutions = convolution_table(result)
        if convolutions:
            section += ["", "#### How much of it is the Winograd convolution", ""] + convolutions
        controls = allocator_table(result)
        if controls:
            section += ["", "#### How much of it is the C allocator", ""] + controls
    else:
        section += [f"Not measured yet: `python benchmarks/vs_lightly.py --output {args.throughput}`."]
    section += ["", "### Accuracy per CPU-minute: SimCLR for the same wall clock", ""]
    if race.is_file():
        result = json.loads(race.read_text())
        section += [f"Command: `{result['settings']['command']}`", ""]
        section += race_table(result)
    else:
        section += [f"Not measured yet: `python benchmarks/race_vs_lightly.py --output {args.race}`."]
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "vs-lightly.md").write_text("\n".join(section) + "\n")
    assemble(root, Path(args.output))
    print("\n".join(section))
    return 0


if __name__ == "__main__":
    sys.exit(main())
