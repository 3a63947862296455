"""The README's throughput table and what it says: runs benchmarks/throughput.py on fixed settings.

    python benchmarks/throughput_table.py --write README.md    # replaces the THROUGHPUT block

Rows: SimCLR with ResNet-18 (small-image stem, 32×32 Fashion-MNIST, batch 256) and with the CPU
default backbone (28×28), each with batched and per-image augmentation and channels_last off/on,
on the C allocator and with the 3×3 convolutions as selfsup's trainer sets them (tuned, Winograd);
one control row per backbone on the system allocator and one with PyTorch's direct convolutions.
Each setting runs in its own process (the allocator is process-wide). The sentences under the
table are computed from the rows, like the table itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

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


def measure_rows(args: argparse.Namespace) -> List[Dict]:
    rows = []
    for label, extra in SETTINGS.items():
        steps = args.large_steps if label == LARGE else args.steps
        timing = ["--steps", str(steps), "--warmup", str(min(args.warmup, steps))]
        plan = [("batched", "0", "both", "tuned", "winograd"), ("per-image", "2", "both", "tuned", "winograd"),
                ("batched", "0", "on", "system", "winograd"), ("batched", "0", "on", "tuned", "direct")]
        for augment, workers, layouts, allocator, convolution in plan:
            result = run([*extra, *timing, "--augment", augment, "--num-workers", workers,
                          "--channels-last", layouts, "--allocator", allocator, "--convolution", convolution])
            for r in result["runs"]:
                rows.append({"backbone": label, "augment": augment, "workers": int(workers),
                             "allocator": result["allocator"], "convolution": convolution, **r})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def convolution_of(row: Dict) -> str:
    return row.get("convolution", "direct")  # rows measured before Winograd recorded none


def find(rows: List[Dict], backbone: str, augment: str = "batched", channels_last: bool = True,
         allocator: str = "tuned", convolution: str = "winograd") -> Dict:
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
        f"(`trainer.channels_last`). With the tuned C allocator (`trainer.cpu_allocator`, "
        f"`selfsup.engine.tune_cpu_allocator`) the ResNet-18 full step "
        f"{effect(large['full_img_per_s'] / large_system['full_img_per_s'])} (its activations are reused instead "
        f"of page-faulted in again each step) and the `resnet18-tiny` one "
        f"{effect(tiny['full_img_per_s'] / tiny_system['full_img_per_s'])}. With Winograd 3×3 convolutions "
        f"(`trainer.cpu_convolution`, `selfsup.ops.winograd`) against PyTorch's direct ones the ResNet-18 full step "
        f"{effect(large['full_img_per_s'] / large_direct['full_img_per_s'])} and the `resnet18-tiny` one "
        f"{effect(tiny['full_img_per_s'] / tiny_direct['full_img_per_s'])}. Each setting is tested to leave the "
        f"numbers as they were (tests/test_speedups.py, tests/test_winograd.py). The full-width ResNet-18 trains at "
        f"{large['full_img_per_s']:.0f} img/s on these cores, which is why the CPU default is `resnet18-tiny` "
        f"(`benchmarks/backbones.py` compares the candidates).",
    ]


def render(measured: Dict) -> str:
    rows, steps, warmup, large_steps = measured["rows"], measured["steps"], measured["warmup"], measured["large_steps"]
    command = f"python benchmarks/throughput_table.py --steps {steps} --warmup {warmup} --large-steps {large_steps}"
    lines = [
        f"Training throughput of SimCLR steps (forward, backward, LARS step) on the development machine "
        f"({measured['machine']}), median of {steps} steps after {warmup} warm-up steps ({large_steps} for the "
        f"full-width ResNet-18, whose rows are noisier). "
        "*model* is the step on views already in memory, *data* the view pipeline alone, *full* the training "
        "loop with both; *data wait share* is the part of the full step spent waiting for views.", "",
        f"SimCLR, Fashion-MNIST, batch 256: `{command} --write README.md`", "",
        "| backbone | views | channels_last | allocator | 3×3 convolution | model img/s | data img/s | full step img/s "
        "| data wait share |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['backbone']} | {r['augment']} ({r['workers']} workers) | {'on' if r['channels_last'] else 'off'} | "
                     f"{r['allocator']} | {convolution_of(r)} | {r['model_img_per_s']:.0f} | {r['data_img_per_s']:.0f} | "
                     f"{r['full_img_per_s']:.0f} | {100 * r['data_wait_share']:.1f} % |")
    return "\n".join(lines + [""] + summary(rows))


def write_block(path: Path, block: str) -> None:
    text = path.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path} has no {BEGIN} … {END} block to replace")
    new = pattern.sub(lambda _: f"{BEGIN}\n{block}\n{END}", text)
    from selfsup.io import atomic_write_text

    atomic_write_text(path, new)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--large-steps", type=int, default=4, help="steps for the full-width ResNet-18 (≈10 s each on 2 cores)")
    p.add_argument("--rows", help="render the rows kept by --save-rows instead of measuring")
    p.add_argument("--save-rows", help="also keep the measured rows here")
    p.add_argument("--write", help="replace the THROUGHPUT block of this markdown file (README.md)")
    args = p.parse_args(argv)
    if args.rows:
        measured = json.loads(Path(args.rows).read_text())
    else:
        measured = {"steps": args.steps, "warmup": args.warmup, "large_steps": args.large_steps,
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores, {os.cpu_count()} threads",
                    "rows": measure_rows(args)}
    if args.save_rows:
        Path(args.save_rows).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save_rows).write_text(json.dumps(measured, indent=1) + "\n")
    block = render(measured)
    print(block)
    if args.write:
        write_block(Path(args.write), block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
