"""CPC: Contrastive Predictive Coding on images.

van den Oord, Li, Vinyals, "Representation Learning with Contrastive Predictive Coding" (2018),
https://arxiv.org/abs/1807.03748, Sec. 3.3; Hénaff et al., "Data-Efficient Image Recognition with
Contrastive Predictive Coding" (CPC v2, 2019), https://arxiv.org/abs/1905.09272.

The image is cut into a grid of overlapping patches (the paper: 64×64 patches with stride 32 on
256×256 images, a 7×7 grid; here by default 8×8 with stride 4, a 6×6 grid on 28×28 images). The
backbone encodes every patch on its own into ``z`` (mean-pooled to one vector per patch). A masked,
PixelCNN-style context network summarises the rows ``<= r`` into ``c_r``, and a linear map per
offset predicts the patches ``k = 1..K`` rows below: ``ẑ = W_k c_r`` (Eq. 3). InfoNCE (Eq. 4)
makes each prediction pick its true patch among the other patches of the batch.

The representation evaluated is the backbone applied to the patch grid, averaged over the
patches (:class:`PatchGridEncoder`), so kNN and linear probes see one ``(B, D)`` vector per image.
Optional from CPC v2: a random horizontal flip of every patch on its own (a patch-level
augmentation, so neighbouring patches cannot be matched by low-level continuity).

BatchNorm caveat: in training mode the backbone's BatchNorm statistics are computed over all
patches of the batch, which mixes rows a little; CPC v1 uses no BatchNorm and CPC v2 layer
normalisation for this reason. The context network here has no normalisation, so it is exactly
causal; the backbone is whatever ``--backbone`` says (exactly causal in eval mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import torch
from torch import Tensor, nn

from selfsup.errors import ConfigError
from selfsup.heads.cpc_context import CPCContextNetwork, RowPredictors
from selfsup.losses.cpc import CPCInfoNCELoss
from selfsup.methods.base import DataSpec, Method, MethodConfig, MethodOutput
from selfsup.methods.registry import METHODS
from selfsup.transforms import ViewConfig


def patch_grid_shape(height: int, width: int, patch_size: int, stride: int) -> Tuple[int, int]:
    """``(Gh, Gw)``: how many ``patch_size`` patches fit with ``stride`` (a border that fits no
    whole patch is dropped)."""
    if height < patch_size or width < patch_size:
        raise ConfigError(f"cpc patch_size={patch_size} does not fit in {height}x{width} images; "
                          f"use a patch_size <= {min(height, width)}")
    return (height - patch_size) // stride + 1, (width - patch_size) // stride + 1


class PatchGridEncoder(nn.Module):
    """The backbone applied to every patch of a grid: whole images → patch embeddings or their mean.

    It owns no parameters besides the backbone it wraps, so its state dict is the backbone's
    (under ``backbone.``), and evaluation can rebuild it around any backbone.

    Args:
        backbone: maps ``(N, C, p, p)`` patches to ``(N, D)``.
        patch_size: side ``p`` of the square patches.
        patch_stride: step between neighbouring patches (``< p`` overlaps them).

    Shapes:
        :meth:`encode_patches`: ``(B, C, H, W) → (B, Gh, Gw, D)``; ``forward``: ``(B, C, H, W) → (B, D)``.
    """

    def __init__(self, backbone: nn.Module, patch_size: int, patch_stride: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.patch_size = patch_size
        self.patch_stride = patch_stride
        self.feature_dim = backbone.feature_dim

    def patches(self, images: Tensor) -> Tensor:
        """``(B, C, H, W) → (B, Gh, Gw, C, p, p)``: the patches, row by row (views, not copies)."""
        rows, cols = patch_grid_shape(images.shape[2], images.shape[3], self.patch_size, self.patch_stride)
        p, s = self.patch_size, self.patch_stride
        grid = images.unfold(2, p, s).unfold(3, p, s)  # (B, C, Gh, Gw, p, p)
        return grid.permute(0, 2, 3, 1, 4, 5)

    def encode_patches(self, images: Tensor, flip: Optional[Tensor] = None) -> Tensor:
        """Embed every patch: ``(B, C, H, W) → (B, Gh, Gw, D)``.

        Args:
            flip: optional ``(B, Gh, Gw)`` bool, patches to mirror horizontally before encoding.
        """
        grid = self.patches(images)
        batch, rows, cols = grid.shape[:3]
        patches = grid.reshape(batch * rows * cols, *grid.shape[3:])  # (B·Gh·Gw, C, p, p)
        if flip is not None:
            patches = torch.where(flip.reshape(-1, 1, 1, 1), patches.flip(-1), patches)
        return self.backbone(patches).view(batch, rows, cols, -1)

    def forward(self, images: Tensor) -> Tensor:
        return self.encode_patches(images).mean(dim=(1, 2))


@dataclass
class CPCConfig(MethodConfig):
    patch_size: int = 8
    """Side of the square patches in pixels (the paper: 64 on 256×256 images)."""
    patch_stride: int = 4
    """Step between patches; half the patch size overlaps them by 50 % as in the paper (32 for 64)."""
    prediction_steps: int = 5
    """K, the largest offset predicted (the paper predicts up to 5 rows on its 7×7 grid); offsets
    that reach past the grid's last row are skipped."""
    context_dim: int = 0
    """Width of the context network; 0 = the patch-embedding size D."""
    context_blocks: int = 5
    """Causal residual blocks of the context network (PixelCNN-style)."""
    context_kernel: int = 3
    """Odd side of the context network's causal convolutions (each block sees kernel−1 more rows up)."""
    num_negatives: int = 0
    """0: every other patch of the batch is a negative (the paper); M > 0: M patches drawn per step."""
    patch_flip_prob: float = 0.0
    """Probability to mirror each patch on its own during training (CPC v2's patch-level augmentation)."""


