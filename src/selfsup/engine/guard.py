"""Stop a diverging run before it writes a checkpoint that holds NaN or inf.

Two checks, both without a device-to-host copy on every step (on a GPU each copy waits for the
whole queue of kernels):

* the loss: each step folds ``~isfinite(loss)`` into a flag that stays on the training device;
  the flag is read every ``trainer.log_every_n_steps`` steps and before each checkpoint;
* the state about to be written: parameters, buffers (BatchNorm running statistics, momentum
  encoders, queues, memory banks) and optimizer state are scanned just before each checkpoint is
  written. A run can keep a finite loss while its BatchNorm running variances overflow (they only
  matter in eval mode), so the loss alone is not enough.

Either way the run stops with :class:`~selfsup.errors.TrainingDiverged`, one line naming the last
checkpoint that was written with finite values, or saying that there is none. Under DDP every
process takes the same decision (any process diverging stops all of them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from selfsup.errors import TrainingDiverged

HINT = "try a lower optim.lr (or optim.gradient_clip)"


def floating_tensors(value: Any, prefix: str) -> Iterator[Tuple[str, torch.Tensor]]:
    """Every floating-point tensor in nested dicts/lists, with a dotted name."""
    if torch.is_tensor(value):
        if value.is_floating_point() or value.is_complex():
            yield prefix, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from floating_tensors(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from floating_tensors(item, f"{prefix}.{index}")


def non_finite_counts(named: List[Tuple[str, torch.Tensor]]) -> List[Tuple[str, int]]:
    """``(name, number of NaN/inf entries)`` of the tensors that have any; one host sync."""
    if not named:
        return []
    by_device: Dict[torch.device, List[int]] = {}
    for index, (_, tensor) in enumerate(named):
        by_device.setdefault(tensor.device, []).append(index)
    counts = [0] * len(named)
    for device, indices in by_device.items():
        per_tensor = torch.stack([(~torch.isfinite(named[i][1])).sum() for i in indices]).tolist()
        for i, count in zip(indices, per_tensor):
            counts[i] = int(count)
    return [(name, count) for (name, _), count in zip(named, counts) if count]


class DivergenceGuard(Callback):
    """See the module docstring.

    Args:
        checkpoint_io: the plugin that writes checkpoints; its ``last_written`` is the last
            complete checkpoint of this process.
        resumed_from: the checkpoint this run continues from, if any (the last finite one until
            this run writes another, once its state is found finite at the start).
        sentinel_keys: state-dict keys allowed to hold NaN/inf (a method's "not computed yet"
            markers, :attr:`~selfsup.methods.Method.sentinel_buffers`).
    """

    def __init__(self, checkpoint_io: Any, resumed_from: Optional[Path] = None, sentinel_keys: Tuple[str, ...] = ()) -> None:
        self.checkpoint_io = checkpoint_io
        self.resumed_from = resumed_from
        self.sentinel_keys = set(sentinel_keys)
        self._step = 0
        self._first_bad_step: Optional[torch.Tensor] = None
        self._first_bad_loss: Optional[torch.Tensor] = None
        self._state_checked_at: Optional[int] = None

    # ------------------------------------------------------------------ the device-side flag
    def on_train_start(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        if self.resumed_from is not None:
            named = [(k, v) for k, v in floating_tensors(pl_module.state_dict(), "") if k not in self.sentinel_keys]
            if non_finite_counts(named):  # written before this guard existed
                self.resumed_from = None

    def on_train_batch_start(self, trainer: "L.Trainer", pl_module: "L.LightningModule", batch: Any, batch_idx: int) -> None:
        self._step = trainer.global_step

    def on_train_batch_end(self, trainer: "L.Trainer", pl_module: "L.LightningModule", outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if torch.is_tensor(loss):
            loss = loss.detach().float()
            if self._first_bad_step is None:
                self._first_bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
                self._first_bad_loss = torch.zeros((), device=loss.device)
            first = ~torch.isfinite(loss) & (self._first_bad_step < 0)
            self._first_bad_step = torch.where(first, self._step, self._first_bad_step)
            self._first_bad_loss = torch.where(first, loss, self._first_bad_loss)
        every = max(1, trainer.log_every_n_steps)
        if trainer.global_step % every == 0:
            self.check_loss(trainer)

    def on_train_epoch_end(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        # Before the module's epoch-end monitors (kNN, health) compute on a diverged model.
        self.check_loss(trainer)

    def check_loss(self, trainer: "L.Trainer") -> None:
        """Read the flag (one small device-to-host copy) and stop if a loss was not finite."""
        step = int(self._first_bad_step) if self._first_bad_step is not None else -1
        if trainer.strategy.reduce_boolean_decision(step >= 0, all=False):
            if step >= 0:
                what = f"the loss became {float(self._first_bad_loss)} at step {step}"
            else:
                what = "the loss became non-finite on another process"
            self._stop(trainer, what)

    # ------------------------------------------------------------------ before each checkpoint
    def on_save_checkpoint(self, trainer: "L.Trainer", pl_module: "L.LightningModule", checkpoint: Dict[str, Any]) -> None:
        self.check_loss(trainer)
        if self._state_checked_at == trainer.global_step:  # last.ckpt right after epoch=N.ckpt: same state
            return
        named = [(k, v) for k, v in floating_tensors(checkpoint.get("state_dict", {}), "")
                 if k not in self.sentinel_keys]
        named += list(floating_tensors(checkpoint.get("optimizer_states", []), "optimizer"))
        bad = non_finite_counts(named)
        if trainer.strategy.reduce_boolean_decision(bool(bad), all=False):
            if bad:
                listed = ", ".join(f"{name} ({count} non-finite)" for name, count in bad[:3])
                more = f" and {len(bad) - 3} more tensors" if len(bad) > 3 else ""
                what = f"the model state holds NaN/inf at step {trainer.global_step}: {listed}{more}"
            else:
                what = f"the model state of another process holds NaN/inf at step {trainer.global_step}"
            self._stop(trainer, what)
        self._state_checked_at = trainer.global_step

    def last_finite_checkpoint(self) -> Optional[Path]:
        written = getattr(self.checkpoint_io, "last_written", None)
        return Path(written) if written is not None else self.resumed_from

    def _stop(self, trainer: "L.Trainer", what: str) -> None:
        last = self.last_finite_checkpoint()
        if last is not None:
            kept = f"the last checkpoint with finite values is '{last}'"
        else:
            kept = "no checkpoint with finite values was written"
        raise TrainingDiverged(f"training diverged: {what} (epoch {trainer.current_epoch}); stopped before writing "
                               f"it to a checkpoint; {kept} — {HINT}")


__all__ = ["DivergenceGuard", "floating_tensors", "non_finite_counts"]
