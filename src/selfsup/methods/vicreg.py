"""VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning
(Bardes, Ponce, LeCun, ICLR 2022), https://arxiv.org/abs/2105.04906.

Both views go through the same encoder ``f`` and *expander* ``h`` (Sec. 3.1, Fig. 1). The loss
pulls the two embeddings of an image together (invariance) and keeps each branch from
collapsing by itself: every embedding dimension must have a standard deviation of at least
γ = 1 over the batch (variance) and different dimensions must be decorrelated (covariance),
Eq. 6 with λ = μ = 25, ν = 1 (Sec. 4.1), the two variance hinges averaged as in the authors'
released code (``variance_reduction``; Eq. 6 as printed sums them). No stop-gradient, no momentum encoder, no negatives.

Expander (Sec. 4.1): three linear layers of 8192 units, BatchNorm + ReLU after the first two.
Views: BYOL's augmentations, which the paper adopts. Under DDP the variance and covariance are computed over
the embeddings gathered from all processes (see :mod:`selfsup.losses.vicreg`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

import torch
from torch import Tensor, nn

from selfsup.heads.projection import ProjectionHead
from selfsup.losses.vicreg import VICRegLoss
from selfsup.methods.base import DataSpec, Method, MethodConfig, MethodOutput
from selfsup.methods.registry import METHODS
from selfsup.transforms import ViewConfig


@dataclass
class VICRegConfig(MethodConfig):
    expander_hidden_dim: int = 8192
    """Width of the expander's hidden layers (Sec. 4.1: 8192)."""
    expander_dim: int = 8192
    """Embedding size d that the variance/covariance terms act on (Sec. 4.1: 8192)."""
    expander_layers: int = 3
    """Number of linear layers of the expander (Sec. 4.1: 3)."""
    invariance_weight: float = 25.0
    """λ, weight of the mean-squared distance between the two embeddings."""
    variance_weight: float = 25.0
    """μ, weight of the standard-deviation hinge."""
    variance_reduction: str = "mean"
    """How the two branches' variance hinges combine: 'mean', as the authors' released code that
    produced the paper's numbers, or 'sum', Eq. 6 as printed (twice the weight at the same μ)."""
    covariance_weight: float = 1.0
    """ν, weight of the off-diagonal covariance penalty (the paper keeps ν = 1 and tunes λ = μ)."""
    gamma: float = 1.0
    """γ, the standard deviation every embedding dimension is pushed to reach."""
    eps: float = 1e-4
    """ε inside the square root of the variance, against vanishing gradients near 0."""
    gather_distributed: bool = True
    """Variance and covariance over the global batch under DDP."""


@METHODS.register("vicreg")
class VICReg(Method):
    """VICReg: shared encoder + expander, variance/invariance/covariance loss."""

    Config = VICRegConfig
    config: VICRegConfig

    def __init__(
        self, backbone: nn.Module, config: Optional[VICRegConfig] = None, data: Optional[DataSpec] = None
    ) -> None:
        super().__init__(backbone, config, data)
        cfg = self.config
        self.expander = ProjectionHead(backbone.feature_dim, cfg.expander_hidden_dim, cfg.expander_dim,
                                       num_layers=cfg.expander_layers)
        self.criterion = VICRegLoss(cfg.invariance_weight, cfg.variance_weight, cfg.covariance_weight,
                                    gamma=cfg.gamma, eps=cfg.eps, gather_distributed=cfg.gather_distributed,
                                    variance_reduction=cfg.variance_reduction)

    @classmethod
    def default_views(cls, **overrides: Any) -> ViewConfig:
        return ViewConfig.byol(**overrides)

    def forward(self, views: List[Tensor], indices: Optional[Tensor] = None) -> MethodOutput:
        self.check_views(views)
        batch = views[0].shape[0]
        h = self.backbone(torch.cat(views[:2]))  # (2B, D)
        z = self.expander(h)  # (2B, d)
        terms = self.criterion(z[:batch], z[batch:])
        logs = {"invariance": terms.invariance.detach(), "variance": terms.variance.detach(),
                "covariance": terms.covariance.detach()}
        return MethodOutput(loss=terms.loss, logs=logs, features=h[:batch].detach())
