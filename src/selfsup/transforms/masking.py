"""Blockwise patch masks for masked image modelling (BEiT, Bao et al. 2022, Alg. 1; iBOT, DINOv2).

Masking contiguous blocks rather than independent patches makes the task harder to solve by
copying neighbours. A mask is built block by block: each block has a random area of at least
``min_block_patches`` and a random aspect ratio in ``[0.3, 1/0.3]`` and is placed at a random
position; blocks are added until the requested number of patches is masked. Like BEiT's
generator, a block may not add more patches than are still missing; when no block fits any more
(small grids), the remaining patches are drawn uniformly so the ratio is exact.

Example:
    >>> masks = sample_masks(batch=256, grid=(7, 7), ratio_range=(0.1, 0.5), mask_probability=0.5)
    >>> masks.shape, masks.dtype        # (256, 49) bool: half of the images have 10-50 % masked
"""

from __future__ import annotations

import math
import random
from typing import Optional, Tuple

import torch
from torch import Tensor

BLOCK_ATTEMPTS = 10  # BEiT tries 10 placements per block before giving up on that block
ASPECT_RANGE = (0.3, 1 / 0.3)  # BEiT's range of block aspect ratios


def block_mask(
    grid: Tuple[int, int],
    num_masked: int,
    rng: random.Random,
    min_block_patches: int = 4,
    aspect_range: Tuple[float, float] = ASPECT_RANGE,
) -> Tensor:
    """One ``(h, w)`` bool mask with exactly ``num_masked`` True entries, mostly in blocks.

    Args:
        grid: ``(h, w)`` patch grid.
        num_masked: patches to mask, ``0 <= num_masked <= h·w``.
        rng: Python random generator (masks are built with scalar draws; torch's are ~50× slower).
        min_block_patches: smallest block area (BEiT: 16 on a 14×14 grid, iBOT/DINOv2: 4).
        aspect_range: range of block aspect ratios, drawn log-uniformly.
    """
    h, w = grid
    if not 0 <= num_masked <= h * w:
        raise ValueError(f"num_masked={num_masked} must be in [0, {h * w}] for a {h}x{w} grid")
    mask = torch.zeros(h, w, dtype=torch.bool)
    log_lo, log_hi = math.log(aspect_range[0]), math.log(aspect_range[1])
    count = 0
    while count < num_masked:
        missing = num_masked - count
        added = 0
        for _ in range(BLOCK_ATTEMPTS):
            area = rng.uniform(min(min_block_patches, missing), missing)
            aspect = math.exp(rng.uniform(log_lo, log_hi))
            bh, bw = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if not (1 <= bh <= h and 1 <= bw <= w):
                continue
            top, left = rng.randint(0, h - bh), rng.randint(0, w - bw)
            block = mask[top:top + bh, left:left + bw]
            new = bh * bw - int(block.sum())
            if 0 < new <= missing:
                block.fill_(True)
                added = new
                break
        if added == 0:
            break
        count += added
    if count < num_masked:  # no block fits: complete with uniformly drawn patches
        free = (~mask).flatten().nonzero().flatten().tolist()
        for index in rng.sample(free, num_masked - count):
            mask.view(-1)[index] = True
    return mask


def sample_masks(
    batch: int,
    grid: Tuple[int, int],
    ratio_range: Tuple[float, float] = (0.1, 0.5),
    mask_probability: float = 0.5,
    min_block_patches: int = 4,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Masks for a batch: ``round(batch · mask_probability)`` images, chosen at random, get a
    block mask of ratio ``r ~ U(ratio_range)`` (``round(r·N)`` patches); the others none.

    iBOT masks each image with probability 0.5 and ratio U(0.1, 0.5) (Zhou et al. 2022, implementation details);
    DINOv2 masks exactly that fraction of each batch (``mask_sample_probability``), as here.

    Args:
        batch: ``B``.
        grid: ``(h, w)`` patch grid, ``N = h·w``.
        ratio_range: ``(r_min, r_max)`` in ``[0, 1]``.
        mask_probability: fraction of images that are masked.
        generator: torch generator for reproducibility (default: torch's global one).

    Returns:
        ``(B, N)`` bool, True where the patch is masked (row-major over the grid).
    """
    lo, hi = ratio_range
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"ratio_range=({lo}, {hi}) must satisfy 0 <= min <= max <= 1")
    if not 0.0 <= mask_probability <= 1.0:
        raise ValueError(f"mask_probability={mask_probability} must be in [0, 1]")
    h, w = grid
    # One draw from torch's generator seeds the scalar generator: runs stay reproducible under the
    # engine's seeding and resumption, which restore torch's RNG state.
    rng = random.Random(int(torch.randint(0, 2**62, (1,), generator=generator)))
    masks = torch.zeros(batch, h * w, dtype=torch.bool)
    for b in rng.sample(range(batch), round(batch * mask_probability)):
        num_masked = round(rng.uniform(lo, hi) * h * w)
        masks[b] = block_mask(grid, num_masked, rng, min_block_patches).flatten()
    return masks
