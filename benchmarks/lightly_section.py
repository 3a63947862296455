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

sys.path.insert(0, str(Path(__file__).parent))
from _timing import fmt  # noqa: E402

GOAL_RATIO = 1.5  # issue: full-step throughput at least 1.5× lightly's
GOAL_DATA_SHARE = 0.10  # and the data pipeline at most 10 % of the step


def img_per_s(side: Dict, kind: str) -> str:
    """``median (min–max)`` images/s of a side's ``kind`` ("model" or "full"); the median alone for
    results measured before the spread was kept."""
    if f"{kind}_spread" not in side:
        return f"{side[f'{kind}_img_per_s']:.1f}"
    low, high = side[f"{kind}_spread"]
    return fmt({"median": side[f"{kind}_img_per_s"], "min": low, "max": high})


def throughput_table(result: Dict) -> List[str]:
    timing = (f"median (min–max) over {result['steps']} timed steps after {result['warmup']} warm-up steps in each "
              f"of {result['rounds']} rounds, sides alternating in fresh processes" if "steps" in result
              else "medians over the timed steps and rounds")
    lines = [f"Machine: {result['machine']}; lightly {result['lightly']}; {result['backbone']}, "
             f"{result['image_size']} px, batch {result['batch_size']}, "
             f"{'bf16 autocast' if result.get('precision') == 'bf16' else 'float32'} on both sides. "
             f"Images/s: {timing}.", "",
             "| method | selfsup model | selfsup full | data wait | lightly model | lightly full (workers) | "
             "data wait | ratio model | ratio full | ≥ 1.5× |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in result["methods"].items():
        ours, theirs = row["selfsup"], row["lightly"]
        workers = sorted({run["workers"] for run in row["runs"]["lightly/system"]})
        lines.append(
            f"| {name} | {img_per_s(ours, 'model')} | {img_per_s(ours, 'full')} | "
            f"{100 * ours['data_wait_share']:.1f} % | {img_per_s(theirs, 'model')} | "
            f"{img_per_s(theirs, 'full')} ({', '.join(map(str, workers))}) | {100 * theirs['data_wait_share']:.1f} % | "
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
    lines = ["Each side's normal usage is selfsup on the tuned allocator (`selfsup train`'s default, "
             "`selfsup.ops.tune_cpu_allocator`) and lightly on the system one. The controls swap them: "
             "full-step images/s and ratios.", "",
             "| method | selfsup, system | selfsup, tuned | lightly, system | lightly, tuned | "
             "ratio, both system | ratio, normal usage | ratio, both tuned |",
             "|---|---|---|---|---|---|---|---|"]
    for name, controls in rows.items():
        row = result["methods"][name]
        lines.append(
            f"| {name} | {img_per_s(controls['selfsup_system_allocator'], 'full')} | "
            f"{img_per_s(row['selfsup'], 'full')} | {img_per_s(row['lightly'], 'full')} | "
            f"{img_per_s(controls['lightly_tuned_allocator'], 'full')} | {controls['ratio_full_both_system']:.2f}× | "
            f"{row['ratio_full']:.2f}× | {controls['ratio_full_both_tuned']:.2f}× |")
    return lines


def convolution_table(result: Dict) -> List[str]:
    """The controls of ``--convolution-controls``: selfsup with PyTorch's direct convolutions and with
    Winograd forced, against its default (autotuned per layer shape)."""
    rows = {name: row["convolution_control"] for name, row in result["methods"].items() if "convolution_control" in row}
    if not rows:
        return []
    lines = ["selfsup's trainer times Winograd F(4×4, 3×3) against PyTorch's direct (oneDNN) kernel for each "
             "3×3 stride-1 layer shape at the first step and keeps the faster (`cpu.convolution=auto`, "
             "`selfsup.ops.autotune`); the controls run the same step with direct convolutions only, as lightly "
             "does, and with Winograd wherever it applies (`cpu.convolution=winograd`): full-step images/s and "
             "ratios.", "",
             "| method | selfsup, direct | selfsup, Winograd | selfsup, auto | lightly | auto ÷ direct | "
             "ratio, direct | ratio, normal usage |",
             "|---|---|---|---|---|---|---|---|"]
    for name, control in rows.items():
        row = result["methods"][name]
        direct, ours = control["selfsup_direct_convolution"], row["selfsup"]
        forced = control.get("selfsup_winograd_convolution")
        lines.append(f"| {name} | {img_per_s(direct, 'full')} | {img_per_s(forced, 'full') if forced else '—'} | "
                     f"{img_per_s(ours, 'full')} | {img_per_s(row['lightly'], 'full')} | "
                     f"{ours['full_img_per_s'] / direct['full_img_per_s']:.2f}× | "
                     f"{control['ratio_full_direct_convolution']:.2f}× | {row['ratio_full']:.2f}× |")
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
        if not all("lightly" in row for row in result["methods"].values()):
            print(f"{throughput} holds selfsup alone (vs_lightly.py --sides selfsup): no comparison to write",
                  file=sys.stderr)
            return 2
        section += [f"Command: `{result.get('command', 'python benchmarks/vs_lightly.py')}`", ""]
        section += throughput_table(result)
        section += ["", f"*model*: forward, backward and update on views already in memory; *full*: the loop with its "
                        f"data pipeline. Goals: full ≥ {GOAL_RATIO}× lightly, data wait ≤ {100 * GOAL_DATA_SHARE:.0f} %."]
        convolutions = convolution_table(result)
        if convolutions:
            section += ["", "#### How much of it is the convolution choice", ""] + convolutions
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
