"""SimCLR v2: Big Self-Supervised Models are Strong Semi-Supervised Learners.

Chen, Kornblith, Swersky, Norouzi, Hinton (NeurIPS 2020), https://arxiv.org/abs/2006.10029.
SimCLR (:mod:`selfsup.methods.simclr`) with the pre-training changes of Sec. 2:

* a deeper projection head ``g``: 3 layers instead of 2 (Linear → BN → ReLU twice, then Linear);
* fine-tuning starts from the first layer of that head instead of discarding it: the fine-tuning
  trunk is ``f`` followed by the head's first Linear → BN → ReLU (:meth:`SimCLRv2.finetune_trunk`);
* MoCo's memory (He et al. 2019): the projections of a momentum copy of ``f`` and ``g`` (EMA decay
  0.999) from past batches are buffered and serve as extra negatives of NT-Xent
  (``memory_size``; 0 turns it off, the paper uses 64K on ImageNet and reports a ~1 % gain).

The representation for kNN / linear evaluation stays ``h = f(x)``, before the head. The third
step of the paper, self-distillation of the fine-tuned network into a student on unlabelled
images (Eq. 2), is :mod:`selfsup.apps.distill` and the ``selfsup distill`` command.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.errors import ConfigError
from selfsup.heads.projection import ProjectionHead
from selfsup.losses.ntxent_memory import NTXentMemoryLoss
from selfsup.memory.queue import KeyQueue
from selfsup.methods.base import DataSpec, Method, MethodConfig, MethodOutput, Progress
from selfsup.methods.momentum import ema_update_, frozen_copy
from selfsup.methods.registry import METHODS


@dataclass
class SimCLRv2Config(MethodConfig):
    temperature: float = 0.1
    """τ of NT-Xent (0.1 on ImageNet with batch 4096)."""
    projection_hidden_dim: int = 2048
    """Width of the head's hidden layers (the encoder's output width for ResNet-50)."""
    projection_dim: int = 128
    projection_layers: int = 3
    """3 in SimCLR v2 (Sec. 2, Fig. 4 compares 2–4)."""
    finetune_head_layers: int = 1
    """Head layers kept in the fine-tuning trunk: 1 (the paper's choice for 1 % / 10 % labels),
    0 to fine-tune from the backbone output (the paper's choice with 100 % labels)."""
    memory_size: int = 0
    """Negatives kept from past batches, encoded by the momentum network (0 = no memory; 65536 on ImageNet)."""
    momentum: float = 0.999
    """EMA decay of the momentum network that fills the memory (0.999, as in MoCo)."""
    gather_distributed: bool = True
    """Use the negatives of every process under DDP (the paper's global batch)."""


def _validate(cfg: SimCLRv2Config) -> None:
    if cfg.temperature <= 0:
        raise ConfigError(f"simclr2 temperature={cfg.temperature} must be > 0 (the paper: 0.1)")
    if cfg.projection_layers < 1:
        raise ConfigError(f"simclr2 projection_layers={cfg.projection_layers} must be >= 1 (the paper: 3)")
    if not 0 <= cfg.finetune_head_layers < cfg.projection_layers:
        raise ConfigError(f"simclr2 finetune_head_layers={cfg.finetune_head_layers} must be in "
                          f"[0, {cfg.projection_layers - 1}] (hidden layers of the {cfg.projection_layers}-layer head)")
    if cfg.memory_size < 0:
        raise ConfigError(f"simclr2 memory_size={cfg.memory_size} must be >= 0 (0 = no memory, the paper: 65536)")
    if not 0.0 <= cfg.momentum <= 1.0:
        raise ConfigError(f"simclr2 momentum={cfg.momentum} must be in [0, 1] (the paper: 0.999)")


class FineTuneTrunk(nn.Module):
    """The network SimCLR v2 fine-tunes: the backbone then the first ``k`` hidden layers of the
    projection head (each Linear → BN → ReLU). It shares its modules with the method.

    Shapes:
        ``(B, C, H, W) → (B, feature_dim)``; ``feature_dim`` is the head's hidden width when
        ``k > 0``, else the backbone's.
    """

    def __init__(self, backbone: nn.Module, head_layers: List[nn.Module], feature_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head_layers = nn.Sequential(*head_layers)
        self.feature_dim = feature_dim

    def forward(self, images: Tensor) -> Tensor:
        return self.head_layers(self.backbone(images))


@METHODS.register("simclr2")
class SimCLRv2(Method):
    """SimCLR v2: 3-layer head, fine-tuning from its first layer, optional momentum memory of negatives."""

    Config = SimCLRv2Config
    config: SimCLRv2Config

    def __init__(
        self, backbone: nn.Module, config: Optional[SimCLRv2Config] = None, data: Optional[DataSpec] = None
    ) -> None:
        super().__init__(backbone, config, data)
        cfg = self.config
        _validate(cfg)
        self.projector = ProjectionHead(backbone.feature_dim, cfg.projection_hidden_dim, cfg.projection_dim,
                                        num_layers=cfg.projection_layers, batch_norm=True)
        self.criterion = NTXentMemoryLoss(cfg.temperature, gather_distributed=cfg.gather_distributed)
        self.key_network: Optional[nn.Module] = None
        self.memory: Optional[KeyQueue] = None
        if cfg.memory_size > 0:
            # The "memory network": starts as a copy of f and g, then only follows them by EMA.
            self.key_network = frozen_copy(self.online_network())
            self.memory = KeyQueue(cfg.memory_size, cfg.projection_dim)

    def online_network(self) -> nn.Sequential:
        """``g(f(x))``: backbone then head (a view over the registered modules, not a new one)."""
        return nn.Sequential(self.backbone, self.projector)

    def finetune_trunk(self, head_layers: Optional[int] = None) -> FineTuneTrunk:
        """The trunk to fine-tune (Sec. 2: "fine-tune from the first layer of the projection head").

        Args:
            head_layers: hidden head layers to keep; default ``config.finetune_head_layers``.
        """
        k = self.config.finetune_head_layers if head_layers is None else head_layers
        if not 0 <= k < self.config.projection_layers:
            raise ConfigError(f"head_layers={k} must be in [0, {self.config.projection_layers - 1}]")
        modules = list(self.projector.layers)
        # Hidden layers are Linear → BatchNorm → ReLU: the first k end at the k-th ReLU.
        relus = [i for i, m in enumerate(modules) if isinstance(m, nn.ReLU)]
        kept = modules[:relus[k - 1] + 1] if k > 0 else []
        dim = self.config.projection_hidden_dim if k > 0 else self.backbone.feature_dim
        return FineTuneTrunk(self.backbone, kept, dim)

    def forward(self, views: List[Tensor], indices: Optional[Tensor] = None) -> MethodOutput:
        self.check_views(views)
        batch = views[0].shape[0]
        both = torch.cat(views[:2])
        h = self.backbone(both)  # (2B, D)
        z = self.projector(h)  # (2B, P)
        z_a, z_b = z[:batch], z[batch:]
        extras = {}
        negatives = None
        if self.memory is not None and self.key_network is not None:
            with torch.no_grad():
                extras["keys"] = F.normalize(self.key_network(both), dim=1)  # (2B, P), enqueued after the step
            # Read here, written only in on_step_end: this step's keys are not yet among the negatives.
            negatives = self.memory.stored
        loss = self.criterion(z_a, z_b, negatives)
        with torch.no_grad():
            pos_sim = F.cosine_similarity(z_a, z_b).mean()
        return MethodOutput(loss=loss, logs={"pos_sim": pos_sim}, features=h[:batch].detach(), extras=extras)

    @torch.no_grad()
    def on_step_end(self, output: MethodOutput, progress: Progress) -> None:
        if self.memory is None or self.key_network is None:
            return
        ema_update_(self.key_network, self.online_network(), self.config.momentum)
        self.memory.enqueue(output.extras["keys"])
