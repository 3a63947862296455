"""Deterministic evaluation preprocessing and its inverse for display."""

from __future__ import annotations

from typing import Callable

import torch
from torchvision.transforms import v2

from selfsup.data.base import DatasetInfo

CROP_FRACTION = 0.875  # resize to size/0.875 then centre-crop: the usual ImageNet evaluation (224 from 256)
LARGE = 128  # from this side length on, images are treated ImageNet-style


def eval_transform(info: DatasetInfo, image_size: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 ``(C, H, W)`` -> normalised float32 ``(C, S, S)``, ``S = image_size or info.image_size``.

    Large sizes resize the shorter side to ``S / 0.875`` and centre-crop; small images (CIFAR,
    Fashion-MNIST, STL-10) are only resized to ``S``, which leaves native-size images untouched.
    """
    size = image_size or info.image_size
    resize = round(size / CROP_FRACTION) if size >= LARGE else size
    return v2.Compose([
        v2.Resize(resize, antialias=True),
        v2.CenterCrop(size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(info.mean, info.std),
    ])


def denormalize(x: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """Undo the normalisation of ``(C, H, W)`` or ``(B, C, H, W)`` images, clamped to [0, 1]."""
    mean = torch.tensor(info.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    std = torch.tensor(info.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x * std + mean).clamp(0.0, 1.0)
