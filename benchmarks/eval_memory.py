"""Evaluation in bounded memory, measured: kNN + linear probe on features held in RAM (the path of
small datasets) and on the same features left in a file and read in chunks under a memory budget
(:mod:`selfsup.evaluation.storage`), each in a fresh process; and the throughput of the raw-pixel
floor's random projection.

    python benchmarks/eval_memory.py                               # 100k x 1024 features, 4 GB budget
    python benchmarks/eval_memory.py --train 300000 --budget-gb 0.25 --device cuda
    python benchmarks/eval_memory.py --projection-only --device cuda

Features are Gaussian clusters written to a file in ``--dir`` first. The RAM run copies them into
anonymous memory (as extraction did before the budget); the disk run passes the mapped file on.
For each: wall time, peak anonymous memory (``RssAnon`` sampled every 5 ms: the page cache that
backs a mapped file is the kernel's to reclaim and is not counted) and the accuracies, which must
agree. The projection row times ``SparseRandomProjection(3·224·224 → 4096)`` on batches of 256
images. One JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from selfsup.evaluation.pixels import PIXEL_DIMS, SparseRandomProjection
from selfsup.evaluation.suite import EvalSettings, evaluate_features


def rss_anon() -> int:
    """Anonymous resident memory of this process in bytes (Linux)."""
    return int(re.search(r"RssAnon:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


class PeakAnon:
    """Samples :func:`rss_anon` in a thread; ``peak`` is the largest value seen."""

    def __init__(self, interval: float = 0.005) -> None:
        self.peak, self.interval, self._stop = rss_anon(), interval, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_anon())

    def __enter__(self) -> "PeakAnon":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_anon())


def write_features(folder: Path, num_train: int, num_test: int, dim: int, num_classes: int, seed: int) -> None:
    """``train.f32`` (N, D), ``test.f32`` (M, D) and their labels: Gaussian clusters, written in chunks."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=g) * 0.1  # overlapping clusters: accuracies below 100 %
    for split, n in (("train", num_train), ("test", num_test)):
        labels = torch.randint(num_classes, (n,), generator=g)
        with open(folder / f"{split}.f32", "wb") as f:
            for start in range(0, n, 16384):
                part = labels[start:start + 16384]
                f.write((centres[part] + torch.randn(len(part), dim, generator=g)).numpy().tobytes())
        torch.save(labels, folder / f"{split}.labels.pt")


def child(args: argparse.Namespace) -> Dict[str, Any]:
    """One measured run (``--child ram|disk``) in this process."""
    folder = Path(args.dir)
    mapped = {split: torch.from_file(str(folder / f"{split}.f32"), shared=True, size=n * args.dim).view(n, args.dim)
              for split, n in (("train", args.train), ("test", args.test))}
    labels = {split: torch.load(folder / f"{split}.labels.pt") for split in mapped}
    settings = EvalSettings(knn_k=args.k, linear_epochs=args.linear_epochs, device=args.device,
                            memory_budget_gb=args.budget_gb if args.child == "disk" else 1e6)
    before = rss_anon()
    start = time.perf_counter()
    with PeakAnon() as peak:
        features = {split: x.clone() if args.child == "ram" else x for split, x in mapped.items()}
        result = evaluate_features(features["train"], labels["train"], features["test"], labels["test"],
                                   args.classes, ["knn", "linear"], settings, settings.memory(folder))
    return {"path": args.child, "seconds": time.perf_counter() - start, "anon_before_mb": before / 2**20,
            "anon_peak_mb": peak.peak / 2**20, "result": result}


def projection_throughput(device: str, batch: int = 256, repeats: int = 5) -> Dict[str, Any]:
    projection = SparseRandomProjection(3 * 224 * 224, PIXEL_DIMS).to(device)
    images = torch.randn(batch, 3, 224, 224, device=device)
    projection(images)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        projection(images)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return {"device": device, "batch": batch, "images_per_second": batch / best,
            "threads": torch.get_num_threads()}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=100_000)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--linear-epochs", type=int, default=2)
    parser.add_argument("--budget-gb", type=float, default=4.0, help="the disk run's budget")
    parser.add_argument("--device", default="cpu", help="where the linear probe trains")
    parser.add_argument("--dir", help="folder for the feature files (default: a temporary one)")
    parser.add_argument("--projection-only", action="store_true")
    parser.add_argument("--child", choices=("ram", "disk"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    report: Dict[str, Any] = {"command": "python benchmarks/eval_memory.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    report["projection"] = projection_throughput(args.device)
    if not args.projection_only:
        with tempfile.TemporaryDirectory(dir=args.dir) as folder:
            write_features(Path(folder), args.train, args.test, args.dim, args.classes, seed=0)
            runs = []
            for path in ("ram", "disk"):
                command = [sys.executable, __file__, *(sys.argv[1:] if argv is None else argv), "--dir", folder,
                           "--child", path]
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            report["features_mb"] = args.train * args.dim * 4 / 2**20
            report["runs"] = runs
            report["same_results"] = runs[0]["result"] == runs[1]["result"]
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
