"""Does bf16 autocast change what the default job learns? kNN after a fixed budget, float32 vs bf16.

    python benchmarks/precision_accuracy.py                      # 3 seeds × 2 precisions, 5 epochs each
    python benchmarks/precision_accuracy.py --epochs 1 --seeds 0  # a quick look

Runs ``selfsup train`` (the default job: SimCLR, Fashion-MNIST, the CPU default backbone and its
recipe) for ``--epochs`` epochs with ``trainer.precision=32-true`` and with ``bf16-mixed``, for each
seed of ``--seeds``, precisions interleaved (32, bf16, 32, bf16, …), each in its own process, and
prints the final kNN top-1 (the same evaluation code for both: ``eval.knn``, k = 200, all test
images) and the training wall clock of every run, then the mean and the seed-to-seed spread per
precision. ``trainer.precision=auto`` (bf16 where the CPU has it and it measures faster) is safe
as a default when the bf16 mean lies within the float32 runs' seed-to-seed spread. One JSON object.
Only meaningful on a CPU with native bf16 (AVX512_BF16 / AMX / Arm BF16): elsewhere bf16 is
emulated, slow, and ``auto`` never picks it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

PRECISIONS = ("32-true", "bf16-mixed")


def run(precision: str, seed: int, args: argparse.Namespace) -> Dict[str, object]:
    out = Path(args.output_dir) / f"{precision}-seed{seed}"
    cmd = [sys.executable, "-c", "import sys; from selfsup.cli import main; sys.exit(main(sys.argv[1:]))", "train",
           "--epochs", str(args.epochs), "--output-dir", str(out), "--set", f"trainer.precision={precision}",
           "--set", f"seed={seed}", "--set", "eval.linear=false", "--set", "eval.floor=false",
           "--set", "trainer.progress_bar=false", *sum((["--set", s] for s in args.set), [])]
    if (out / "last.ckpt").exists():
        cmd.append("--resume")  # a finished run is evaluated again, not retrained
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    report = json.loads((out / "eval.json").read_text())
    return {"precision": precision, "seed": seed, "knn_top1": report["trained"]["knn_top1"],
            "minutes": round((time.perf_counter() - start) / 60, 2), "output_dir": str(out)}


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=5, help="the fixed budget, in epochs of the default job")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more config overrides")
    p.add_argument("--output-dir", default="runs/precision_accuracy")
    args = p.parse_args(argv)
    from selfsup.ops import machine_line, native_bf16

    runs = [run(precision, seed, args) for seed in args.seeds for precision in PRECISIONS]
    summary = {}
    for precision in PRECISIONS:
        knn = [r["knn_top1"] for r in runs if r["precision"] == precision]
        minutes = [r["minutes"] for r in runs if r["precision"] == precision]
        summary[precision] = {"knn_mean": round(statistics.mean(knn), 4), "knn_min": min(knn), "knn_max": max(knn),
                              "knn_stdev": round(statistics.stdev(knn), 4) if len(knn) > 1 else None,
                              "minutes_median": statistics.median(minutes)}
    base, mixed = summary["32-true"], summary["bf16-mixed"]
    within = base["knn_min"] <= mixed["knn_mean"] <= base["knn_max"] if len(args.seeds) > 1 else None
    result = {"command": "python benchmarks/precision_accuracy.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": machine_line(), "native_bf16": native_bf16(), "epochs": args.epochs, "runs": runs,
              "summary": summary, "bf16_mean_within_float32_seed_range": within}
    print(json.dumps(result, indent=2))
    for precision in PRECISIONS:
        s = summary[precision]
        print(f"{precision}: kNN top-1 {100 * s['knn_mean']:.2f} (seeds {100 * s['knn_min']:.2f}–{100 * s['knn_max']:.2f}),"
              f" {s['minutes_median']:.1f} min per run", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
