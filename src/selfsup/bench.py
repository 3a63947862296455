"""The benchmark table: every method (or an ablation's variants) under one budget, one evaluation.

Each entry is pre-trained with its packaged recipe for the dataset, overridden to the common
budget (``epochs``; same backbone where the method allows), then evaluated with the same frozen-
feature protocols: kNN, linear probe and the 10 %-label probe. Beside them stand the floors: a
randomly initialised encoder of each architecture, the raw pixels, and a supervised baseline —
the same backbone trained from scratch on all labels for the same number of epochs.

Everything a run produces lives in ``root/<entry>/``; an entry whose ``result.json`` exists is
not run again, and one interrupted mid-training resumes from its ``last.ckpt``, so re-running
the same command continues where it stopped.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from lightning.pytorch.callbacks import Callback

from selfsup.errors import ConfigError, SelfSupError
from selfsup.io import atomic_write_text, atomic_writer

RESULT = "result.json"
CURVE = "curve.json"


@dataclass(frozen=True)
class BenchEntry:
    """One row: a method with config overrides (``--set`` syntax) on top of its recipe."""

    label: str
    method: str
    overrides: tuple[str, ...] = ()


def method_entries(names: Optional[Sequence[str]] = None) -> List[BenchEntry]:
    """One entry per registered method (or per name in ``names``), each with its own recipe."""
    from selfsup.methods import METHODS

    chosen = list(names) if names else METHODS.names()
    for name in chosen:
        METHODS.get(name)  # one-line error listing the valid names
    return [BenchEntry(name, name) for name in chosen]


# The papers' ablations at small scale (issue: MoCo's momentum, SimCLR's temperature and batch).
PRESETS: Dict[str, Callable[[], List[BenchEntry]]] = {
    "methods": method_entries,
    # MoCo, He et al. 2019, Table 1 (ImageNet, K=4096): m=0 fails to train, 0.9 gives 55.2 %,
    # 0.99 57.8 %, 0.999 59.0 %, 0.9999 58.6 %.
    "moco-momentum": lambda: [BenchEntry(f"moco m={m}", "moco", (f"method_args.momentum={m}",))
                              for m in (0.0, 0.9, 0.99, 0.999)],
    # SimCLR, Chen et al. 2020, Table 5 and Fig. 9: τ=0.1–0.5 best with normalised embeddings;
    # larger batches help most when training is short.
    "simclr-temperature": lambda: [BenchEntry(f"simclr τ={t}", "simclr", (f"method_args.temperature={t}",))
                                   for t in (0.05, 0.1, 0.2, 0.5, 1.0)],
    "simclr-batch": lambda: [BenchEntry(f"simclr batch={b}", "simclr", (f"batch_size={b}",))
                             for b in (64, 128, 256, 512)],
}


@dataclass
class BenchSettings:
    data: str = "fashion-mnist"
    data_dir: Optional[str] = None
    epochs: Optional[int] = 2
    """The common budget: every entry trains this many epochs (its wall time is reported);
    None trains each entry for its recipe's own epochs (the recipes are sized for the CPU)."""
    root: str = "runs/bench"
    knn_k: int = 200
    linear_epochs: int = 100
    fewshot_fraction: float = 0.1
    supervised: bool = True
    """Also train the supervised baseline (same backbone, same epochs, all labels)."""
    extra_overrides: tuple[str, ...] = ()
    """Applied to every entry, e.g. ('trainer.limit_train_batches=20',) for a quick look."""


@dataclass
class EntryResult:
    label: str
    method: str
    status: str
    """'done', or why the entry could not run (e.g. a colour-only method on grayscale data)."""
    backbone: str = ""
    backbone_args: Dict[str, Any] = field(default_factory=dict)
    image_size: Optional[int] = None
    minutes: float = 0.0
    metrics: Dict[str, float] = field(default_factory=dict)
    floor: Dict[str, float] = field(default_factory=dict)
    curve: List[Dict[str, float]] = field(default_factory=list)