def _validate(cfg: CPCConfig) -> None:
    if cfg.patch_size < 1 or cfg.patch_stride < 1:
        raise ConfigError(f"cpc patch_size={cfg.patch_size} and patch_stride={cfg.patch_stride} must be >= 1 "
                          "(e.g. 8 and 4 on 28x28 images)")
    if cfg.prediction_steps < 1:
        raise ConfigError(f"cpc prediction_steps={cfg.prediction_steps} must be >= 1 (the paper: 5)")
    if cfg.context_dim < 0 or cfg.context_blocks < 0:
        raise ConfigError(f"cpc context_dim={cfg.context_dim} and context_blocks={cfg.context_blocks} must be >= 0")
    if cfg.context_kernel < 1 or cfg.context_kernel % 2 == 0:
        raise ConfigError(f"cpc context_kernel={cfg.context_kernel} must be a positive odd number (e.g. 3)")
    if cfg.num_negatives < 0:
        raise ConfigError(f"cpc num_negatives={cfg.num_negatives} must be >= 0 (0 = all patches of the batch)")
    if not 0.0 <= cfg.patch_flip_prob <= 1.0:
        raise ConfigError(f"cpc patch_flip_prob={cfg.patch_flip_prob} is not a probability; use a value in [0, 1]")


@METHODS.register("cpc")
class CPC(Method):
    """CPC: predict patch embeddings rows ahead from a masked context, with InfoNCE."""

    Config = CPCConfig
    config: CPCConfig
    num_views = 1

    def __init__(
        self, backbone: nn.Module, config: Optional[CPCConfig] = None, data: Optional[DataSpec] = None
    ) -> None:
        super().__init__(backbone, config, data)
        cfg = self.config
        _validate(cfg)
        dim = backbone.feature_dim
        self.context = CPCContextNetwork(dim, cfg.context_dim or dim, cfg.context_blocks, cfg.context_kernel)
        self.predictors = RowPredictors(self.context.output_dim, dim, cfg.prediction_steps)
        self.criterion = CPCInfoNCELoss(cfg.num_negatives)

    @classmethod
    def default_views(cls, **overrides: Any) -> ViewConfig:
        """One lightly augmented view (random crop at scale (0.5, 1) and flip): CPC makes its own
        task from the patch grid."""
        return ViewConfig.crop_flip(**overrides)

    def encoder(self) -> PatchGridEncoder:
        """Whole images ``(B, C, H, W)`` → mean patch embedding ``(B, D)`` (a view over the backbone)."""
        return PatchGridEncoder(self.backbone, self.config.patch_size, self.config.patch_stride)

    def forward(self, views: List[Tensor], indices: Optional[Tensor] = None) -> MethodOutput:
        self.check_views(views)
        images = views[0]
        encoder = self.encoder()
        flip = None
        if self.training and self.config.patch_flip_prob > 0:
            rows, cols = patch_grid_shape(images.shape[2], images.shape[3], encoder.patch_size, encoder.patch_stride)
            flip = torch.rand(images.shape[0], rows, cols, device=images.device) < self.config.patch_flip_prob
        z = encoder.encode_patches(images, flip)  # (B, Gh, Gw, D)
        if z.shape[1] < 2:
            raise ConfigError(f"cpc needs at least 2 rows of patches; {images.shape[2]}-pixel high images give "
                              f"{z.shape[1]} with patch_size={encoder.patch_size}, patch_stride={encoder.patch_stride}")
        context = self.context(z)  # (B, Gh, Gw, C), row r sees rows <= r only
        predictions = self.predictors(context)  # k = 1..K: (B, Gh - k, Gw, D)
        terms = self.criterion.terms(predictions, z)  # (K,)
        logs = {f"loss_k{k}": t.detach() for k, t in enumerate(terms, start=1)}
        return MethodOutput(loss=terms.mean(), logs=logs, features=z.detach().mean(dim=(1, 2)))
