"""Context prediction (Doersch, Gupta, Efros, ICCV 2015): a centre patch and one of its 8 neighbours
from a 3×3 grid with gaps and jitter, and the paper's guards against chromatic aberration.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.errors import ConfigError
from selfsup.transforms.pretext.common import _randint, crop_patches


#: ``(row, col)`` grid offset of the neighbour for each relative-location label 0..7: the 8
#: cells around the centre of a 3×3 grid in reading order (Doersch et al. 2015, Fig. 2).
NEIGHBOUR_OFFSETS: Tuple[Tuple[int, int], ...] = (
    (-1, -1), (-1, 0), (-1, 1),
    (0, -1), (0, 1),
    (1, -1), (1, 0), (1, 1),
)

#: RGB direction of the green-magenta axis that chromatic aberration shifts (Doersch et al. 2015, Sec. 3.1).
GREEN_MAGENTA = (-1.0, 2.0, -1.0)


class PatchPair(NamedTuple):
    """A relative-location example per image.

    Attributes:
        centre: ``(B, C, P, P)`` the middle patch of the 3×3 grid.
        neighbour: ``(B, C, P, P)`` one of the 8 surrounding patches.
        labels: ``(B,)`` int64 in ``[0, 8)``, the index of the neighbour in :data:`NEIGHBOUR_OFFSETS`.
        centre_origin, neighbour_origin: ``(B, 2)`` ``(top, left)`` pixel corners of the patches.
    """

    centre: Tensor
    neighbour: Tensor
    labels: Tensor
    centre_origin: Tensor
    neighbour_origin: Tensor


def grid_span(patch_size: int, gap: int, jitter: int) -> int:
    """Pixels a 3×3 grid of ``patch_size`` patches, ``gap`` apart, occupies with ``±jitter`` room."""
    return 3 * patch_size + 2 * gap + 2 * jitter


def sample_patch_pairs(images: Tensor, patch_size: int, gap: int, jitter: int,
                       generator: Optional[torch.Generator] = None) -> PatchPair:
    """Centre patch and a random neighbour of a randomly placed 3×3 grid (Doersch et al. 2015, Sec. 3).

    The grid's cells are ``patch_size`` wide and ``gap`` pixels apart, and every patch is moved
    by an independent jitter in ``[-jitter, jitter]`` along each axis: the gap stops the
    network matching continuous edges and textures across the border, the jitter stops it
    reading the offset from exactly aligned lines (Sec. 3.1). The grid's position in the image
    is uniform over the positions where every jittered patch fits.

    Args:
        images: ``(B, C, H, W)``; needs ``min(H, W) >= grid_span(patch_size, gap, jitter)``.
    """
    batch, _, height, width = images.shape
    span = grid_span(patch_size, gap, jitter)
    if patch_size < 1 or gap < 0 or jitter < 0:
        raise ConfigError(f"relative location needs patch_size >= 1, gap >= 0, jitter >= 0; got "
                          f"patch_size={patch_size}, gap={gap}, jitter={jitter}")
    if span > min(height, width):
        raise ConfigError(f"a 3x3 grid of patch_size={patch_size} with gap={gap} and jitter={jitter} needs "
                          f"{span} px but the canvas is {height}x{width}; use a larger canvas_size or smaller patches")
    stride = patch_size + gap
    # Top-left of the un-jittered grid, then of each of the two patches (grid cell (1, 1) and a neighbour).
    grid_origin = torch.stack([_randint(jitter, height - span + jitter, (batch,), generator),
                               _randint(jitter, width - span + jitter, (batch,), generator)], dim=1)  # (B, 2)
    labels = torch.randint(0, len(NEIGHBOUR_OFFSETS), (batch,), generator=generator)
    offsets = torch.tensor(NEIGHBOUR_OFFSETS)[labels]  # (B, 2) row/col steps in {-1, 0, 1}
    centre_cell = grid_origin + stride
    neighbour_cell = centre_cell + offsets * stride
    shifts = _randint(-jitter, jitter, (batch, 2, 2), generator)  # (B, patch, axis)
    centre_origin = centre_cell + shifts[:, 0]
    neighbour_origin = neighbour_cell + shifts[:, 1]
    origins = torch.stack([centre_origin, neighbour_origin], dim=1)  # (B, 2, 2)
    patches = crop_patches(images, origins[..., 0], origins[..., 1], patch_size)  # (B, 2, C, P, P)
    return PatchPair(patches[:, 0], patches[:, 1], labels.to(images.device), centre_origin, neighbour_origin)


def drop_colour_channels(patches: Tensor, noise_ratio: float = 0.01,
                         generator: Optional[torch.Generator] = None) -> Tensor:
    """Colour dropping (Doersch et al. 2015, Sec. 3.1): keep one random channel per patch and
    replace the others by Gaussian noise with std ``noise_ratio`` × the kept channel's std, so
    the network cannot locate a patch from chromatic aberration. A no-op on 1-channel patches.

    Args:
        patches: ``(N, C, P, P)``.

    Returns:
        ``(N, C, P, P)`` new tensor (or ``patches`` itself when ``C == 1``).
    """
    count, channels = patches.shape[:2]
    if channels == 1:
        return patches
    keep = torch.randint(0, channels, (count,), generator=generator).to(patches.device)
    kept = patches[torch.arange(count, device=patches.device), keep]  # (N, P, P)
    noise_std = noise_ratio * kept.flatten(1).std(dim=1)  # (N,)
    noise = torch.randn(patches.shape, generator=generator).to(patches) * noise_std.view(-1, 1, 1, 1)
    is_kept = F.one_hot(keep, channels).bool().view(count, channels, 1, 1)
    return torch.where(is_kept, patches, noise)


def project_out_green_magenta(patches: Tensor) -> Tensor:
    """Projection (Doersch et al. 2015, Sec. 3.1): remove each pixel's component along the
    green-magenta axis ``(-1, 2, -1)/√6``, the colour direction chromatic aberration shifts.
    A no-op on 1-channel patches.

    Args:
        patches: ``(N, C, P, P)``.
    """
    if patches.shape[1] == 1:
        return patches
    if patches.shape[1] != 3:
        raise ConfigError(f"chromatic_guard 'project' needs 1 or 3 channels, got {patches.shape[1]}")
    axis = torch.tensor(GREEN_MAGENTA, dtype=patches.dtype, device=patches.device)
    axis = (axis / axis.norm()).view(1, 3, 1, 1)
    return patches - (patches * axis).sum(dim=1, keepdim=True) * axis


__all__ = ["GREEN_MAGENTA", "NEIGHBOUR_OFFSETS", "PatchPair", "drop_colour_channels", "grid_span", "project_out_green_magenta", "sample_patch_pairs"]