class WallClockCurve(Callback):
    """Appends ``{minutes, epoch, knn_top1}`` to ``curve.json`` at each epoch end; minutes keep
    counting across resumed sessions, so the curve is training time, not session time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.points: List[Dict[str, float]] = json.loads(path.read_text()) if path.is_file() else []
        self.offset = self.points[-1]["minutes"] if self.points else 0.0
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
        knn = trainer.callback_metrics.get("knn_top1")
        point = {"minutes": self.offset + (time.perf_counter() - self.start) / 60, "epoch": trainer.current_epoch + 1}
        if knn is not None:
            point["knn_top1"] = float(knn)
        self.points.append(point)
        atomic_write_text(self.path, json.dumps(self.points, indent=1))


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def entry_config(entry: BenchEntry, settings: BenchSettings, output_dir: Path):
    """The entry's recipe for the dataset, at the common budget, writing into ``output_dir``."""
    from selfsup.config import make_config, parse_override, recipe_path

    recipe = recipe_path(settings.data, entry.method)
    flags: Dict[str, Any] = {"method": entry.method, "data": settings.data, "output_dir": str(output_dir)}
    if settings.epochs is not None:
        flags["epochs"] = settings.epochs
    if settings.data_dir:
        flags["data_dir"] = settings.data_dir
    overrides = [flags, {"trainer": {"progress_bar": False}}]
    overrides += [parse_override(s) for s in (*entry.overrides, *settings.extra_overrides)]
    return make_config(files=[recipe] if recipe else [], overrides=overrides)


def run_entry(entry: BenchEntry, settings: BenchSettings, log: Callable[[str], None] = print) -> EntryResult:
    """Train (or resume) and evaluate one entry; reuse its ``result.json`` when present."""
    from selfsup.engine import LAST_CHECKPOINT, train

    folder = Path(settings.root) / _slug(entry.label)
    result_file = folder / RESULT
    if result_file.is_file():
        stored = json.loads(result_file.read_text())
        return EntryResult(**stored)
    try:
        config = entry_config(entry, settings, folder)
        folder.mkdir(parents=True, exist_ok=True)
        curve = WallClockCurve(folder / CURVE)
        resume = (folder / LAST_CHECKPOINT).is_file()
        log(f"[bench] {entry.label}: {'resuming' if resume else 'training'} {config.method} on {config.data}, "
            f"{config.epochs} epochs, backbone {config.backbone}")
        train(config, resume=resume, callbacks=[curve])
    except (ConfigError, SelfSupError) as err:
        # A method that cannot run on this data (colour-only on grayscale…) is a row, not a crash.
        result = EntryResult(entry.label, entry.method, f"not run: {err}")
        log(f"[bench] {entry.label}: {result.status}")
        return result
    metrics, floor = evaluate_checkpoint(folder / LAST_CHECKPOINT, settings)
    result = EntryResult(entry.label, entry.method, "done", config.backbone, dict(config.backbone_args),
                         config.views.get("image_size"), minutes=curve.points[-1]["minutes"] if curve.points else 0.0,
                         metrics=metrics, floor=floor, curve=curve.points)
    atomic_write_text(result_file, json.dumps(asdict(result), indent=1))
    return result


def _eval_settings(settings: BenchSettings):
    from selfsup.evaluation.suite import EvalSettings

    return EvalSettings(knn_k=settings.knn_k, linear_epochs=settings.linear_epochs,
                        fewshot_fractions=[settings.fewshot_fraction])


PROTOCOLS = ("knn", "linear", "fewshot")


def evaluate_checkpoint(checkpoint: Path, settings: BenchSettings) -> tuple[Dict[str, float], Dict[str, float]]:
    """(trained metrics, random-init floor metrics) of a training checkpoint, at the resolution it
    was trained at; features cached under ``root/features`` so the floor of a shared architecture
    is computed once."""
    from selfsup.data import load_dataset
    from selfsup.evaluation import FeatureCache
    from selfsup.evaluation.report import evaluate_with_floors

    train_set = load_dataset(settings.data, "train", settings.data_dir)
    test_set = load_dataset(settings.data, "test", settings.data_dir)
    cache = FeatureCache(Path(settings.root) / "features")
    report = evaluate_with_floors(checkpoint, train_set, test_set, PROTOCOLS, _eval_settings(settings), cache)
    return report["trained"], report["random_init"]


