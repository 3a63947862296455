"""E-SSL: SimCLR that also predicts the four-fold rotation of its views.

Dangovski, Jing, Loh, Han, Srivastava, Cheung, Agrawal, Soljačić (ICLR 2022), "Equivariant
Self-Supervised Learning: Encouraging Equivariance in Representations",
https://arxiv.org/abs/2111.00899. SimCLR makes the representation *invariant* to its crops and
colour changes; some transformations are better learned *equivariantly*. Four-fold rotation is
the paper's best one: adding RotNet's task (Gidaris et al. 2018) on a small head beside the
projector improves SimCLR on CIFAR-10 and ImageNet. The loss::

    L = L_NT-Xent(views) + λ · CE(rotation head(f(rot_k(x))), k),  k ∈ {0°, 90°, 180°, 270°}

with λ = 0.4 for SimCLR (the authors' code, github.com/rdangovs/essl). On centred, upright photographs such as
Fashion-MNIST's clothes, "which way is up" is a shape cue that SimCLR's crops never teach.

The rotated images are a third, smaller view, as in the authors' CIFAR-10 code: a crop at half the
side (16 of 32 px, scale 0.2-1, SimCLR's colour jitter), entered with all four rotations. Four
half-side copies cost about one full-size image, so a step costs about 1.5× SimCLR's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.errors import ConfigError
from selfsup.heads import ProjectionHead
from selfsup.methods.base import DataSpec, MethodOutput
from selfsup.methods.registry import METHODS
from selfsup.methods.simclr import SimCLR, SimCLRConfig
from selfsup.transforms import ViewConfig
from selfsup.transforms.pretext import NUM_ROTATIONS, rotate_batch


@dataclass
class ESSLConfig(SimCLRConfig):
    rotation_weight: float = 0.4
    """λ: the weight of the rotation cross-entropy (0.4 for SimCLR in the authors' code)."""
    rotation_hidden_dim: int = 2048
    rotation_layers: int = 3
    """Linear layers of the rotation head; the authors' is 3 layers, 2048 wide (with LayerNorm there,
    BatchNorm in selfsup's MLP head)."""

    def __post_init__(self) -> None:
        if not self.rotation_weight >= 0:
            raise ConfigError(f"rotation_weight={self.rotation_weight!r} must be >= 0 (the paper's λ: 0.4)")
        if self.rotation_layers < 1 or self.rotation_hidden_dim < 1:
            raise ConfigError(f"rotation_layers={self.rotation_layers} and rotation_hidden_dim="
                              f"{self.rotation_hidden_dim} must be >= 1")


@METHODS.register("essl")
class ESSL(SimCLR):
    """SimCLR on the two global views; a 4-way rotation classifier on the small views' features."""

    Config = ESSLConfig
    config: ESSLConfig

    def __init__(self, backbone: nn.Module, config: Optional[ESSLConfig] = None,
                 data: Optional[DataSpec] = None) -> None:
        super().__init__(backbone, config, data)
        cfg = self.config
        self.rotation_head = ProjectionHead(backbone.feature_dim, cfg.rotation_hidden_dim, NUM_ROTATIONS,
                                            num_layers=cfg.rotation_layers)

    @classmethod
    def default_views(cls, **overrides: Any) -> ViewConfig:
        """SimCLR's two views plus one small crop for the rotation task (scale 0.2-1, no blur, as the
        authors' CIFAR-10 code; its side is ``views.local_size``, half the global side there)."""
        preset = dict(num_local_views=1, local_crop_scale=(0.2, 1.0), local_blur_prob=0.0, local_solarize_prob=0.0)
        return ViewConfig.simclr(**{**preset, **overrides})

    def forward(self, views: List[Tensor], indices: Optional[Tensor] = None) -> MethodOutput:
        self.check_views(views)
        if len(views) < 3:
            raise ConfigError(f"essl needs a third, small view to rotate, got {len(views)} views; "
                              "set views.num_local_views=1 (its side: views.local_size)")
        batch = views[0].shape[0]
        h = self.backbone(torch.cat(views[:2]))  # (2B, D)
        z = self.projector(h)
        z_a, z_b = z[:batch], z[batch:]
        contrastive = self.criterion(z_a, z_b)
        rotated, labels = rotate_batch(torch.cat(views[2:]))  # (4·L·B, C, s, s): all four rotations
        logits = self.rotation_head(self.backbone(rotated))
        rotation = F.cross_entropy(logits, labels)
        loss = contrastive + self.config.rotation_weight * rotation
        with torch.no_grad():
            pos_sim = F.cosine_similarity(z_a, z_b).mean()
            rotation_acc = (logits.argmax(dim=1) == labels).float().mean()
        logs = {"pos_sim": pos_sim, "contrastive_loss": contrastive.detach(), "rotation_loss": rotation.detach(),
                "rotation_acc": rotation_acc}
        return MethodOutput(loss=loss, logs=logs, features=h[:batch].detach(),
                            extras={"features_view2": h[batch:2 * batch].detach()})
