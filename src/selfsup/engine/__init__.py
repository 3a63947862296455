"""The training engine: Lightning outside, plain PyTorch methods inside."""

from selfsup.engine.checkpoint import AtomicCheckpointIO, atomic_torch_save
from selfsup.engine.module import SelfSupervisedModule
from selfsup.engine.trainer import LAST_CHECKPOINT, TrainResult, read_checkpoint_config, resolve_views, train

__all__ = [
    "AtomicCheckpointIO",
    "LAST_CHECKPOINT",
    "SelfSupervisedModule",
    "TrainResult",
    "atomic_torch_save",
    "read_checkpoint_config",
    "resolve_views",
    "train",
]
