"""Checkpoints that survive being killed at any moment, and exact-resume RNG state."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from selfsup.io import atomic_torch_save, load_torch_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes every checkpoint atomically and reads it weights-only
    (:mod:`selfsup.io`), so that ``trainer.fit(ckpt_path=...)`` runs no code from the file;
    ``last_written`` is the last checkpoint this process wrote completely (the divergence guard
    names it)."""

    last_written: Optional[Path] = None

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        atomic_torch_save(checkpoint, path)
        self.last_written = Path(path)

    def load_checkpoint(self, path: Any, map_location: Optional[Any] = None,
                        weights_only: Optional[bool] = None) -> Dict[str, Any]:
        # Always weights-only on the CPU, whatever Lightning asks: Lightning moves the optimizer
        # state to the training device after loading it (Strategy.load_optimizer_state_dict).
        return load_torch_file(path, "a selfsup training checkpoint")


def capture_rng_state() -> Dict[str, Any]:
    """Every RNG stream that shapes training (augmentations, shuffling, dropout), as plain
    lists and tensors so checkpoints load weights-only (:func:`selfsup.io.load_torch_file`)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
