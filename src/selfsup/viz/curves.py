"""Training curves from a run's CSV log (``<output_dir>/logs/metrics.csv``, Lightning's CSVLogger).

The file has one row per logging event: per-step rows hold ``train/loss_step``, ``train/lr`` and
``train/<method log>_step``; epoch-end rows hold ``train/loss_epoch``, ``knn_top1``,
``train/probe_acc_epoch`` and ``health/*``; every row has ``epoch`` and ``step``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Dict, List, Tuple

from selfsup.errors import DataError

Series = Dict[str, Tuple[List[float], List[float]]]

PANELS = (
    ("loss", ("train/loss_step", "train/loss_epoch"), "log"),
    ("learning rate", ("train/lr",), "linear"),
    ("accuracy", ("knn_top1", "train/probe_acc_epoch", "train/probe_acc_step"), "linear"),
    ("effective rank (RankMe)", ("health/rankme",), "linear"),
)
"""(title, columns, y scale) of each panel; panels whose columns are absent are left out."""


def metrics_csv(run: str | Path) -> Path:
    """The metrics file of a run directory (or the file itself)."""
    path = Path(run)
    if path.is_dir():
        path = path / "logs" / "metrics.csv"
    if not path.is_file():
        raise DataError(f"no training log {path}; give a run's --output-dir or its logs/metrics.csv")
    return path


def read_metrics(path: str | Path) -> Series:
    """``{column: (steps, values)}`` of every numeric column, rows without a value skipped."""
    series: Series = {}
    with open(metrics_csv(path), newline="") as f:
        for row in csv.DictReader(f):
            try:
                step = float(row.get("step") or "nan")
            except ValueError:
                continue
            for column, text in row.items():
                if column in ("step", "epoch") or not text:
                    continue
                try:
                    value = float(text)
                except ValueError:
                    continue
                if math.isfinite(value) and math.isfinite(step):
                    steps, values = series.setdefault(column, ([], []))
                    steps.append(step)
                    values.append(value)
    if not series:
        raise DataError(f"{metrics_csv(path)} holds no metric values yet")
    return series


def save_training_curves(run: str | Path, path: str | Path, title: str = "") -> Path:
    """PNG of the loss, learning rate, kNN / online-probe accuracy (and RankMe, when logged) against the step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = read_metrics(run)
    panels = [(name, [c for c in columns if c in series], scale) for name, columns, scale in PANELS]
    panels = [p for p in panels if p[1]]
    if not panels:
        raise DataError(f"{metrics_csv(run)} has none of the columns plotted: "
                        f"{', '.join(c for _, cols, _ in PANELS for c in cols)}")
    figure = Figure(figsize=(4.2 * len(panels), 3.6), dpi=100)
    FigureCanvasAgg(figure)
    for i, (name, columns, scale) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), i + 1)
        for column in columns:
            steps, values = series[column]
            per_step = column.endswith("_step") or column == "train/lr"
            style = dict(linewidth=0.8, alpha=0.6) if per_step else dict(marker="o", markersize=3, linewidth=1.5)
            axes.plot(steps, values, label=column, **style)
        values = [v for c in columns for v in series[c][1]]
        if scale == "log" and min(values) > 0 and max(values) > 10 * min(values):  # log only when it spans a decade
            axes.set_yscale("log")
        axes.set_title(name)
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
