"""MoCo v3: An Empirical Study of Training Self-Supervised Vision Transformers.

Chen, Xie, He (ICCV 2021), https://arxiv.org/abs/2104.02057.

Two views ``x₁, x₂`` go through the query encoder ``f_q`` (backbone, projection MLP and a
prediction MLP) and through the momentum encoder ``f_k`` (backbone and projection MLP only).
There is no queue: the keys of the other images of the (global) batch are the negatives, and
the loss is symmetrised, ``ctr(q₁, k₂) + ctr(q₂, k₁)``, each term an InfoNCE scaled by ``2τ``
(Alg. 1, Sec. 3). The momentum follows a cosine schedule from ``m`` to 1 (the authors'
recipes, after BYOL).

Stability with ViTs (Sec. 4.2): the patch projection is randomly initialised and frozen
(``freeze_patch_embed``, on by default for ViTs), which removes the loss spikes that start in
the first layer. Works with ResNets too (``backbone_kind = "any"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.errors import ConfigError
from selfsup.heads.projection import ProjectionHead
from selfsup.losses.infonce import SymmetricInfoNCELoss
from selfsup.methods.base import DataSpec, Method, MethodConfig, MethodOutput, Progress
from selfsup.methods.momentum import ema_update_, frozen_copy
from selfsup.methods.registry import METHODS
from selfsup.schedules import cosine
from selfsup.transforms import ViewConfig


@dataclass
class MoCoV3Config(MethodConfig):
    temperature: Optional[float] = None
    """τ; None picks the authors' choice: 0.2 for ViTs, 1.0 for ResNets."""
    momentum: float = 0.99
    """Base m of the momentum encoder, raised to 1 along a cosine over training (0.99 for ViTs
    and 100-epoch ResNets; 0.996 for longer ResNet schedules)."""
    projection_hidden_dim: int = 4096
    projection_dim: int = 256
    projection_layers: Optional[int] = None
    """Layers of the projection MLP; None: 3 for ViTs, 2 for ResNets (the authors' code)."""
    predictor_hidden_dim: int = 4096
    """Hidden width of the 2-layer prediction MLP on the query branch."""
    freeze_patch_embed: Optional[bool] = None
    """Random fixed patch projection (Sec. 4.2); None: on for ViTs. Only valid with a ViT."""
    gather_distributed: bool = True
    """Use the keys of every process as negatives under DDP (the paper's global batch)."""


def _is_vit(backbone: nn.Module) -> bool:
    return hasattr(backbone, "patch_embed")


def freeze_random_patch_projection_(backbone: nn.Module) -> None:
    """Re-draw the ViT's patch projection from Xavier-uniform over the flattened patch (as in the
    authors' code) and freeze it: MoCo v3's stability trick (Sec. 4.2)."""
    proj = backbone.patch_embed.proj
    fan_in = proj.weight[0].numel()  # channels × patch height × patch width
    bound = math.sqrt(6.0 / (fan_in + proj.weight.shape[0]))
    with torch.no_grad():
        nn.init.uniform_(proj.weight, -bound, bound)
        if proj.bias is not None:
            nn.init.zeros_(proj.bias)
    backbone.patch_embed.requires_grad_(False)


@METHODS.register("moco3")
class MoCoV3(Method):
    """MoCo v3: in-batch InfoNCE between predicted queries and momentum keys, symmetrised."""

    Config = MoCoV3Config
    config: MoCoV3Config

    def __init__(
        self, backbone: nn.Module, config: Optional[MoCoV3Config] = None, data: Optional[DataSpec] = None
    ) -> None:
        super().__init__(backbone, config, data)
        cfg = self.config
        vit = _is_vit(backbone)
        self.temperature = cfg.temperature if cfg.temperature is not None else (0.2 if vit else 1.0)
        projection_layers = cfg.projection_layers if cfg.projection_layers is not None else (3 if vit else 2)
        freeze = cfg.freeze_patch_embed if cfg.freeze_patch_embed is not None else vit
        if self.temperature <= 0:
            raise ConfigError(f"moco3 temperature={self.temperature} must be > 0 (0.2 for ViTs, 1.0 for ResNets)")
        if not 0.0 <= cfg.momentum <= 1.0:
            raise ConfigError(f"moco3 momentum={cfg.momentum} must be in [0, 1] (the paper uses 0.99)")
        if projection_layers < 1:
            raise ConfigError(f"moco3 projection_layers={projection_layers} must be >= 1 (3 for ViTs, 2 for ResNets)")
        if freeze and not vit:
            raise ConfigError(f"moco3 freeze_patch_embed=true needs a ViT backbone, got {type(backbone).__name__}; "
                              "set it to false or use e.g. --backbone vit-small")
        if freeze:
            freeze_random_patch_projection_(backbone)
        # Every MLP layer has BN, the projector's output too (the authors' code, after SimCLR);
        # the predictor's output BN is used with ViTs only.
        self.projector = ProjectionHead(backbone.feature_dim, cfg.projection_hidden_dim, cfg.projection_dim,
                                        num_layers=projection_layers, batch_norm=True, last_batch_norm=True)
        self.predictor = ProjectionHead(cfg.projection_dim, cfg.predictor_hidden_dim, cfg.projection_dim,
                                        num_layers=2, batch_norm=True, last_batch_norm=vit)
        self.momentum_encoder = frozen_copy(self.base_encoder())
        self.criterion = SymmetricInfoNCELoss(self.temperature, gather_distributed=cfg.gather_distributed)

    @classmethod
    def default_views(cls, **overrides: Any) -> ViewConfig:
        """BYOL's asymmetric views, which the paper adopts: crops (0.08, 1), blur p = (1.0, 0.1), solarize p = (0.0, 0.2)."""
        return ViewConfig.byol(**overrides)

    def base_encoder(self) -> nn.Sequential:
        """Backbone then projector: the part mirrored by the momentum encoder (a view, not a new module)."""
        return nn.Sequential(self.backbone, self.projector)

    def momentum_at(self, progress: Progress) -> float:
        """``m_t = 1 − (1 − m)·(cos(π·t/T) + 1)/2``: cosine from the base momentum to 1."""
        return cosine(self.config.momentum, 1.0, progress.fraction)

    def forward(self, views: List[Tensor], indices: Optional[Tensor] = None) -> MethodOutput:
        self.check_views(views)
        # Each view is its own batch, as in the authors' code, so BN statistics are per view.
        h1, h2 = self.backbone(views[0]), self.backbone(views[1])  # (B, D)
        q1, q2 = self.predictor(self.projector(h1)), self.predictor(self.projector(h2))  # (B, P)
        with torch.no_grad():
            k1, k2 = self.momentum_encoder(views[0]), self.momentum_encoder(views[1])
        loss = self.criterion(q1, q2, k1, k2)
        with torch.no_grad():
            pos_sim = (F.cosine_similarity(q1, k2) + F.cosine_similarity(q2, k1)).mean() / 2
        return MethodOutput(loss=loss, logs={"pos_sim": pos_sim}, features=h1.detach())

    @torch.no_grad()
    def on_step_end(self, output: MethodOutput, progress: Progress) -> None:
        ema_update_(self.momentum_encoder, self.base_encoder(), self.momentum_at(progress))
