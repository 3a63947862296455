"""Barlow Twins: Self-Supervised Learning via Redundancy Reduction (Zbontar, Jing, Misra,
LeCun, Deny, ICML 2021), https://arxiv.org/abs/2103.03230.

Both views go through one encoder and projector; the cross-correlation matrix ``C`` of the two
batch-standardised embeddings is pushed towards the identity: diagonal → 1 (invariance to the
augmentations), off-diagonal → 0 (no redundancy between dimensions), Eq. 1-2, λ = 5·10⁻³.

Projector (Sec. 2, "Implementation details"): three linear layers of 8192 units, BatchNorm +
ReLU after the first two; the loss then standardises the output over the batch (the authors'
affine-free BatchNorm). Views: BYOL's augmentations, which the paper adopts. The paper's separate learning
rate for biases and BN parameters (0.0048 vs 0.2) is not reproduced: the engine gives them the
base rate without weight decay or LARS adaptation, like BYOL.

Distributed training: the embedding standardisation uses global-batch statistics and ``C`` is
summed over processes (differentiable ``all_reduce``), see :mod:`selfsup.losses.barlow_twins`.
The projector's hidden BatchNorms are global with ``trainer.sync_batchnorm: true``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

import torch
from torch import Tensor, nn

from selfsup.heads.projection import ProjectionHead
from selfsup.losses.barlow_twins import BarlowTwinsLoss
from selfsup.methods.base import DataSpec, Method, MethodConfig, MethodOutput
from selfsup.methods.registry import METHODS
from selfsup.transforms import ViewConfig


@dataclass
class BarlowTwinsConfig(MethodConfig):
    projection_hidden_dim: int = 8192
    """Width of the projector's hidden layers (Sec. 2: 8192)."""
    projection_dim: int = 8192
    """Embedding size, i.e. the side of C (Sec. 2: 8192; the paper's ablation finds wider is better)."""
    projection_layers: int = 3
    """Number of linear layers of the projector (Sec. 2: 3)."""
    off_diagonal_weight: float = 5e-3
    """λ of Eq. 1, weight of the redundancy-reduction term (Sec. 2: 5e-3)."""
    gather_distributed: bool = True
    """Global-batch standardisation and cross-correlation under DDP."""


@METHODS.register("barlow-twins")
class BarlowTwins(Method):
    """Barlow Twins: shared encoder + projector, cross-correlation → identity."""

    Config = BarlowTwinsConfig
    config: BarlowTwinsConfig

    def __init__(
        self, backbone: nn.Module, config: Optional[BarlowTwinsConfig] = None, data: Optional[DataSpec] = None
    ) -> None:
        super().__init__(backbone, config, data)
        cfg = self.config
        self.projector = ProjectionHead(backbone.feature_dim, cfg.projection_hidden_dim, cfg.projection_dim,
                                        num_layers=cfg.projection_layers)
        self.criterion = BarlowTwinsLoss(cfg.off_diagonal_weight, gather_distributed=cfg.gather_distributed)

    @classmethod
    def default_views(cls, **overrides: Any) -> ViewConfig:
        return ViewConfig.byol(**overrides)

    def forward(self, views: List[Tensor], indices: Optional[Tensor] = None) -> MethodOutput:
        self.check_views(views)
        batch = views[0].shape[0]
        h = self.backbone(torch.cat(views[:2]))  # (2B, D)
        z = self.projector(h)  # (2B, P)
        terms = self.criterion(z[:batch], z[batch:])
        logs = {"on_diagonal": terms.on_diagonal.detach(), "off_diagonal": terms.off_diagonal.detach()}
        return MethodOutput(loss=terms.loss, logs=logs, features=h[:batch].detach())
