"""DINO: Emerging Properties in Self-Supervised Vision Transformers (self-DIstillation with NO labels).

Caron, Touvron, Misra, Jégou, Mairal, Bojanowski, Joulin (ICCV 2021), https://arxiv.org/abs/2104.14294.
A student network (backbone + :class:`~selfsup.heads.dino.DINOHead`) is trained to match the
output distribution of a teacher network of the same architecture whose weights are an
exponential moving average of the student's (Sec. 3.1, Alg. 1):

* multi-crop: 2 global views and N small local views (:meth:`ViewConfig.dino`); the teacher sees
  only the global views, the student all of them, and every (teacher view, other student view)
  pair is a term of the cross-entropy (Eq. 3);
* the teacher's outputs are centred (EMA centre of the batch mean, momentum 0.9, Eq. 4) and
  sharpened (τ_t: 0.04 → 0.07 over the first 30 epochs; student τ_s = 0.1);
* the teacher follows the student with momentum 0.996 → 1 (cosine);
* the prototypes layer is frozen during the first epoch, which stabilises training (reference code);
* the teacher runs without dropout or stochastic depth; BatchNorm layers (ResNets) use its own
  batch statistics and keep its own running averages (not the student's).

Weight decay 0.04 → 0.4 (cosine) and gradient clipping at 3.0 come from the recipe's ``optim``
section, which the engine applies. The teacher is the better network (Sec. 5, "Building
different teachers from the student"), so :meth:`DINO.encoder` returns the teacher's backbone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from selfsup.errors import ConfigError
from selfsup.heads.dino import DINOHead
from selfsup.losses.dino import TeacherCentering, dino_cross_entropy, teacher_temperature
from selfsup.methods.base import DataSpec, Method, MethodConfig, MethodOutput, Progress
from selfsup.methods.momentum import frozen_copy
from selfsup.methods.registry import METHODS
from selfsup.schedules import cosine
from selfsup.transforms import ViewConfig


@dataclass
class DINOConfig(MethodConfig):
    out_dim: int = 65536
    """K, the number of prototypes of the head's last layer (65536 in the paper)."""
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    head_layers: int = 3
    head_batch_norm: bool = False
    """BatchNorm in the head's hidden layers (the reference code offers it for ResNets; off by default)."""
    norm_last_layer: bool = True
    """Fix the prototypes' lengths to 1 (stabler; the paper's ViT-S runs also learn them)."""
    student_temp: float = 0.1
    """τ_s of the student's softmax."""
    teacher_temp: float = 0.07
    """τ_t after the warm-up (Sec. 4, "Implementation details": 0.04 → 0.07)."""
    warmup_teacher_temp: float = 0.04
    """τ_t at the start of training."""
    teacher_temp_warmup_epochs: float = 30.0
    """Epochs of the linear τ_t warm-up (30 in the paper)."""
    center_momentum: float = 0.9
    """m of the centre's EMA (Eq. 4)."""
    teacher_momentum: float = 0.996
    """λ at the start; follows a cosine to `final_teacher_momentum` (Sec. 3.1)."""
    final_teacher_momentum: float = 1.0
    freeze_last_layer_epochs: int = 1
    """The prototypes layer gets no update during these first epochs."""
    evaluate_teacher: bool = True
    """Evaluate/export the teacher's backbone (the better one after long training, Sec. 5); false:
    the student's (better in runs of a few hundred steps, where the teacher lags behind)."""


