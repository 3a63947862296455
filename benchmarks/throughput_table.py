"""The README's throughput table and what it says: runs benchmarks/throughput.py on fixed settings.

    python benchmarks/throughput_table.py --write README.md    # replaces the THROUGHPUT block

Rows: SimCLR with ResNet-18 (small-image stem, 32×32 Fashion-MNIST, batch 256) and with the CPU
default backbone (28×28), each with batched and per-image augmentation and channels_last off/on,
on the C allocator and with the 3×3 convolutions as selfsup's trainer sets them by default (tuned
allocator, convolutions autotuned per layer shape); control rows per backbone on the system
allocator, with PyTorch's direct convolutions and with Winograd forced. Each setting runs in its own
fresh process (the allocator is process-wide), all settings one after another, for ``--rounds``
rounds (A, B, C, A, B, C, …), so that a drift of the machine hits every row. A figure is the median
over every timed step of every round, with the range of those steps. The sentences under the table
are computed from the rows, like the table itself.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).parent))
from _markdown import replace_block  # noqa: E402
from _timing import MIN_ROUNDS, MIN_STEPS, MIN_WARMUP, fmt, pooled, rate  # noqa: E402

SCRIPT = Path(__file__).parent / "throughput.py"
LARGE, TINY = "resnet18, small stem", "resnet18-tiny (default)"
SETTINGS = {
    LARGE: ["--backbone", "resnet18", "--backbone-args", '{"small_stem": true}', "--image-size", "32"],
    TINY: ["--backbone", "resnet18-tiny"],
}
BEGIN, END = "<!-- THROUGHPUT -->", "<!-- /THROUGHPUT -->"


def run(extra: List[str]) -> Dict:
    done = subprocess.run([sys.executable, str(SCRIPT), *extra], stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout)


# (views, DataLoader workers, channels_last, allocator, 3×3 convolution) per process
PLAN = [("batched", "0", "both", "tuned", "auto"), ("per-image", "2", "both", "tuned", "auto"),
        ("batched", "0", "on", "system", "auto"), ("batched", "0", "on", "tuned", "direct"),
        ("batched", "0", "on", "tuned", "winograd")]


def measure_rows(args: argparse.Namespace) -> List[Dict]:
    """Every setting of :data:`PLAN` for both backbones, in fresh processes, ``args.rounds`` times over;
    the rounds of one setting pooled into one row."""
    runs: Dict[tuple, List[Dict]] = {}
    machine = None
    for round_index in range(args.rounds):
        for label, extra in SETTINGS.items():
            steps = args.large_steps if label == LARGE else args.steps
            timing = ["--steps", str(steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size)]
            for augment, workers, layouts, allocator, convolution in PLAN:
                result = run([*extra, *timing, "--augment", augment, "--num-workers", workers,
                              "--channels-last", layouts, "--allocator", allocator, "--convolution", convolution])
                machine = machine or result["machine"]
                for r in result["runs"]:
                    key = (label, augment, int(workers), r["channels_last"], allocator, convolution)
                    runs.setdefault(key, []).append({**r, "allocator_state": result["allocator"],
                                                     "autotune": result.get("convolution_autotune")})
                    print(json.dumps({"round": round_index, "setting": key, "full_img_per_s": r["full_img_per_s"]}),
                          file=sys.stderr, flush=True)
    rows = []
    for (label, augment, workers, channels_last, allocator, convolution), rounds in runs.items():
        model, full = rate(pooled(rounds, "model_step_s"), args.batch_size), rate(pooled(rounds, "full_step_s"), args.batch_size)
        data = rate(pooled(rounds, "data_step_s"), args.batch_size)
        rows.append({"backbone": label, "augment": augment, "workers": workers, "channels_last": channels_last,
                     "allocator": allocator, "convolution": convolution, "rounds": len(rounds),
                     "model_img_per_s": model["median"], "model_spread": [model["min"], model["max"]],
                     "data_img_per_s": data["median"], "full_img_per_s": full["median"],
                     "full_spread": [full["min"], full["max"]],
                     "data_wait_share": round(sum(pooled(rounds, "full_wait_s")) / sum(pooled(rounds, "full_step_s")), 3),
                     "allocator_state": rounds[0]["allocator_state"], "autotune": rounds[0]["autotune"],
                     "step_s": {k: [r[k] for r in rounds] for k in ("model_step_s", "data_step_s", "full_step_s")}})
    args.machine = machine
    return rows


def convolution_of(row: Dict) -> str:
    return row.get("convolution", "direct")  # rows measured before Winograd recorded none


def spread(row: Dict, kind: str) -> str:
    """``median (min–max)`` of a row's ``kind`` ("model" or "full") images/s; the median alone for
    rows measured before the spread was kept."""
    if f"{kind}_spread" not in row:
        return f"{row[f'{kind}_img_per_s']:.0f}"
    low, high = row[f"{kind}_spread"]
    return fmt({"median": row[f"{kind}_img_per_s"], "min": low, "max": high}, 0)


def find(rows: List[Dict], backbone: str, augment: str = "batched", channels_last: bool = True,
         allocator: str = "tuned", convolution: str = "auto") -> Dict:
    return next(r for r in rows if r["backbone"] == backbone and r["augment"] == augment
                and r["channels_last"] == channels_last and r["allocator"] == allocator
                and convolution_of(r) == convolution)


def effect(ratio: float, noise: float = 0.05) -> str:
    """How a speed ratio reads in a sentence; within ``noise`` of 1 it is no change."""
    if abs(ratio - 1.0) < noise:
        return f"is unchanged within the noise of these timings ({ratio:.2f}×)"
    return f"is {ratio:.2f}× as fast" + ("" if ratio > 1.0 else " (slower)")


def summary(rows: List[Dict]) -> List[str]:
    """What the table says, each figure read from the rows."""
    tiny, tiny_image = find(rows, TINY), find(rows, TINY, "per-image")
    large, large_system = find(rows, LARGE), find(rows, LARGE, allocator="system")
    tiny_system = find(rows, TINY, allocator="system")
    large_direct, tiny_direct = find(rows, LARGE, convolution="direct"), find(rows, TINY, convolution="direct")
    large_winograd, tiny_winograd = find(rows, LARGE, convolution="winograd"), find(rows, TINY, convolution="winograd")
    waits = [r["data_wait_share"] for r in rows if r["augment"] == "batched"]
    nhwc = {b: find(rows, b)["model_img_per_s"] / find(rows, b, channels_last=False)["model_img_per_s"]
            for b in (TINY, LARGE)}
    return [
        f"What the table says. On the CPU default network the view pipeline decides the speed: "
        f"per-image torchvision views in 2 DataLoader workers take the cores from the model (full step "
        f"{tiny_image['full_img_per_s']:.0f} img/s against a model step of {tiny_image['model_img_per_s']:.0f}), "
        f"while views made on whole uint8 batches in the training process give {tiny['full_img_per_s']:.0f} img/s, "
        f"{tiny['full_img_per_s'] / tiny_image['full_img_per_s']:.1f}× the per-image loop, with a data wait of "
        f"{100 * min(waits):.1f}–{100 * max(waits):.1f} % of the step. `channels_last` speeds the model step by "
        f"{nhwc[TINY]:.2f}× on `resnet18-tiny` and {nhwc[LARGE]:.2f}× on ResNet-18 and is on by default "
        f"(`trainer.channels_last`). With the tuned C allocator (`cpu.allocator`, "
        f"`selfsup.ops.tune_cpu_allocator`) the ResNet-18 full step "
        f"{effect(large['full_img_per_s'] / large_system['full_img_per_s'])} (its activations are reused instead "
        f"of page-faulted in again each step) and the `resnet18-tiny` one "
        f"{effect(tiny['full_img_per_s'] / tiny_system['full_img_per_s'])}. With the 3×3 convolutions autotuned "
        f"per layer shape (`cpu.convolution=auto`, `selfsup.ops.autotune`) against PyTorch's direct ones the "
        f"ResNet-18 full step {effect(large['full_img_per_s'] / large_direct['full_img_per_s'])} and the "
        f"`resnet18-tiny` one {effect(tiny['full_img_per_s'] / tiny_direct['full_img_per_s'])}; with Winograd "
        f"forced wherever it applies (`cpu.convolution=winograd`) the ResNet-18 full step "
        f"{effect(large_winograd['full_img_per_s'] / large_direct['full_img_per_s'])} and the `resnet18-tiny` one "
        f"{effect(tiny_winograd['full_img_per_s'] / tiny_direct['full_img_per_s'])} against direct. "
        f"Each setting is tested to leave the "
        f"numbers as they were (tests/ops/test_speedups.py, tests/ops/test_winograd.py). The full-width ResNet-18 trains at "
        f"{large['full_img_per_s']:.0f} img/s on these cores, which is why the CPU default is `resnet18-tiny` "
        f"(`benchmarks/backbones.py` compares the candidates).",
    ]


def render(measured: Dict) -> str:
    rows, steps, warmup, large_steps = measured["rows"], measured["steps"], measured["warmup"], measured["large_steps"]
    rounds = measured.get("rounds", 1)
    batch = measured.get("batch_size", 256)
    command = (f"python benchmarks/throughput_table.py --steps {steps} --warmup {warmup} --large-steps {large_steps}"
               f" --rounds {rounds}" + (f" --batch-size {batch}" if batch != 256 else ""))
    machine = measured["machine"]
    machine = machine["line"] if isinstance(machine, dict) else machine
    lines = [
        f"Training throughput of SimCLR steps (forward, backward, LARS step). Machine: {machine}. "
        f"Images/s: median (min–max) over {steps} timed steps after {warmup} warm-up steps ({large_steps} for the "
        f"full-width ResNet-18) in each of {rounds} rounds, every setting in a fresh process, settings interleaved. "
        "*model* is the step on views already in memory, *data* the view pipeline alone, *full* the training "
        "loop with both; *data wait share* is the part of the full step spent waiting for views.", "",
        f"SimCLR, Fashion-MNIST, batch {batch}: `{command} --write README.md`", "",
        "| backbone | views | channels_last | allocator | 3×3 convolution | model img/s | data img/s | full step img/s "
        "| data wait share |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['backbone']} | {r['augment']} ({r['workers']} workers) | {'on' if r['channels_last'] else 'off'} | "
                     f"{r['allocator']} | {convolution_of(r)} | {spread(r, 'model')} | {r['data_img_per_s']:.0f} | "
                     f"{spread(r, 'full')} | {100 * r['data_wait_share']:.1f} % |")
    return "\n".join(lines + [""] + summary(rows))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=MIN_STEPS)
    p.add_argument("--warmup", type=int, default=MIN_WARMUP)
    p.add_argument("--large-steps", type=int, default=MIN_STEPS,
                   help="timed steps for the full-width ResNet-18 (≈4–8 s each on 2 cores)")
    p.add_argument("--rounds", type=int, default=MIN_ROUNDS, help="times every setting is run, interleaved")
    p.add_argument("--batch-size", type=int, default=256, help="SimCLR batch (the README's table: 256)")
    p.add_argument("--rows", help="render the rows kept by --save-rows instead of measuring")
    p.add_argument("--save-rows", help="also keep the measured rows here")
    p.add_argument("--write", help="replace the THROUGHPUT block of this markdown file (README.md)")
    args = p.parse_args(argv)
    if args.rows:
        measured = json.loads(Path(args.rows).read_text())
    else:
        rows = measure_rows(args)
        measured = {"steps": args.steps, "warmup": args.warmup, "large_steps": args.large_steps,
                    "rounds": args.rounds, "batch_size": args.batch_size, "machine": args.machine, "rows": rows}
    if args.save_rows:
        Path(args.save_rows).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save_rows).write_text(json.dumps(measured, indent=1) + "\n")
    block = render(measured)
    print(block)
    if args.write:
        replace_block(Path(args.write), "THROUGHPUT", block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
