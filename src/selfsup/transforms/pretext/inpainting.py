"""The masked regions of context encoders (Pathak et al., CVPR 2016): a centre region or random
rectangles, eroded for the loss weights, filled before the encoder sees them.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.errors import ConfigError
from selfsup.transforms.pretext.common import _randint


def centre_region_mask(batch: int, height: int, width: int, fraction: float = 0.5,
                       device: Optional[torch.device] = None) -> Tensor:
    """The central square region (Pathak et al. 2016, Sec. 3.3: 64×64 in a 128×128 image).

    Args:
        fraction: side of the region relative to each image side.

    Returns:
        ``(B, 1, H, W)`` bool, True inside the region.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"mask_fraction={fraction} must be in (0, 1)")
    rows, cols = round(height * fraction), round(width * fraction)
    top, left = (height - rows) // 2, (width - cols) // 2
    mask = torch.zeros(batch, 1, height, width, dtype=torch.bool, device=device)
    mask[:, :, top:top + rows, left:left + cols] = True
    return mask


def random_rectangles_mask(batch: int, height: int, width: int, num_rectangles: int = 4,
                           device: Optional[torch.device] = None,
                           generator: Optional[torch.Generator] = None) -> Tensor:
    """Random blocks (Pathak et al. 2016, Sec. 3.3): the union of ``num_rectangles`` possibly
    overlapping rectangles with sides uniform in ``[side/8, side·f]``, ``f = 1/(2·√num_rectangles)``,
    so the union covers at most 1/4 of the image, as the paper's random masks do.

    Returns:
        ``(B, 1, H, W)`` bool, True inside the union.
    """
    if num_rectangles < 1:
        raise ConfigError(f"mask_rectangles={num_rectangles} must be >= 1")
    shape = (batch, num_rectangles)
    largest = 1.0 / (2.0 * math.sqrt(num_rectangles))  # each rectangle <= 1/(4n) of the area
    sides = []
    for size in (height, width):
        low, high = max(1, math.ceil(size / 8)), max(1, math.floor(size * largest))
        sides.append(_randint(min(low, high), high, shape, generator))
    rows, cols = sides
    top = (torch.rand(shape, generator=generator) * (height - rows + 1)).long()
    left = (torch.rand(shape, generator=generator) * (width - cols + 1)).long()
    y = torch.arange(height).view(1, 1, height, 1)
    x = torch.arange(width).view(1, 1, 1, width)
    inside = ((y >= top[..., None, None]) & (y < (top + rows)[..., None, None])
              & (x >= left[..., None, None]) & (x < (left + cols)[..., None, None]))  # (B, n, H, W)
    return inside.any(dim=1, keepdim=True).to(device)


def erode_mask(mask: Tensor, pixels: int) -> Tensor:
    """Shrink a ``(B, 1, H, W)`` bool mask by ``pixels`` (a square structuring element).

    The context encoder fills only the eroded region and predicts the whole one: the band of
    width ``overlap`` it predicts but sees overlaps the context (Pathak et al. 2016, Sec. 3.3).
    """
    if pixels <= 0:
        return mask
    outside = (~mask).float()
    grown = F.max_pool2d(outside, kernel_size=2 * pixels + 1, stride=1, padding=pixels)
    return grown == 0


def fill_holes(images: Tensor, holes: Tensor, value: float = 0.0) -> Tensor:
    """Images with the ``holes`` ``(B, 1, H, W)`` set to ``value``: 0 is the dataset mean after
    normalisation, the paper's fill (Pathak et al. 2016, Sec. 3.3)."""
    return images.masked_fill(holes, value)


__all__ = ["centre_region_mask", "erode_mask", "fill_holes", "random_rectangles_mask"]
