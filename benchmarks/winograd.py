"""selfsup's CPU 3×3 convolutions against PyTorch's direct one, one layer at a time: Winograd
F(4×4, 3×3) on maps of 4×4 and more, the dense GEMM on maps of at most 2×2.

    python benchmarks/winograd.py                       # ResNet-18 (small stem) and resnet18-tiny layers
    python benchmarks/winograd.py --shapes 512x64x32 256x16x14

For each ``BATCHxCHANNELSxSIZE`` (a C→C 3×3, stride-1 convolution on SIZE×SIZE maps, channels_last,
float32) the forward pass and the backward pass (input and weight gradients) with each
implementation: ``--warmup`` untimed calls, then ``--repeats`` timed ones, the two implementations
alternating over ``--rounds`` rounds (direct, selfsup, direct, selfsup, …; 4, 10 and 2 by default).
Reported: the median of forward + backward with its range (min–max), every timing in the JSON, the
ratio of medians, and the largest error relative to the direct result. The functions are called
directly, whatever ``WinogradConv2d``'s thresholds and the autotune's choice: the narrow
resnet18-tiny rows show why it leaves layers under ``MIN_CHANNELS`` to the direct convolution, and
on CPUs where oneDNN's direct kernels are strong (AVX-512) rows below 1× are why
``cpu.convolution=auto`` times each shape before choosing. Runs on the tuned C allocator, as
``selfsup train`` does. One JSON object on stdout, with the machine line (CPU, ISA flags, torch,
which Winograd build ran); a table on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable, Dict, List

import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _timing import MIN_ROUNDS, MIN_STEPS, MIN_WARMUP  # noqa: E402

from selfsup.ops import dense_conv3x3, machine_info, tune_cpu_allocator, winograd_conv3x3  # noqa: E402
from selfsup.ops.winograd import MIN_SIZE  # noqa: E402

# Stage shapes of a SimCLR step (2 views of 256): ResNet-18 small stem on 32 px, DINO's 16 px local
# crops at stages 3 and 4, and resnet18-tiny on 28 px (stride-2 stem: 14, 7, 4, 2).
DEFAULT_SHAPES = ["512x64x32", "512x128x16", "512x256x8", "512x512x4", "1536x256x4", "1536x512x2",
                  "512x16x14", "512x32x7", "512x64x4", "512x128x2"]


def times_ms(fn: Callable[[], object], repeats: int) -> List[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(1e3 * (time.perf_counter() - start))
    return out


def measure(batch: int, channels: int, size: int, repeats: int, warmup: int = MIN_WARMUP,
            rounds: int = MIN_ROUNDS) -> Dict[str, object]:
    torch.manual_seed(0)
    x = torch.randn(batch, channels, size, size).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    weight = (torch.randn(channels, channels, 3, 3) * channels ** -0.5).requires_grad_(True)
    grad = torch.randn(batch, channels, size, size).contiguous(memory_format=torch.channels_last)
    fast = winograd_conv3x3 if size >= MIN_SIZE else dense_conv3x3
    convs = {"direct": lambda: F.conv2d(x, weight, padding=1), "selfsup": lambda: fast(x, weight)}
    timings: Dict[str, List[float]] = {f"{name}_{part}_ms": [] for name in convs for part in ("forward", "backward")}
    outputs = {}
    for round_index in range(rounds):
        for name, conv in convs.items():  # direct, selfsup, direct, selfsup, …
            with torch.no_grad():
                times_ms(conv, warmup if round_index == 0 else 1)
                timings[f"{name}_forward_ms"] += times_ms(conv, repeats)
            out = conv()
            outputs[name] = out.detach()
            backward = lambda: torch.autograd.grad(out, (x, weight), grad, retain_graph=True)  # noqa: E731
            times_ms(backward, warmup if round_index == 0 else 1)
            timings[f"{name}_backward_ms"] += times_ms(backward, repeats)
    total = {name: [f + b for f, b in zip(timings[f"{name}_forward_ms"], timings[f"{name}_backward_ms"])]
             for name in convs}
    error = (outputs["selfsup"] - outputs["direct"]).abs().max() / outputs["direct"].abs().max()
    return {"batch": batch, "channels": channels, "size": size, "algorithm": fast.__name__,
            **{f"{name}_ms": round(statistics.median(t), 2) for name, t in total.items()},
            **{f"{name}_range_ms": [round(min(t), 2), round(max(t), 2)] for name, t in total.items()},
            "speedup": round(statistics.median(total["direct"]) / statistics.median(total["selfsup"]), 2),
            "relative_error": float(f"{error.item():.2e}"),
            "timings_ms": {k: [round(v, 3) for v in t] for k, t in timings.items()}}


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, help="BATCHxCHANNELSxSIZE")
    p.add_argument("--repeats", type=int, default=MIN_STEPS, help="timed calls per implementation and round")
    p.add_argument("--warmup", type=int, default=MIN_WARMUP, help="untimed calls before them")
    p.add_argument("--rounds", type=int, default=MIN_ROUNDS, help="alternations direct → selfsup")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args(argv)
    allocator = tune_cpu_allocator()
    torch.set_num_threads(args.threads)
    machine = machine_info(args.threads)
    rows = []
    print(f"machine: {machine['line']}", file=sys.stderr)
    print("batch × channels × size | direct fwd+bwd ms, median (min–max) | selfsup (algorithm) | speed-up | rel. error",
          file=sys.stderr)
    for shape in args.shapes:
        batch, channels, size = (int(v) for v in shape.split("x"))
        row = measure(batch, channels, size, args.repeats, args.warmup, args.rounds)
        rows.append(row)
        (d_lo, d_hi), (s_lo, s_hi) = row["direct_range_ms"], row["selfsup_range_ms"]
        print(f"{batch} × {channels} × {size} | {row['direct_ms']:.1f} ({d_lo:.1f}–{d_hi:.1f}) | "
              f"{row['selfsup_ms']:.1f} ({s_lo:.1f}–{s_hi:.1f}) ({row['algorithm']}) | {row['speedup']:.2f}× | "
              f"{row['relative_error']:.1e}", file=sys.stderr, flush=True)
    print(json.dumps({"command": "python benchmarks/winograd.py " + " ".join(sys.argv[1:] if argv is None else argv),
                      "threads": args.threads, "allocator": allocator, "machine": machine, "rows": rows},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
