"""Helpers shared by the pretext tasks: batched patch crops and the resized canvas patch tasks cut from."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def crop_patches(images: Tensor, top: Tensor, left: Tensor, size: int) -> Tensor:
    """Square crops at per-image, per-patch positions, gathered in one indexing op.

    Args:
        images: ``(B, C, H, W)``.
        top, left: ``(B, K)`` integer top-left corners; every crop must lie inside the image.
        size: side ``S`` of the crops.

    Returns:
        ``(B, K, C, S, S)``: ``out[b, k] == images[b, :, top[b, k]:top[b, k]+S, left[b, k]:left[b, k]+S]``.
    """
    batch = images.shape[0]
    steps = torch.arange(size, device=images.device)
    rows = (top.to(images.device)[..., None] + steps)[..., :, None]  # (B, K, S, 1)
    cols = (left.to(images.device)[..., None] + steps)[..., None, :]  # (B, K, 1, S)
    owner = torch.arange(batch, device=images.device).view(batch, 1, 1, 1)
    # Channels-last indexing keeps the advanced-index dims in front: (B, K, S, S, C).
    return images.permute(0, 2, 3, 1)[owner, rows, cols].permute(0, 1, 4, 2, 3)


def resize_canvas(images: Tensor, size: Optional[int]) -> Tensor:
    """Bilinearly resize ``(B, C, H, W)`` images to ``size × size`` (unchanged when ``size`` is None
    or already met). Patch tasks on small images cut their grid from this larger canvas so that
    every patch keeps a receptive field the backbone can use; it adds no information."""
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def _randint(low: int, high: int, size: Tuple[int, ...], generator: Optional[torch.Generator]) -> Tensor:
    """``torch.randint(low, high)`` inclusive of ``high``, on the CPU (tiny parameter tensors)."""
    return torch.randint(low, high + 1, size, generator=generator)


__all__ = ["crop_patches", "resize_canvas"]
