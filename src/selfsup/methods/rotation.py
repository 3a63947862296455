"""RotNet: Unsupervised Representation Learning by Predicting Image Rotations.

Gidaris, Singh, Komodakis (ICLR 2018), https://arxiv.org/abs/1803.07728.
Every image of the batch enters four times, rotated by 0°, 90°, 180° and 270° (Sec. 2.2: all
four copies in the same batch work better than one random rotation per image); the backbone
and a small classifier predict which rotation was applied, with cross-entropy (Eq. 1-3).
Recognising the rotation needs the object's canonical orientation, hence its shape and parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.errors import ConfigError
from selfsup.heads.projection import ProjectionHead
from selfsup.methods.base import DataSpec, Method, MethodConfig, MethodOutput
from selfsup.methods.registry import METHODS
from selfsup.transforms import ViewConfig
from selfsup.transforms.pretext import NUM_ROTATIONS, rotate_batch


@dataclass
class RotationConfig(MethodConfig):
    classifier_hidden_dim: int = 512
    """Width of the hidden layers of the rotation classifier."""
    classifier_layers: int = 2
    """Linear layers of the classifier (1 = linear). The paper's features from the last layers
    are the most task-specific (Sec. 3.1.1); an MLP head keeps the pooled feature more general."""

    def __post_init__(self) -> None:
        if self.classifier_layers < 1 or self.classifier_hidden_dim < 1:
            raise ConfigError(f"classifier_layers={self.classifier_layers} and classifier_hidden_dim="
                              f"{self.classifier_hidden_dim} must be >= 1")


@METHODS.register("rotation")
class Rotation(Method):
    """4-way rotation classification over the four rotated copies of every view."""

    Config = RotationConfig
    config: RotationConfig
    num_views = 1

    def __init__(self, backbone: nn.Module, config: Optional[RotationConfig] = None,
                 data: Optional[DataSpec] = None) -> None:
        super().__init__(backbone, config, data)
        cfg = self.config
        self.classifier = ProjectionHead(backbone.feature_dim, cfg.classifier_hidden_dim, NUM_ROTATIONS,
                                         num_layers=cfg.classifier_layers)

    @classmethod
    def default_views(cls, **overrides: Any) -> ViewConfig:
        return ViewConfig.crop_flip(**overrides)

    def forward(self, views: List[Tensor], indices: Optional[Tensor] = None) -> MethodOutput:
        self.check_views(views)
        batch = views[0].shape[0]
        rotated, labels = rotate_batch(views[0])  # (4B, C, H, W), (4B,)
        h = self.backbone(rotated)  # (4B, D)
        logits = self.classifier(h)  # (4B, 4)
        loss = F.cross_entropy(logits, labels)
        with torch.no_grad():
            accuracy = (logits.argmax(dim=1) == labels).float().mean()
        # Rows [0, B) are the un-rotated views: their features feed the online probe.
        return MethodOutput(loss=loss, logs={"rotation_acc": accuracy}, features=h[:batch].detach())
