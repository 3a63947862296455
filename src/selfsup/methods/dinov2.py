"""DINOv2: Learning Robust Visual Features without Supervision.

Oquab, Darcet, Moutakanni, Vo, Szafraniec et al. (TMLR 2024), https://arxiv.org/abs/2304.07193.
The training objective of Sec. 4 is iBOT's (:mod:`selfsup.methods.ibot`: DINO's [CLS] loss over
multi-crop views + masked patch prediction from the EMA teacher) with three changes:

* untied heads: the patch tokens get their own head, because sharing it made the model
  underfit at the patch level ("Untying head weights between both objectives");
* Sinkhorn-Knopp centering of the teacher's outputs (3 iterations) instead of DINO's EMA centre
  (:func:`selfsup.losses.sinkhorn.sinkhorn_knopp`);
* the KoLeo regulariser on the student's L2-normalised [CLS] features, weight 0.1, within each
  global crop's batch (:func:`selfsup.losses.koleo.koleo_loss`).

Defaults follow the released ``ssl_default_config.yaml`` and ``vitl14.yaml`` (65536 prototypes
per head, bottleneck 256, masks on half of the images with ratio U(0.1, 0.5), teacher momentum
0.992 → 1, 8 local crops at scale (0.05, 0.32), global crops at (0.32, 1)). Engineering parts of
the paper (FSDP, xFormers, the 518-pixel adaptation phase, layer-wise lr decay) are out of scope.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from torch import Tensor, nn

from selfsup.errors import ConfigError
from selfsup.losses.koleo import koleo_loss
from selfsup.methods.base import DataSpec
from selfsup.methods.ibot import IBOT, IBOTConfig
from selfsup.methods.registry import METHODS
from selfsup.transforms import ViewConfig


@dataclass
class DINOv2Config(IBOTConfig):
    out_dim: int = 65536
    """K of the DINO ([CLS]) head (ssl_default_config: 65536)."""
    patch_out_dim: int = 65536
    """K of the separate iBOT (patch) head."""
    separate_patch_head: bool = True
    norm_last_layer: bool = True
    teacher_momentum: float = 0.992
    centering: str = "sinkhorn"
    koleo_weight: float = 0.1
    """Weight of the KoLeo term (0 turns it off)."""


@METHODS.register("dinov2")
class DINOv2(IBOT):
    """DINOv2's objective: iBOT with untied heads, Sinkhorn-Knopp teacher targets and KoLeo."""

    Config = DINOv2Config
    config: DINOv2Config

    def __init__(
        self, backbone: nn.Module, config: Optional[DINOv2Config] = None, data: Optional[DataSpec] = None
    ) -> None:
        super().__init__(backbone, config, data)
        if self.config.koleo_weight < 0:
            raise ConfigError(f"koleo_weight={self.config.koleo_weight} must be >= 0 (DINOv2: 0.1)")

    @classmethod
    def default_views(cls, **overrides: Any) -> ViewConfig:
        preset = dict(num_local_views=8, crop_scale=(0.32, 1.0), local_crop_scale=(0.05, 0.32))
        return ViewConfig.dino(**{**preset, **overrides})

    def regularizers(self, student_global_cls: Tensor) -> Dict[str, Tensor]:
        """KoLeo on each global crop's [CLS] features ``(B, D)`` separately: the two crops of one
        image are near each other by design and must not count as neighbours."""
        if self.config.koleo_weight == 0:
            return {}
        crops = student_global_cls.chunk(2)
        return {"koleo_loss": self.config.koleo_weight * sum(koleo_loss(crop) for crop in crops)}
