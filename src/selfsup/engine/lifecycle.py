"""What a run folder may hold between runs: which config changes a ``--resume`` accepts, which
leftovers of a killed run are removed, and how ``config.yaml`` is written."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple

from selfsup.config import TrainConfig, _build
from selfsup.errors import ConfigError

log = logging.getLogger(__name__)

#: Config keys a ``--resume`` may change: how long the run goes (``epochs``, extending it), where
#: and how fast it runs, what it reports and monitors — none changes what a training step computes
#: from the checkpointed state. A key ending in "." covers its whole group. ``trainer.devices`` and
#: ``trainer.num_nodes`` change the global batch (and with it the scaled learning rate): resuming
#: on another number of GPUs is allowed on purpose. Every other key (method, method_args,
#: backbone, optim.*, views, batch_size, data, seed, precision, limit_train_batches, …) is refused.
RESUMABLE_KEYS: Tuple[str, ...] = (
    "epochs", "num_workers", "output_dir", "data_dir", "download", "eval_data",
    "trainer.accelerator", "trainer.devices", "trainer.num_nodes", "trainer.strategy", "trainer.progress_bar",
    "trainer.log_every_n_steps", "trainer.logger", "trainer.keep_checkpoints", "trainer.channels_last",
    "cpu.", "trainer.deterministic", "trainer.compile",
    "monitor.knn_every", "monitor.knn_k", "monitor.knn_temperature", "monitor.knn_train_samples",
    "monitor.knn_test_samples", "monitor.health_samples",
    "eval.",
)


class _Absent:
    """A key one of the two configs does not have."""

    def __repr__(self) -> str:
        return "(absent)"


ABSENT = _Absent()


def flatten(values: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``, down into method_args, views, … too;
    tuples become lists (YAML and checkpoints do not keep the difference)."""
    flat: Dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def is_resumable(key: str) -> bool:
    return any(key == allowed or (allowed.endswith(".") and key.startswith(allowed)) for allowed in RESUMABLE_KEYS)


def config_changes(stored: Mapping[str, Any], requested: TrainConfig) -> List[Tuple[str, Any, Any]]:
    """``(key, checkpoint value, requested value)`` for every key that differs. The stored config
    is completed with today's defaults first, so keys added since it was written are no change."""
    try:
        old = flatten(_build(TrainConfig, stored).to_dict())
    except ConfigError:  # written by a version with other keys: compare what is there
        old = flatten(stored)
    new = flatten(requested.to_dict())
    return [(k, old.get(k, ABSENT), new.get(k, ABSENT)) for k in sorted(set(old) | set(new))
            if old.get(k, ABSENT) != new.get(k, ABSENT)]


def check_resume_config(stored: Mapping[str, Any], requested: TrainConfig, checkpoint: Path) -> None:
    """Refuse, in one line listing them, changes that a resumed run cannot take (see
    :data:`RESUMABLE_KEYS`); log the accepted ones."""
    changes = config_changes(stored, requested)
    refused = [(k, a, b) for k, a, b in changes if not is_resumable(k)]
    if refused:
        listed = ", ".join(f"{k} {a!r} → {b!r}" for k, a, b in refused)
        raise ConfigError(
            f"--resume: the requested config differs from the one of '{checkpoint}' in keys a resumed run cannot "
            f"change: {listed}; drop those settings, or start a new run in another --output-dir "
            f"(keys that may change on resume: {', '.join(k + '*' if k.endswith('.') else k for k in RESUMABLE_KEYS)})"
        )
    accepted = [(k, a, b) for k, a, b in changes if k != "output_dir"]
    if accepted:
        log.info("resuming with %s", ", ".join(f"{k} {a!r} → {b!r}" for k, a, b in accepted))


def remove_stale_temporaries(output_dir: Path) -> List[str]:
    """Delete the temporary files that atomic writes leave when the process is killed mid-write
    (``.last.ckpt.<random>.tmp``, ``.epoch=003.ckpt.<random>.tmp``, ``.config.yaml.<random>.tmp``,
    ``eval.json.tmp``). Call only while holding the folder's :class:`RunLock`: a live run's own
    temporaries look the same."""
    removed = []
    for path in [*output_dir.glob(".*.tmp"), *output_dir.glob("*.json.tmp")]:
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path.name)
    if removed:
        log.info("removed %d temporary file(s) of an interrupted run in %s: %s", len(removed), output_dir,
                 ", ".join(sorted(removed)))
    return sorted(removed)


__all__ = ["RESUMABLE_KEYS", "check_resume_config", "config_changes", "flatten", "is_resumable",
           "remove_stale_temporaries"]
