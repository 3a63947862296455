"""BYOL: Bootstrap Your Own Latent (Grill et al., NeurIPS 2020), https://arxiv.org/abs/2006.07733.

An *online* network (encoder ``f_θ``, projector ``g_θ``, predictor ``q_θ``) predicts the
projection that a *target* network (``f_ξ``, ``g_ξ``, no predictor) gives to another view of the
same image (Sec. 3.1, Fig. 2). The target is never trained by gradient: after each optimizer
step it moves towards the online network, ``ξ ← τ·ξ + (1 − τ)·θ`` (Eq. 1), with
``τ = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2`` rising from τ_base = 0.996 to 1 (Sec. 3.2). The
loss is the symmetrised normalised MSE ``2 − 2·cos`` (Eq. 2); views are asymmetric (Table 6:
blur 1.0 / 0.1, solarisation 0 / 0.2). Heads: MLP 4096 → 256 with BatchNorm in the hidden layer,
for both projector and predictor (Sec. 3.3). The representation kept is the online ``f_θ``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.errors import ConfigError
from selfsup.heads.projection import ProjectionHead
from selfsup.losses.byol import BYOLLoss
from selfsup.methods.base import DataSpec, Method, MethodConfig, MethodOutput, Progress
from selfsup.methods.momentum import ema_update_, frozen_copy
from selfsup.methods.registry import METHODS
from selfsup.schedules import cosine
from selfsup.transforms import ViewConfig


@dataclass
class BYOLConfig(MethodConfig):
    projection_hidden_dim: int = 4096
    """Hidden width of the projector g (Sec. 3.3: 4096)."""
    projection_dim: int = 256
    """Output size of projector and predictor (Sec. 3.3: 256)."""
    prediction_hidden_dim: int = 4096
    """Hidden width of the predictor q (same architecture as g, Sec. 3.3)."""
    base_momentum: float = 0.996
    """τ_base: target EMA rate at the start (Sec. 3.3: 0.996; 0.99 suits short/small-batch runs)."""
    final_momentum: float = 1.0
    """τ at the end of training, reached by a cosine schedule (Sec. 3.2: 1)."""


@METHODS.register("byol")
class BYOL(Method):
    """BYOL with an EMA target encoder + projector updated in :meth:`on_step_end`."""

    Config = BYOLConfig
    config: BYOLConfig

    def __init__(
        self, backbone: nn.Module, config: Optional[BYOLConfig] = None, data: Optional[DataSpec] = None
    ) -> None:
        super().__init__(backbone, config, data)
        cfg = self.config
        if not 0.0 <= cfg.base_momentum <= cfg.final_momentum <= 1.0:
            raise ConfigError(f"BYOL needs 0 <= base_momentum <= final_momentum <= 1, got base_momentum="
                              f"{cfg.base_momentum}, final_momentum={cfg.final_momentum}")
        self.projector = ProjectionHead(backbone.feature_dim, cfg.projection_hidden_dim, cfg.projection_dim,
                                        num_layers=2)
        self.predictor = ProjectionHead(cfg.projection_dim, cfg.prediction_hidden_dim, cfg.projection_dim,
                                        num_layers=2)
        # ξ starts equal to θ (the reference implementation initialises both identically).
        self.target_backbone = frozen_copy(backbone)
        self.target_projector = frozen_copy(self.projector)
        self.criterion = BYOLLoss()
        self.momentum = cfg.base_momentum
        """τ used by the latest EMA update (logged)."""

    @classmethod
    def default_views(cls, **overrides: Any) -> ViewConfig:
        return ViewConfig.byol(**overrides)

    def forward(self, views: List[Tensor], indices: Optional[Tensor] = None) -> MethodOutput:
        self.check_views(views)
        batch = views[0].shape[0]
        images = torch.cat(views[:2])  # (2B, C, H, W): one pass per network for both views
        h = self.backbone(images)  # (2B, D)
        pred = self.predictor(self.projector(h))  # (2B, P)
        with torch.no_grad():
            target = self.target_projector(self.target_backbone(images))  # (2B, P), no graph
        pred_a, pred_b = pred[:batch], pred[batch:]
        target_a, target_b = target[:batch], target[batch:]
        loss = self.criterion(pred_a, pred_b, target_a, target_b)
        with torch.no_grad():
            agreement = 0.5 * (F.cosine_similarity(pred_a, target_b) + F.cosine_similarity(pred_b, target_a)).mean()
        logs = {"pred_target_cos": agreement, "momentum": torch.tensor(self.momentum)}
        return MethodOutput(loss=loss, logs=logs, features=h[:batch].detach())

    @torch.no_grad()
    def on_step_end(self, output: MethodOutput, progress: Progress) -> None:
        # Eq. 1 after the optimizer step, with τ following the cosine schedule of Sec. 3.2.
        cfg = self.config
        self.momentum = cosine(cfg.base_momentum, cfg.final_momentum, progress.fraction)
        ema_update_(self.target_backbone, self.backbone, self.momentum)
        ema_update_(self.target_projector, self.projector, self.momentum)
