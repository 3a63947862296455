"""Accuracy per CPU-minute: which recipe gives the best frozen features for a few minutes of CPU?

    python benchmarks/accuracy_per_minute.py                          # every candidate (~1 h on 2 cores)
    python benchmarks/accuracy_per_minute.py --only "simclr τ=0.1"    # some of them
    python benchmarks/accuracy_per_minute.py --second-seed "simclr τ=0.1"   # + seed 1 of the winners
    python benchmarks/accuracy_per_minute.py --write BENCHMARKS.md    # the table between <!-- STUDY --> marks

Each candidate is a packaged recipe with a few overrides (``--set`` syntax) and its own number of
epochs, sized so its training fits in about ten minutes on 2 cores. It is trained by ``selfsup
bench``'s runner (same engine as ``selfsup train``; runs resume and finished ones are reused from
``--root``) and evaluated by the same frozen-feature protocols: kNN (k=200), a linear probe, the
10 %-label probe, with the random-init floor of its own backbone beside it and the raw pixels
below. The table is sorted by training minutes, so it reads as accuracy against CPU time.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import List, Sequence

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _markdown import replace_block  # noqa: E402

from selfsup.bench import (BenchEntry, BenchSettings, baselines, machine_description, markdown_table,  # noqa: E402
                           plot_curves, run_entry)

SIMCLR_01 = ("method_args.temperature=0.1",)
# (label, method, overrides): recipes, backbones and methods that could beat the raw pixels.
CANDIDATES: List[BenchEntry] = [
    BenchEntry("simclr τ=0.2 (default until now)", "simclr", ("epochs=6",)),
    BenchEntry("simclr τ=0.1", "simclr", ("epochs=6", *SIMCLR_01)),
    BenchEntry("simclr τ=0.1, crops 0.4-1", "simclr", ("epochs=6", *SIMCLR_01, "views.crop_scale=[0.4, 1.0]")),
    BenchEntry("simclr τ=0.1, batch 128", "simclr", ("epochs=6", *SIMCLR_01, "batch_size=128")),
    BenchEntry("simclr τ=0.1, 12 epochs", "simclr", ("epochs=12", *SIMCLR_01)),
    BenchEntry("simclr τ=0.1, resnet18 width 0.5", "simclr",
               ("epochs=3", *SIMCLR_01, "backbone=resnet18", "backbone_args={small_stem: true, stem_stride: 2, width: 0.5}")),
    BenchEntry("vicreg", "vicreg", ("epochs=6",)),
    BenchEntry("rotation", "rotation", ("epochs=4",)),
    BenchEntry("rotation, 8 epochs", "rotation", ("epochs=8",)),
    BenchEntry("essl (simclr τ=0.1 + rotation of a 14-px crop)", "essl", ("epochs=6",)),
]


def with_seed(entry: BenchEntry, seed: int) -> BenchEntry:
    return BenchEntry(f"{entry.label}, seed {seed}", entry.method, (*entry.overrides, f"seed={seed}"))


def command(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(p) for p in ["python", "benchmarks/accuracy_per_minute.py", *argv])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", metavar="LABEL", help="run only these candidates (labels as in the table)")
    p.add_argument("--second-seed", nargs="+", default=[], metavar="LABEL",
                   help="also train these candidates with seed 1 (does the ranking survive the noise?)")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--root", default="runs/study", help="runs, features and the table are kept here")
    p.add_argument("--linear-epochs", type=int, default=100)
    p.add_argument("--write", metavar="MARKDOWN", help="put the table between <!-- STUDY --> marks in this file")
    args = p.parse_args(argv)
    labels = [c.label for c in CANDIDATES]
    for label in (*(args.only or []), *args.second_seed):
        if label not in labels:
            p.error(f"unknown candidate {label!r}; valid: " + "; ".join(labels))
    chosen = [c for c in CANDIDATES if not args.only or c.label in args.only]
    chosen += [with_seed(c, 1) for c in CANDIDATES if c.label in args.second_seed]
    root = Path(args.root) / args.data.replace(":", "_").replace("/", "_")
    settings = BenchSettings(data=args.data, epochs=None, root=str(root), supervised=False,
                             linear_epochs=args.linear_epochs)
    results = [run_entry(entry, settings) for entry in chosen]
    results.sort(key=lambda r: (r.status != "done", r.minutes))
    base = baselines(settings, "resnet18-tiny", {}, None)  # the raw pixels (no supervised row: budgets differ)
    plot = plot_curves(results, root / "accuracy-per-minute.png")
    section = [f"Data: {args.data}; each candidate trains its own epochs (column *epochs*); machine: "
               f"{machine_description()}.", f"Command: `{command(argv)}`", "",
               markdown_table(results, settings, base), ""]
    if plot is not None:
        section += [f"kNN accuracy (monitor subset) against training minutes: `{plot}`", ""]
    text = "\n".join(section)
    print(text)
    if args.write:
        replace_block(Path(args.write), "STUDY", text)
    return 0


if __name__ == "__main__":
    torch.set_num_threads(min(2, torch.get_num_threads()))  # the study's unit: minutes on 2 cores
    sys.exit(main())