def baselines(settings: BenchSettings, backbone: str = "resnet18-tiny",
              backbone_args: Optional[Dict[str, Any]] = None, image_size: Optional[int] = None) -> Dict[str, Dict[str, float]]:
    """Raw pixels and the supervised baseline (``backbone`` from scratch, all labels, same epochs),
    both at ``image_size`` (the entries' training size; default the dataset's)."""
    from selfsup.data import load_dataset
    from selfsup.evaluation import FeatureCache, load_encoder
    from selfsup.evaluation.finetune import FinetuneSettings, finetune
    from selfsup.evaluation.pixels import evaluate_pixels

    path = Path(settings.root) / "baselines.json"
    stored: Dict[str, Dict[str, float]] = json.loads(path.read_text()) if path.is_file() else {}
    train_set = load_dataset(settings.data, "train", settings.data_dir)
    test_set = load_dataset(settings.data, "test", settings.data_dir)
    if "pixels" not in stored:
        cache = FeatureCache(Path(settings.root) / "features")
        eval_settings = _eval_settings(settings)
        eval_settings.image_size = image_size
        stored["pixels"] = evaluate_pixels(train_set, test_set, PROTOCOLS, eval_settings, cache)
        atomic_write_text(path, json.dumps(stored, indent=1))
    key = f"supervised {backbone} {settings.epochs} epochs"
    if settings.supervised and settings.epochs is not None and key not in stored:
        encoder = load_encoder("random", backbone, backbone_args or {}, train_set.info.num_channels).encoder
        start = time.perf_counter()
        # Same budget as pre-training, one learning rate for the whole network (training from scratch).
        run = finetune(encoder, train_set, test_set, FinetuneSettings(
            epochs=settings.epochs, lr=0.1, backbone_lr_scale=1.0, crop_scale=(0.2, 1.0), image_size=image_size))
        stored[key] = {"top1": run.top1, "top5": run.top5, "minutes": (time.perf_counter() - start) / 60}
        atomic_write_text(path, json.dumps(stored, indent=1))
    return stored


def machine_description() -> str:
    threads = torch.get_num_threads()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()}, {os.cpu_count()} CPUs ({threads} torch threads), {device}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def _pct(metrics: Dict[str, float], key: str) -> str:
    return f"{100 * metrics[key]:.2f}" if key in metrics else "—"


def markdown_table(results: Sequence[EntryResult], settings: BenchSettings,
                   base: Dict[str, Dict[str, float]]) -> str:
    """The table of ``BENCHMARKS.md``: accuracies in %, the floor of each architecture beside."""
    few = f"fewshot{settings.fewshot_fraction:g}_linear_top1"
    lines = [
        f"| method | backbone | epochs | train min | kNN | kNN floor | linear | linear floor | {100 * settings.fewshot_fraction:g} % labels | floor |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.status != "done":
            lines.append(f"| {r.label} | — | — | — | {r.status} | | | | | |")
            continue
        epochs = r.curve[-1]["epoch"] if r.curve else "—"
        lines.append(
            f"| {r.label} | {r.backbone} | {epochs} | {r.minutes:.1f} | {_pct(r.metrics, 'knn_top1')} | {_pct(r.floor, 'knn_top1')} | "
            f"{_pct(r.metrics, 'linear_top1')} | {_pct(r.floor, 'linear_top1')} | {_pct(r.metrics, few)} | {_pct(r.floor, few)} |"
        )
    pixels = base.get("pixels")
    if pixels:
        name = f"raw pixels ({pixels['note']})" if pixels.get("note") else "raw pixels"
        lines.append(f"| {name} | — | — | — | {_pct(pixels, 'knn_top1')} | | {_pct(pixels, 'linear_top1')} | | "
                     f"{_pct(pixels, few)} | |")
    for key, value in base.items():
        if key.startswith("supervised"):
            lines.append(f"| {key} (all labels, end to end) | | | {value['minutes']:.1f} | | | {100 * value['top1']:.2f} "
                         f"(test top-1) | | | |")
    return "\n".join(lines)


def plot_curves(results: Sequence[EntryResult], path: Path) -> Optional[Path]:
    """kNN-monitor accuracy against training minutes, one line per entry (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    drawn = 0
    for r in results:
        points = [p for p in r.curve if "knn_top1" in p]
        if points:
            ax.plot([p["minutes"] for p in points], [100 * p["knn_top1"] for p in points], marker="o", label=r.label)
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("training time (minutes)")
    ax.set_ylabel("kNN top-1 on the monitor subset (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_writer(path) as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)
    return path
