"""The README's throughput table: runs benchmarks/throughput.py on fixed settings, prints markdown.

    python benchmarks/throughput_table.py [--steps 10] [--quick]

Rows: SimCLR with ResNet-18 (small-image stem, 32×32 Fashion-MNIST, batch 256) and with the CPU
default backbone (28×28), each with batched and per-image augmentation, channels_last off/on.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
from contextlib import redirect_stdout
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import throughput  # noqa: E402

SETTINGS = [
    ("resnet18, small stem", ["--backbone", "resnet18", "--backbone-args", '{"small_stem": true}', "--image-size", "32"]),
    ("resnet18-tiny (default)", ["--backbone", "resnet18-tiny"]),
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--large-steps", type=int, default=4, help="steps for the full-width ResNet-18 (≈7 s each on 2 cores)")
    args = p.parse_args(argv)
    print(f"SimCLR, Fashion-MNIST, batch 256, {os.cpu_count()} threads, {platform.machine()}, "
          f"`python benchmarks/throughput_table.py --steps {args.steps}`\n")
    print("| backbone | views | channels_last | model img/s | data img/s | full step img/s | data wait share |")
    print("|---|---|---|---|---|---|---|")
    for label, extra in SETTINGS:
        steps = args.large_steps if "small stem" in label else args.steps
        for augment, workers in (("batched", "0"), ("per-image", "2")):
            buffer = io.StringIO()
            with redirect_stdout(buffer):
                throughput.main([*extra, "--augment", augment, "--num-workers", workers, "--steps", str(steps),
                                 "--warmup", str(min(args.warmup, steps)), "--channels-last", "both"])
            for run in json.loads(buffer.getvalue())["runs"]:
                print(f"| {label} | {augment} ({workers} workers) | {'on' if run['channels_last'] else 'off'} | "
                      f"{run['model_img_per_s']:.0f} | {run['data_img_per_s']:.0f} | {run['full_img_per_s']:.0f} | "
                      f"{100 * run['data_wait_share']:.1f} % |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
