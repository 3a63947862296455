"""selfsup's CPU 3×3 convolutions against PyTorch's direct one, one layer at a time: Winograd
F(4×4, 3×3) on maps of 4×4 and more, the dense GEMM on maps of at most 2×2.

    python benchmarks/winograd.py                       # ResNet-18 (small stem) and resnet18-tiny layers
    python benchmarks/winograd.py --shapes 512x64x32 256x16x14

For each ``BATCHxCHANNELSxSIZE`` (a C→C 3×3, stride-1 convolution on SIZE×SIZE maps, channels_last,
float32) the best of ``--repeats`` timings of the forward pass and of the backward pass (input
and weight gradients) with each implementation, their ratio, and the largest error relative to
the direct result. The functions are called directly, whatever ``WinogradConv2d``'s thresholds:
the narrow resnet18-tiny rows show why it leaves layers under ``MIN_CHANNELS`` to the direct
convolution. Runs on the tuned C allocator, as selfsup's trainer does. One JSON
object on stdout; a table on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

from selfsup.engine import tune_cpu_allocator
from selfsup.ops import dense_conv3x3, winograd_conv3x3
from selfsup.ops.winograd import MIN_SIZE

# Stage shapes of a SimCLR step (2 views of 256): ResNet-18 small stem on 32 px, DINO's 16 px local
# crops at stages 3 and 4, and resnet18-tiny on 28 px (stride-2 stem: 14, 7, 4, 2).
DEFAULT_SHAPES = ["512x64x32", "512x128x16", "512x256x8", "512x512x4", "1536x256x4", "1536x512x2",
                  "512x16x14", "512x32x7", "512x64x4", "512x128x2"]


def best_time(fn: Callable[[], object], repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(batch: int, channels: int, size: int, repeats: int) -> Dict[str, float]:
    torch.manual_seed(0)
    x = torch.randn(batch, channels, size, size).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    weight = (torch.randn(channels, channels, 3, 3) * channels ** -0.5).requires_grad_(True)
    grad = torch.randn(batch, channels, size, size).contiguous(memory_format=torch.channels_last)
    timings: Dict[str, float] = {}
    outputs = {}
    fast = winograd_conv3x3 if size >= MIN_SIZE else dense_conv3x3
    for name, conv in (("direct", lambda: F.conv2d(x, weight, padding=1)), ("selfsup", lambda: fast(x, weight))):
        with torch.no_grad():
            timings[f"{name}_forward_ms"] = 1e3 * best_time(conv, repeats)
        out = conv()
        outputs[name] = out.detach()
        timings[f"{name}_backward_ms"] = 1e3 * best_time(
            lambda: torch.autograd.grad(out, (x, weight), grad, retain_graph=True), repeats)
    direct = timings["direct_forward_ms"] + timings["direct_backward_ms"]
    ours = timings["selfsup_forward_ms"] + timings["selfsup_backward_ms"]
    error = (outputs["selfsup"] - outputs["direct"]).abs().max() / outputs["direct"].abs().max()
    return {"batch": batch, "channels": channels, "size": size, "algorithm": fast.__name__,
            **{k: round(v, 1) for k, v in timings.items()},
            "speedup": round(direct / ours, 2), "relative_error": float(f"{error.item():.2e}")}


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, help="BATCHxCHANNELSxSIZE")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args(argv)
    allocator = tune_cpu_allocator()
    torch.set_num_threads(args.threads)
    rows = []
    print("batch × channels × size | direct fwd / bwd ms | selfsup fwd / bwd ms (algorithm) | speed-up | rel. error",
          file=sys.stderr)
    for shape in args.shapes:
        batch, channels, size = (int(v) for v in shape.split("x"))
        row = measure(batch, channels, size, args.repeats)
        rows.append(row)
        print(f"{batch} × {channels} × {size} | {row['direct_forward_ms']:.0f} / {row['direct_backward_ms']:.0f} | "
              f"{row['selfsup_forward_ms']:.0f} / {row['selfsup_backward_ms']:.0f} ({row['algorithm']}) | {row['speedup']:.2f}× | "
              f"{row['relative_error']:.1e}", file=sys.stderr, flush=True)
    print(json.dumps({"command": "python benchmarks/winograd.py " + " ".join(sys.argv[1:] if argv is None else argv),
                      "threads": args.threads, "allocator": allocator, "torch": torch.__version__, "rows": rows},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