@METHODS.register("dino")
class DINO(Method):
    """DINO: a student matches the centred, sharpened outputs of its EMA teacher over multi-crop views."""

    Config = DINOConfig
    config: DINOConfig
    num_views = 2
    backbone_kind = "any"

    def __init__(
        self, backbone: nn.Module, config: Optional[DINOConfig] = None, data: Optional[DataSpec] = None
    ) -> None:
        super().__init__(backbone, config, data)
        cfg = self.config
        _check_config(cfg)
        self.head = self._make_head(cfg.out_dim)
        self.teacher_backbone = frozen_copy(backbone)
        self.teacher_head = frozen_copy(self.head)
        self.centering = TeacherCentering(cfg.out_dim, cfg.center_momentum)
        # A buffer, so a resumed run continues the schedule (forward cannot see the progress).
        self.register_buffer("teacher_temperature", torch.tensor(float(cfg.warmup_teacher_temp)))
        for teacher in (self.teacher_backbone, self.teacher_head):
            teacher_mode_(teacher)

    def _make_head(self, out_dim: int) -> DINOHead:
        cfg = self.config
        return DINOHead(self.backbone.feature_dim, out_dim, cfg.head_hidden_dim, cfg.head_bottleneck_dim,
                        cfg.head_layers, cfg.head_batch_norm, cfg.norm_last_layer)

    @classmethod
    def default_views(cls, **overrides: Any) -> ViewConfig:
        return ViewConfig.dino(**overrides)

    def encoder(self) -> nn.Module:
        return self.teacher_backbone if self.config.evaluate_teacher else self.backbone

    def train(self, mode: bool = True) -> "DINO":
        """The teacher never uses dropout or stochastic depth (DINO builds it without drop path;
        DINOv2 keeps it in eval mode), but its BatchNorm layers (ResNet backbones) use batch
        statistics in training, as in DINO's ResNet runs."""
        super().train(mode)
        for teacher, _ in self.teacher_student_pairs():
            teacher_mode_(teacher)
        return self

    def teacher_student_pairs(self) -> List[Tuple[nn.Module, nn.Module]]:
        """(EMA teacher, student) module pairs."""
        return [(self.teacher_backbone, self.backbone), (self.teacher_head, self.head)]

    def prototype_layers(self) -> List[nn.Module]:
        """The student's last layers, frozen during the first `freeze_last_layer_epochs`."""
        return [self.head.last_layer]

    # ------------------------------------------------------------------ the loss
    @torch.no_grad()
    def teacher_targets(self, global_views: List[Tensor]) -> Tuple[Tensor, List[Tensor]]:
        """Teacher logits ``(2B, K)`` of the global views and their centred, sharpened
        distributions, one ``(B, K)`` per view."""
        logits = self.teacher_head(self.teacher_backbone(fit_to_patches(torch.cat(global_views), self.backbone)))
        probs = self.centering.probabilities(logits, self.teacher_temperature)  # a tensor: float() would sync
        return logits, list(probs.chunk(len(global_views)))

    def forward(self, views: List[Tensor], indices: Optional[Tensor] = None) -> MethodOutput:
        self.check_views(views)
        batch = views[0].shape[0]
        global_views, local_views = views[:2], views[2:]
        teacher_logits, teacher_probs = self.teacher_targets(global_views)
        # Views of one size share a backbone pass (and BatchNorm statistics), as in the reference code.
        features = [self.backbone(fit_to_patches(torch.cat(global_views), self.backbone))]  # (2B, D)
        if local_views:
            features.append(self.backbone(fit_to_patches(torch.cat(local_views), self.backbone)))  # (N_local·B, D)
        # One head pass over every view: (2B + N_local·B, K), then one (B, K) chunk per view.
        student_logits = list(self.head(torch.cat(features)).chunk(len(views)))
        loss = dino_cross_entropy(student_logits, teacher_probs, self.config.student_temp)
        return MethodOutput(loss=loss, logs=self._teacher_logs(teacher_probs),
                            features=features[0][:batch].detach(), extras={"teacher_logits": teacher_logits})

    @torch.no_grad()
    def _teacher_logs(self, teacher_probs: List[Tensor]) -> Dict[str, Tensor]:
        """Collapse diagnostics: the teacher's entropy (→ 0: one prototype wins; → log K: uniform)."""
        probs = torch.cat(teacher_probs)
        entropy = -(probs * probs.clamp(min=1e-12).log()).sum(-1).mean()
        return {"teacher_entropy": entropy, "teacher_temp": self.teacher_temperature.detach().clone()}

    # ------------------------------------------------------------------ hooks
    def on_before_optimizer_step(self, progress: Progress) -> None:
        # DINO's cancel_gradients_last_layer: the prototypes stay at their init for the first epoch(s).
        if progress.epoch < self.config.freeze_last_layer_epochs:
            for layer in self.prototype_layers():
                for param in layer.parameters():
                    param.grad = None

    @torch.no_grad()
    def on_step_end(self, output: MethodOutput, progress: Progress) -> None:
        cfg = self.config
        momentum = cosine(cfg.teacher_momentum, cfg.final_teacher_momentum, progress.fraction)
        for teacher, student in self.teacher_student_pairs():
            ema_parameters_(teacher, student, momentum)
        self.update_centers(output.extras)
        self.teacher_temperature.fill_(self._scheduled_teacher_temperature(progress))

    @torch.no_grad()
    def update_centers(self, extras: Dict[str, Tensor]) -> None:
        """Eq. 4 with this step's teacher logits."""
        self.centering.update_(extras["teacher_logits"])

    def _scheduled_teacher_temperature(self, progress: Progress) -> float:
        """τ_t for the next step (``progress.step`` steps are done)."""
        cfg = self.config
        epochs_done = progress.fraction * progress.total_epochs
        return teacher_temperature(epochs_done, cfg.warmup_teacher_temp, cfg.teacher_temp,
                                   cfg.teacher_temp_warmup_epochs)


