"""Forward+backward throughput of candidate CPU backbones for the Fashion-MNIST demo.

Measures images/s of one training step's backbone work (forward, a scalar loss, backward; no
optimizer) on random ``(batch, channels, size, size)`` inputs, median over ``--steps`` steps
after ``--warmup`` steps, and prints one JSON object per candidate.

    python benchmarks/backbones.py --threads 2 --batch-size 256 --size 28 --channels 1

The candidates differ in width (channel multiplier), stem (``small``: 3×3 stride 1, no
max-pool; ``s2``: the same 3×3 conv with stride 2; ``imagenet``: 7×7 stride 2 + max-pool)
and memory format.

Measured on the 2-core development machine (torch 2.14.1, batch 256 of 1×28×28, 2 threads),
two runs while other jobs shared the CPU, so expect ±20%:

    candidate          downsampling  feature_dim  contiguous img/s   channels_last img/s
    r18 w0.25 small    1             128           515 / 449          656 / 581
    r18 w0.5  small    1             256           144 / 128           71 / 144
    r18 w1.0  small    1             512             -                 24
    r18 w0.25 s2       2             128          1672 / 1557        2006 / 1349   <- resnet18-tiny
    r18 w0.5  s2       2             256           537 / 378          662 / 459
    r18 w0.5  imagenet 4             256          1214               1689
    r18 w1.0  imagenet 4             512           251                343

SimCLR sees 2 × 60,000 views per Fashion-MNIST epoch: ~60-90 s of backbone work with
resnet18-tiny, ~3.5 min with the stride-1 small stem at width 0.25.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Dict, List

import torch

from selfsup.backbones import build_backbone

# (label, registered backbone, kwargs)
CANDIDATES = [
    ("r18 w0.25 small", "resnet18", {"small_stem": True, "width": 0.25}),
    ("r18 w0.5 small", "resnet18", {"small_stem": True, "width": 0.5}),
    ("r18 w1.0 small", "resnet18", {"small_stem": True, "width": 1.0}),
    ("r18 w0.25 s2", "resnet18", {"small_stem": True, "stem_stride": 2, "width": 0.25}),
    ("r18 w0.5 s2", "resnet18", {"small_stem": True, "stem_stride": 2, "width": 0.5}),
    ("r18 w0.5 imagenet", "resnet18", {"small_stem": False, "width": 0.5}),
    ("r18 w1.0 imagenet", "resnet18", {"small_stem": False, "width": 1.0}),
]


def measure(label: str, name: str, kwargs: Dict[str, Any], channels_last: bool,
            args: argparse.Namespace) -> Dict[str, Any]:
    torch.manual_seed(0)
    model = build_backbone(name, in_channels=args.channels, **kwargs).train()
    x = torch.randn(args.batch_size, args.channels, args.size, args.size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    times: List[float] = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        model(x).square().mean().backward()
        elapsed = time.perf_counter() - start
        model.zero_grad(set_to_none=True)
        if step >= args.warmup:
            times.append(elapsed)
    median = statistics.median(times)
    return {
        "candidate": label,
        "backbone": name,
        "kwargs": kwargs,
        "input_downsampling": (kwargs.get("stem_stride", 1) if kwargs.get("small_stem") else 4),
        "channels_last": channels_last,
        "feature_dim": model.feature_dim,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "ms_per_step": round(1000 * median, 1),
        "images_per_s": round(args.batch_size / median, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the demo machine has 2)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--size", type=int, default=28, help="image side (28 for Fashion-MNIST)")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed steps; the median is reported")
    parser.add_argument("--only", nargs="*", default=None, help="candidate labels to run (default: all)")
    parser.add_argument("--formats", nargs="+", default=["contiguous", "channels_last"],
                        choices=["contiguous", "channels_last"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for label, name, kwargs in CANDIDATES:
        if args.only and label not in args.only:
            continue
        for fmt in args.formats:
            print(json.dumps(measure(label, name, kwargs, fmt == "channels_last", args)), flush=True)


if __name__ == "__main__":
    main()
