"""iBOT: Image BERT Pre-Training with Online Tokenizer.

Zhou, Wei, Wang, Shen, Xie, Yuille, Kong (ICLR 2022), https://arxiv.org/abs/2111.07832.
DINO's [CLS] self-distillation (:mod:`selfsup.methods.dino`) plus masked image modelling whose
targets come from the EMA teacher itself — the "online tokenizer" (Sec. 3.2):

* the student's global views have blocks of patches replaced by the ViT's learned
  ``mask_token`` (:mod:`selfsup.transforms.masking`; half of the images, ratio U(0.1, 0.5));
* at each masked position the student's patch output predicts the teacher's distribution for
  the same, *unmasked* view (``L_MIM``), with its own centre and the same sharpening;
* the [CLS] loss is DINO's over all (teacher global, other student view) pairs (``L_[CLS]``),
  local crops included; the objective is ``L_[CLS] + L_MIM``.

The [CLS] and patch outputs share one head by default (the released runs' ``shared_head``).
``centering: sinkhorn`` and an untied patch head are the DINOv2 variants (:mod:`.dinov2`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from selfsup.errors import ConfigError
from selfsup.losses.dino import TeacherCentering, dino_cross_entropy
from selfsup.losses.ibot import masked_patch_cross_entropy
from selfsup.losses.sinkhorn import sinkhorn_knopp
from selfsup.methods.base import DataSpec, MethodOutput
from selfsup.methods.dino import DINO, DINOConfig, fit_to_patches, teacher_mode_
from selfsup.methods.momentum import frozen_copy
from selfsup.methods.registry import METHODS
from selfsup.transforms import ViewConfig
from selfsup.transforms.masking import sample_masks

CENTERINGS = ("center", "sinkhorn")


@dataclass
class IBOTConfig(DINOConfig):
    out_dim: int = 8192
    """K of the [CLS] head (8192 in iBOT's ViT runs)."""
    norm_last_layer: bool = False
    """iBOT's ViT-S/B runs learn the prototype lengths."""
    separate_patch_head: bool = False
    """Untie the patch head from the [CLS] head (iBOT shares it; DINOv2 separates them)."""
    patch_out_dim: int = 8192
    """K of the patch head when `separate_patch_head` (the shared head uses `out_dim`)."""
    mask_probability: float = 0.5
    """Fraction of the global views whose patches are masked."""
    mask_ratio_min: float = 0.1
    """Masked fraction of a masked view is drawn from U(mask_ratio_min, mask_ratio_max)."""
    mask_ratio_max: float = 0.5
    min_mask_block_patches: int = 4
    """Smallest masked block (in patches)."""
    cls_loss_weight: float = 1.0
    """λ1 of L_[CLS]."""
    patch_loss_weight: float = 1.0
    """λ2 of L_MIM."""
    centering: str = "center"
    """Teacher normalisation: 'center' (EMA centres, iBOT) or 'sinkhorn' (Sinkhorn-Knopp, DINOv2)."""
    sinkhorn_iterations: int = 3


@METHODS.register("ibot")
class IBOT(DINO):
    """iBOT: DINO's [CLS] distillation + masked patch prediction against the EMA teacher (ViT only)."""

    Config = IBOTConfig
    config: IBOTConfig
    backbone_kind = "vit"

    def __init__(
        self, backbone: nn.Module, config: Optional[IBOTConfig] = None, data: Optional[DataSpec] = None
    ) -> None:
        if not hasattr(backbone, "forward_tokens") or not hasattr(backbone, "mask_token"):
            raise ConfigError(f"{type(self).__name__} needs a ViT backbone with patch tokens and a mask token, "
                              f"got {type(backbone).__name__}; use e.g. --backbone vit-tiny or timm:vit_small_patch16_224")
        super().__init__(backbone, config, data)
        cfg = self.config
        _check_ibot_config(cfg)
        self.patch_head = self._make_head(cfg.patch_out_dim) if cfg.separate_patch_head else None
        self.teacher_patch_head = frozen_copy(self.patch_head) if self.patch_head is not None else None
        patch_dim = cfg.patch_out_dim if cfg.separate_patch_head else cfg.out_dim
        self.patch_centering = TeacherCentering(patch_dim, cfg.center_momentum)
        if self.teacher_patch_head is not None:
            teacher_mode_(self.teacher_patch_head)

    @classmethod
    def default_views(cls, **overrides: Any) -> ViewConfig:
        # iBOT's ViT-S/16 run: 10 local crops, global scale (0.25, 1), local scale (0.05, 0.25).
        preset = dict(num_local_views=10, crop_scale=(0.25, 1.0), local_crop_scale=(0.05, 0.25))
        return ViewConfig.dino(**{**preset, **overrides})

    @staticmethod
    def _heads(head: nn.Module, patch_head: Optional[nn.Module], cls_tokens: Tensor,
               patch_tokens: Tensor) -> Tuple[Tensor, Tensor]:
        """Logits of ``(V, D)`` [CLS] and ``(M, D)`` patch tokens; a shared head runs once on both."""
        if patch_head is not None:
            return head(cls_tokens), patch_head(patch_tokens)
        logits = head(torch.cat([cls_tokens, patch_tokens]))
        return logits[:len(cls_tokens)], logits[len(cls_tokens):]

    def teacher_student_pairs(self) -> List[Tuple[nn.Module, nn.Module]]:
        pairs = super().teacher_student_pairs()
        if self.patch_head is not None:
            pairs.append((self.teacher_patch_head, self.patch_head))
        return pairs

    def prototype_layers(self) -> List[nn.Module]:
        return super().prototype_layers() + ([self.patch_head.last_layer] if self.patch_head is not None else [])

    # ------------------------------------------------------------------ the loss
    def sample_masks(self, images: Tensor) -> Tensor:
        """Block masks ``(B, N)`` for the patches of ``images`` ``(B, C, H, W)``, on their device."""
        cfg = self.config
        patch_h, patch_w = self.backbone.patch_embed.patch_size
        grid = (images.shape[-2] // patch_h, images.shape[-1] // patch_w)
        masks = sample_masks(images.shape[0], grid, (cfg.mask_ratio_min, cfg.mask_ratio_max), cfg.mask_probability,
                             cfg.min_mask_block_patches)
        return masks.to(images.device)

    @torch.no_grad()
    def teacher_outputs(self, global_images: Tensor, masks: Tensor) -> Tuple[List[Tensor], Tensor, Dict[str, Tensor]]:
        """The teacher's targets for the unmasked global views ``(2B, C, H, W)``.

        Returns:
            [CLS] distributions (one ``(B, K)`` per view), patch distributions ``(M, K)`` at the
            masked positions of ``masks`` ``(2B, N)``, and what :meth:`on_step_end` needs for the centres.
        """
        cfg = self.config
        temperature = self.teacher_temperature  # a 0-d tensor: float() would sync with the GPU
        tokens = self.teacher_backbone.forward_tokens(global_images)
        if cfg.centering == "sinkhorn":
            # Sinkhorn-Knopp needs no state; only the masked patches are targets (DINOv2).
            cls_logits, patch_logits = self._heads(self.teacher_head, self.teacher_patch_head, tokens.cls,
                                                   tokens.patches[masks])
            cls_probs = sinkhorn_knopp(cls_logits, temperature, cfg.sinkhorn_iterations)
            patch_probs = sinkhorn_knopp(patch_logits, temperature, cfg.sinkhorn_iterations)
            extras: Dict[str, Tensor] = {}
        else:
            # iBOT centres the patch outputs with the mean over every patch of every view.
            cls_logits, patch_logits = self._heads(self.teacher_head, self.teacher_patch_head, tokens.cls,
                                                   tokens.patches.flatten(0, 1))
            patch_logits = patch_logits.unflatten(0, tokens.patches.shape[:2])  # (2B, N, K)
            cls_probs = self.centering.probabilities(cls_logits, temperature)
            patch_probs = self.patch_centering.probabilities(patch_logits[masks], temperature)
            # Per-image patch means: their mean over images is the mean over all patches (N per image).
            extras = {"teacher_logits": cls_logits, "teacher_patch_logits": patch_logits.mean(dim=1)}
        return list(cls_probs.chunk(2)), patch_probs, extras

    def forward(self, views: List[Tensor], indices: Optional[Tensor] = None) -> MethodOutput:
        self.check_views(views)
        cfg = self.config
        batch = views[0].shape[0]
        global_views, local_views = views[:2], views[2:]
        global_images = fit_to_patches(torch.cat(global_views), self.backbone)  # (2B, C, H, W)
        masks = self.sample_masks(global_images)  # (2B, N)
        teacher_cls, teacher_patches, extras = self.teacher_outputs(global_images, masks)

        student = self.backbone.forward_tokens(global_images, masks)  # masked patches → mask_token
        cls_features = [student.cls]  # (2B, D)
        if local_views:  # local crops are never masked and only give [CLS] terms
            cls_features.append(self.backbone(fit_to_patches(torch.cat(local_views), self.backbone)))
        cls_logits, student_patches = self._heads(
            self.head, self.patch_head, torch.cat(cls_features), student.patches[masks])  # masked positions only
        student_cls = list(cls_logits.chunk(len(views)))

        terms = {
            "cls_loss": cfg.cls_loss_weight * dino_cross_entropy(student_cls, teacher_cls, cfg.student_temp),
            "patch_loss": cfg.patch_loss_weight * masked_patch_cross_entropy(
                student_patches, teacher_patches, masks, cfg.student_temp),
        }
        terms.update(self.regularizers(student.cls))
        logs = {name: value.detach() for name, value in terms.items()}
        logs.update(self._teacher_logs(teacher_cls))
        logs["masked_fraction"] = masks.float().mean()
        return MethodOutput(loss=sum(terms.values()), logs=logs, features=student.cls[:batch].detach(),
                            extras=extras)

    def regularizers(self, student_global_cls: Tensor) -> Dict[str, Tensor]:
        """Extra weighted loss terms on the student's global [CLS] features ``(2B, D)`` (none in iBOT)."""
        return {}

    @torch.no_grad()
    def update_centers(self, extras: Dict[str, Tensor]) -> None:
        if "teacher_logits" in extras:  # 'center' normalisation; Sinkhorn-Knopp keeps no state
            self.centering.update_(extras["teacher_logits"])
            self.patch_centering.update_(extras["teacher_patch_logits"])


def _check_ibot_config(cfg: IBOTConfig) -> None:
    if cfg.centering not in CENTERINGS:
        raise ConfigError(f"unknown centering '{cfg.centering}'; valid choices: {', '.join(CENTERINGS)}")
    if not 0.0 <= cfg.mask_ratio_min <= cfg.mask_ratio_max <= 1.0:
        raise ConfigError(f"mask_ratio_min={cfg.mask_ratio_min}, mask_ratio_max={cfg.mask_ratio_max} must satisfy "
                          "0 <= min <= max <= 1 (iBOT: 0.1, 0.5)")
    if not 0.0 <= cfg.mask_probability <= 1.0:
        raise ConfigError(f"mask_probability={cfg.mask_probability} must be in [0, 1] (iBOT: 0.5)")
    if cfg.patch_out_dim < 1 or cfg.min_mask_block_patches < 1 or cfg.sinkhorn_iterations < 1:
        raise ConfigError(f"patch_out_dim={cfg.patch_out_dim}, min_mask_block_patches={cfg.min_mask_block_patches} "
                          f"and sinkhorn_iterations={cfg.sinkhorn_iterations} must be positive integers")
