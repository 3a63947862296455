"""Rotation prediction (Gidaris, Singh, Komodakis, ICLR 2018): the four 90° rotations of every image."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from selfsup.errors import ConfigError


NUM_ROTATIONS = 4


def rotate_batch(images: Tensor) -> Tuple[Tensor, Tensor]:
    """All four rotations of every image (Gidaris et al. 2018, Sec. 2.2: each image enters the
    batch with its 0°, 90°, 180° and 270° copies, which the paper found better than sampling one).

    Args:
        images: ``(B, C, H, W)`` with ``H == W``.

    Returns:
        ``rotated (4B, C, H, W)`` and ``labels (4B,)``: row ``k·B + i`` is image ``i`` rotated by
        ``k·90°`` counter-clockwise (``torch.rot90`` with ``k``), and its label is ``k``.
    """
    if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise ConfigError(f"rotation needs square (B, C, H, W) views, got shape {tuple(images.shape)}; "
                          "set views.image_size so crops are square")
    rotated = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(NUM_ROTATIONS)])
    labels = torch.arange(NUM_ROTATIONS, device=images.device).repeat_interleave(images.shape[0])
    return rotated, labels


__all__ = ["NUM_ROTATIONS", "rotate_batch"]
