"""SimCLR: A Simple Framework for Contrastive Learning of Visual Representations.

Chen, Kornblith, Norouzi, Hinton (ICML 2020), https://arxiv.org/abs/2002.05709.
Two augmented views of each image go through the backbone ``f`` and projection head ``g``;
NT-Xent pulls the two projections together and pushes apart the views of the other images of
the (global) batch. The representation kept is ``h = f(x)``, before the head (Sec. 4.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import Tensor, nn

from selfsup.heads import ProjectionHead
from selfsup.losses import NTXentLoss
from selfsup.methods.base import DataSpec, Method, MethodConfig, MethodOutput
from selfsup.methods.registry import METHODS


@dataclass
class SimCLRConfig(MethodConfig):
    temperature: float = 0.5
    """τ of NT-Xent: 0.5 for CIFAR-10-sized batches, 0.1 for ImageNet with batch 4096."""
    projection_hidden_dim: int = 2048
    projection_dim: int = 128
    projection_layers: int = 2
    """2 in SimCLR v1; 3 in SimCLR v2."""
    projection_batch_norm: bool = True
    gather_distributed: bool = True
    """Use the negatives of every process under DDP (the paper's global batch)."""


@METHODS.register("simclr")
class SimCLR(Method):
    """SimCLR with a configurable MLP head and NT-Xent over the gathered global batch."""

    Config = SimCLRConfig
    config: SimCLRConfig

    def __init__(
        self, backbone: nn.Module, config: Optional[SimCLRConfig] = None, data: Optional[DataSpec] = None
    ) -> None:
        super().__init__(backbone, config, data)
        cfg = self.config
        self.projector = ProjectionHead(
            backbone.feature_dim,
            cfg.projection_hidden_dim,
            cfg.projection_dim,
            num_layers=cfg.projection_layers,
            batch_norm=cfg.projection_batch_norm,
        )
        self.criterion = NTXentLoss(cfg.temperature, gather_distributed=cfg.gather_distributed)

    def forward(self, views: List[Tensor], indices: Optional[Tensor] = None) -> MethodOutput:
        self.check_views(views)
        batch = views[0].shape[0]
        # One backbone pass over both views: half the kernel launches, and BatchNorm sees both.
        h = self.backbone(torch.cat(views[:2]))  # (2B, D)
        z = self.projector(h)  # (2B, P)
        z_a, z_b = z[:batch], z[batch:]
        loss = self.criterion(z_a, z_b)
        with torch.no_grad():
            pos_sim = nn.functional.cosine_similarity(z_a, z_b).mean()
        return MethodOutput(loss=loss, logs={"pos_sim": pos_sim}, features=h[:batch].detach(),
                            extras={"features_view2": h[batch:2 * batch].detach()})
