"""SimSiam: Exploring Simple Siamese Representation Learning (Chen & He, CVPR 2021),
https://arxiv.org/abs/2011.10566.

Two views share one encoder ``f`` (backbone + projection MLP); a prediction MLP ``h`` maps one
side to the other, and the other side is a constant (stop-gradient):
``L = ½·D(p₁, sg(z₂)) + ½·D(p₂, sg(z₁))`` with ``D`` the negative cosine (Eq. 1-4). No
negatives, no momentum encoder; the stop-gradient alone prevents collapse (Sec. 4.1).

Architecture (Sec. 3, "Baseline settings"): projection MLP of 3 layers, BN on every layer
*including the output* (no ReLU there), hidden and output 2048-d; prediction MLP a bottleneck
2048 → 512 → 2048, BN + ReLU in its hidden layer and none on its output. CIFAR uses a 2-layer
projector (App. D). Views are MoCo v2's (crop (0.2, 1), jitter 0.4/0.4/0.4/0.1, blur p = 0.5).

The predictor is trained at a constant learning rate while the rest decays (Sec. 4.2,
Table 1: 68.1 % with a fixed rate vs 67.7 % decayed; the official runs use it): the paper's
argument is that ``h`` must keep adapting to the latest representations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.heads.projection import ProjectionHead
from selfsup.losses.negative_cosine import SymmetricNegativeCosineLoss
from selfsup.methods.base import DataSpec, Method, MethodConfig, MethodOutput
from selfsup.methods.registry import METHODS
from selfsup.transforms import ViewConfig


@dataclass
class SimSiamConfig(MethodConfig):
    projection_hidden_dim: int = 2048
    """Hidden width of the projection MLP (Sec. 3: 2048)."""
    projection_dim: int = 2048
    """Output size of the projection MLP, i.e. of z and p (Sec. 3: 2048)."""
    projection_layers: int = 3
    """3 on ImageNet (Sec. 3); 2 in the CIFAR experiments (App. D)."""
    prediction_hidden_dim: int = 512
    """Bottleneck of the prediction MLP (Sec. 3: 512, a quarter of the output size)."""
    fixed_predictor_lr: bool = True
    """Keep the predictor at the peak learning rate, outside the decay schedule (Sec. 4.2)."""


@METHODS.register("simsiam")
class SimSiam(Method):
    """SimSiam: shared encoder, predictor on one side, stop-gradient on the other, symmetrised."""

    Config = SimSiamConfig
    config: SimSiamConfig

    def __init__(
        self, backbone: nn.Module, config: Optional[SimSiamConfig] = None, data: Optional[DataSpec] = None
    ) -> None:
        super().__init__(backbone, config, data)
        cfg = self.config
        # BN on the output of the projector (affine-free, no bias) as in the paper's Sec. 3.
        self.projector = ProjectionHead(backbone.feature_dim, cfg.projection_hidden_dim, cfg.projection_dim,
                                        num_layers=cfg.projection_layers, last_batch_norm=True)
        self.predictor = ProjectionHead(cfg.projection_dim, cfg.prediction_hidden_dim, cfg.projection_dim,
                                        num_layers=2)
        self.criterion = SymmetricNegativeCosineLoss()

    def constant_lr_modules(self) -> List[nn.Module]:
        return [self.predictor] if self.config.fixed_predictor_lr else []

    @classmethod
    def default_views(cls, **overrides: Any) -> ViewConfig:
        # MoCo v2's augmentations, which the paper adopts.
        preset = dict(crop_scale=(0.2, 1.0), jitter=(0.4, 0.4, 0.4, 0.1), blur_prob=(0.5, 0.5))
        return ViewConfig.simclr(**{**preset, **overrides})

    def forward(self, views: List[Tensor], indices: Optional[Tensor] = None) -> MethodOutput:
        self.check_views(views)
        batch = views[0].shape[0]
        h = self.backbone(torch.cat(views[:2]))  # (2B, D)
        z = self.projector(h)  # (2B, P)
        p = self.predictor(z)  # (2B, P)
        z_a, z_b = z[:batch], z[batch:]
        loss = self.criterion(p[:batch], p[batch:], z_a, z_b)
        with torch.no_grad():
            # Collapse monitor of Fig. 2 (middle): std over the batch of the ℓ2-normalised z,
            # averaged over channels; ≈ 1/sqrt(P) when healthy, 0 when collapsed.
            z_std = F.normalize(z_a, dim=1).std(dim=0).mean()
        return MethodOutput(loss=loss, logs={"z_std": z_std}, features=h[:batch].detach())