def fit_to_patches(images: Tensor, backbone: nn.Module) -> Tensor:
    """Resize ``(B, C, H, W)`` images whose sides are not multiples of a ViT's patch size to the
    nearest multiples (at least one patch): DINO's local crops are 96/224 of the global side,
    which for small images (16 → 7 pixels) need not fit the patches. Other backbones: unchanged."""
    patch_embed = getattr(backbone, "patch_embed", None)
    if patch_embed is None:
        return images
    patch_h, patch_w = patch_embed.patch_size
    height, width = images.shape[-2:]
    if height % patch_h == 0 and width % patch_w == 0:
        return images
    size = (max(1, round(height / patch_h)) * patch_h, max(1, round(width / patch_w)) * patch_w)
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)


@torch.no_grad()
def ema_parameters_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``θ_t ← m·θ_t + (1 − m)·θ_s`` for parameters only. Unlike :func:`ema_update_`, BatchNorm
    statistics are not copied from the student: DINO's teacher runs its BatchNorm layers in
    training mode, so its running statistics follow its own activations, and they are the ones
    that fit its weights when the teacher is evaluated."""
    teacher_params = list(teacher.parameters())
    student_params = [p.detach() for p in student.parameters()]
    if len(teacher_params) != len(student_params):
        raise ValueError("teacher and student differ in structure")
    if teacher_params:
        torch._foreach_mul_(teacher_params, momentum)
        torch._foreach_add_(teacher_params, student_params, alpha=1.0 - momentum)


def teacher_mode_(teacher: nn.Module) -> None:
    """Every layer of ``teacher`` in eval mode except BatchNorm, which follows the method's mode."""
    for module in teacher.modules():
        if not isinstance(module, _BatchNorm):
            module.training = False  # this module only: train() would recurse into the BatchNorm layers


def _check_config(cfg: DINOConfig) -> None:
    """One-line errors for values that cannot work."""
    for name in ("out_dim", "head_hidden_dim", "head_bottleneck_dim", "head_layers"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name}={getattr(cfg, name)} must be a positive integer")
    for name in ("student_temp", "teacher_temp", "warmup_teacher_temp"):
        if not getattr(cfg, name) > 0:
            raise ConfigError(f"{name}={getattr(cfg, name)} must be > 0 (DINO: student 0.1, teacher 0.04-0.07)")
    if not 0.0 <= cfg.center_momentum < 1.0:
        raise ConfigError(f"center_momentum={cfg.center_momentum} must be in [0, 1) (DINO: 0.9)")
    if not 0.0 <= cfg.teacher_momentum <= cfg.final_teacher_momentum <= 1.0:
        raise ConfigError(f"teacher_momentum={cfg.teacher_momentum} and final_teacher_momentum="
                          f"{cfg.final_teacher_momentum} must satisfy 0 <= start <= final <= 1 (DINO: 0.996, 1.0)")
