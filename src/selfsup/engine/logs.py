"""The run's loggers (``trainer.logger``): Lightning's own, writing under ``<output_dir>/logs``,
append-only across ``--resume``.

* ``csv``: ``logs/metrics.csv``. Lightning's CSVLogger deletes the file when it starts in a
  non-empty folder; :class:`AppendingCSVLogger` keeps it and appends. A resumed run restarts at
  its checkpoint's step ``S``: rows of the earlier attempt at steps ``>= S`` (logged after its last
  checkpoint, before it stopped) are dropped once, so that the file stays one history in which
  each step appears once — the rows of the steps that were trained again.
* ``tensorboard``: a new event file in ``logs/`` per start; a resumed run passes ``purge_step=S``
  to the SummaryWriter, so TensorBoard hides the earlier attempt's events at steps ``>= S`` the
  same way (its documented crash-restart behaviour).
* ``wandb``: offline (files in ``<output_dir>/wandb``; ``wandb sync`` uploads them) unless
  ``WANDB_MODE`` is set; project ``$WANDB_PROJECT`` or "selfsup"; one wandb run id per run folder,
  kept in ``logs/wandb_run_id`` so that a resumed run continues the same wandb run.
* ``mlflow``: ``$MLFLOW_TRACKING_URI`` if set, else a file store in ``<output_dir>/mlruns``
  (offline); one MLflow run id per run folder, kept in ``logs/mlflow_run_id``.
"""

from __future__ import annotations

import csv
import io
import importlib.util
import os
import secrets
from pathlib import Path
from typing import Any, Dict, List, Optional

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from selfsup.errors import ConfigError
from selfsup.io import atomic_write_text

LOGS = "logs"

#: trainer.logger choices -> (the package they need, the pip extra that installs it)
LOGGERS: Dict[str, Optional[tuple]] = {
    "csv": None,
    "tensorboard": ("tensorboard", None),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow"),
}


def package_installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def check_loggers(names: List[str]) -> None:
    """One line naming the pip extra for a logger whose package is not installed."""
    for name in names:
        need = LOGGERS[name]
        if need is None:
            continue
        package, extra = need
        if not package_installed(package):
            install = f"pip install 'selfsup[{extra}]'" if extra else f"pip install {package}"
            raise ConfigError(f"trainer.logger '{name}' needs the {package} package: {install}")


class AppendingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, keeping ``metrics.csv`` (rows at steps ``< start_step``)."""

    def __init__(self, log_dir: str, start_step: int) -> None:
        self.start_step = start_step
        super().__init__(log_dir)
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            rows = list(reader)
        kept = [row for row in rows if _step(row) is not None and _step(row) < start_step]
        if not header or not kept:
            path.unlink()
            return
        self.metrics_keys = sorted(header)
        if len(kept) != len(rows):
            text = io.StringIO(newline="")
            writer = csv.DictWriter(text, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(kept)
            atomic_write_text(path, text.getvalue())

    def _check_log_dir_exists(self) -> None:
        pass  # Lightning deletes metrics.csv here; this writer keeps the history (see __init__)


def _step(row: Dict[str, Any]) -> Optional[int]:
    try:
        return int(float(row.get("step") or ""))
    except ValueError:  # a row cut short by a kill
        return None


class AppendingCSVLogger(CSVLogger):
    """:class:`~lightning.pytorch.loggers.CSVLogger` that appends to the run's ``metrics.csv``."""

    def __init__(self, save_dir: str | os.PathLike, start_step: int = 0, **kwargs: Any) -> None:
        super().__init__(save_dir, **kwargs)
        self.start_step = start_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(self.log_dir, self.start_step)
        return self._experiment


def _run_id(output_dir: Path, name: str, make: Any, write: bool) -> str:
    """A logger's run id for this run folder: read back on resume, created once otherwise
    (written by rank 0 only; the other ranks' loggers log nothing)."""
    path = output_dir / LOGS / f"{name}_run_id"
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    run_id = make()
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(run_id + "\n")
    return run_id


class _RememberMlflowRun(Callback):
    """Writes the MLflow run id once MLflow created the run (it picks the id itself)."""

    def __init__(self, logger: Logger, path: Path) -> None:
        self.logger, self.path = logger, path

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.is_global_zero and not self.path.is_file():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(f"{self.logger.run_id}\n")


def build_loggers(names: List[str], output_dir: Path, start_step: int, resumed: bool, rank_zero: bool = True) -> tuple:
    """``(loggers, callbacks)`` for ``trainer.logger``; ``start_step`` is the step the run starts at."""
    check_loggers(names)
    loggers: List[Logger] = []
    callbacks: List[Callback] = []
    earlier_events = (output_dir / LOGS).is_dir() and any((output_dir / LOGS).glob("events.out.tfevents*"))
    for name in names:
        if name == "csv":
            loggers.append(AppendingCSVLogger(output_dir, start_step=start_step, name=LOGS, version=""))
        elif name == "tensorboard":
            extra = {"purge_step": start_step} if earlier_events else {}
            loggers.append(TensorBoardLogger(output_dir, name=LOGS, version="", default_hp_metric=False, **extra))
        elif name == "wandb":
            from lightning.pytorch.loggers import WandbLogger

            run_id = _run_id(output_dir, "wandb", lambda: secrets.token_hex(4), write=rank_zero)
            loggers.append(WandbLogger(save_dir=str(output_dir), name=output_dir.name, id=run_id, resume="allow",
                                       project=os.environ.get("WANDB_PROJECT", "selfsup"),
                                       offline="WANDB_MODE" not in os.environ))
        elif name == "mlflow":
            from lightning.pytorch.loggers import MLFlowLogger

            id_file = output_dir / LOGS / "mlflow_run_id"
            run_id = id_file.read_text().strip() if resumed and id_file.is_file() else None
            uri = os.environ.get("MLFLOW_TRACKING_URI") or (output_dir / "mlruns").resolve().as_uri()
            logger = MLFlowLogger(experiment_name=os.environ.get("MLFLOW_EXPERIMENT_NAME", "selfsup"),
                                  run_name=output_dir.name, tracking_uri=uri, run_id=run_id or None)
            loggers.append(logger)
            callbacks.append(_RememberMlflowRun(logger, id_file))
    return loggers, callbacks


__all__ = ["AppendingCSVLogger", "LOGGERS", "build_loggers", "check_loggers"]
