"""Jigsaw puzzles (Noroozi & Favaro, ECCV 2016): the maximal-Hamming permutation set, shuffled tiles
and their per-tile normalisation.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from selfsup.errors import ConfigError
from selfsup.transforms.pretext.common import _randint, crop_patches


@functools.lru_cache(maxsize=4)
def _all_permutations(num_tiles: int) -> Tensor:
    """Every permutation of ``range(num_tiles)`` in lexicographic order, ``(num_tiles!, num_tiles)`` uint8."""
    return torch.tensor(list(itertools.permutations(range(num_tiles))), dtype=torch.uint8)


def greedy_permutation_set(count: int, num_tiles: int = 9, seed: int = 0) -> Tuple[Tensor, Tensor]:
    """A set of ``count`` permutations far apart in Hamming distance (Noroozi & Favaro 2016, Sec. 3.3).

    The greedy algorithm of the paper's Algorithm 1: start from a random permutation, then
    repeatedly add the candidate farthest from the set so far. "Farthest" is the *minimum*
    Hamming distance to the chosen ones (max-min selection); the paper's Algorithm 1 ranks by the
    summed distance, but it reports the minimum distance as the quantity that matters
    (Table 3: larger minimum distance -> better transfer), and max-min maximises it greedily.
    Ties go to the first candidate in lexicographic order, so a seed fixes the whole set.

    Max-min selection promises: the distances at which permutations are added never increase,
    and the minimum pairwise distance of the set equals the last of them.

    Args:
        count: number of permutations ``N`` (paper: 1000; at most ``num_tiles!``).
        num_tiles: tiles per puzzle (9 for a 3×3 grid).
        seed: seed of the random first permutation.

    Returns:
        ``permutations (N, num_tiles)`` int64, and ``added_at (N,)`` int64: the minimum Hamming
        distance of each permutation to those before it (``num_tiles`` for the first).
    """
    candidates = _all_permutations(num_tiles)
    if not 1 <= count <= len(candidates):
        raise ConfigError(f"num_permutations={count} must be in [1, {len(candidates)}] for {num_tiles} tiles")
    by_position = candidates.T.contiguous()  # (num_tiles, num_tiles!): one contiguous row per tile slot
    first = int(torch.randint(len(candidates), (1,), generator=torch.Generator().manual_seed(seed)))
    chosen = [first]
    added_at = [num_tiles]
    # Hamming distance from every candidate to its nearest chosen permutation; chosen ones sit at 0.
    nearest = torch.full((len(candidates),), num_tiles, dtype=torch.uint8)
    distance = torch.empty_like(nearest)
    for _ in range(count - 1):
        newest = candidates[chosen[-1]]
        distance.zero_()
        for slot in range(num_tiles):  # row-wise sums: ~4x faster than (candidates != newest).sum(1)
            distance += by_position[slot] != newest[slot]
        torch.minimum(nearest, distance, out=nearest)
        best = int(torch.argmax(nearest))  # the first maximum: deterministic tie-breaking
        chosen.append(best)
        added_at.append(int(nearest[best]))
    return candidates[chosen].long(), torch.tensor(added_at)


class JigsawPuzzle(NamedTuple):
    """Shuffled tiles per image.

    Attributes:
        tiles: ``(B, T, C, S, S)``; slot ``i`` holds the tile cut from grid cell ``order[b, i]``.
        labels: ``(B,)`` int64 index of the permutation in the permutation set.
        order: ``(B, T)`` the permutation applied (``permutations[labels]``).
        origins: ``(B, T, 2)`` ``(top, left)`` pixel corner of the tile cut from each grid cell,
            in grid (reading) order, before shuffling.
    """

    tiles: Tensor
    labels: Tensor
    order: Tensor
    origins: Tensor


def _tile_grid(size: Tuple[int, int], grid: int, tile_size: int) -> Tuple[int, Tensor, Tensor]:
    """``(cell, cell_top (T,), cell_left (T,))``: the ``grid × grid`` cells of side
    ``cell = min(H, W) // grid`` covering the centre of an ``(H, W)`` canvas, in reading order."""
    height, width = size
    cell = min(height, width) // grid
    if not 1 <= tile_size <= cell:
        raise ConfigError(f"tile_size={tile_size} must be in [1, {cell}] (cell side of a {grid}x{grid} grid on a "
                          f"{height}x{width} canvas); use a larger canvas_size or a smaller tile_size")
    cells = torch.arange(grid * grid)
    cell_top = (height - grid * cell) // 2 + (cells // grid) * cell
    cell_left = (width - grid * cell) // 2 + (cells % grid) * cell
    return cell, cell_top, cell_left


def sample_jigsaw_tiles(images: Tensor, permutations: Tensor, tile_size: int,
                        generator: Optional[torch.Generator] = None) -> JigsawPuzzle:
    """Cut a ``g×g`` grid of tiles and shuffle it with a random permutation of the set
    (Noroozi & Favaro 2016, Sec. 3.2: a 225×225 crop split into 75×75 cells, a random 64×64 tile
    from each cell, so tiles are separated by random gaps and cannot be matched by edge continuity).

    The grid covers the central ``g·cell`` pixels with ``cell = min(H, W) // g``.

    Args:
        images: ``(B, C, H, W)``.
        permutations: ``(N, T)`` with ``T = g²`` tiles.
        tile_size: side of a tile, at most ``cell``.
    """
    batch = images.shape[0]
    num_tiles = permutations.shape[1]
    grid = math.isqrt(num_tiles)
    if grid * grid != num_tiles:
        raise ConfigError(f"permutations of {num_tiles} tiles do not form a square grid; use 4, 9, 16 ... tiles")
    cell, cell_top, cell_left = _tile_grid(images.shape[-2:], grid, tile_size)
    inside = _randint(0, cell - tile_size, (batch, num_tiles, 2), generator)  # random tile position in its cell
    origins = torch.stack([cell_top + inside[..., 0], cell_left + inside[..., 1]], dim=-1)  # (B, T, 2)
    tiles = crop_patches(images, origins[..., 0], origins[..., 1], tile_size)  # (B, T, C, S, S)
    labels = torch.randint(0, permutations.shape[0], (batch,), generator=generator).to(permutations.device)
    order = permutations[labels]  # (B, T)
    shuffled = tiles[torch.arange(batch, device=images.device)[:, None], order.to(images.device)]
    return JigsawPuzzle(shuffled, labels.to(images.device), order, origins)


def centred_tiles(images: Tensor, grid: int, tile_size: int) -> Tensor:
    """The ``grid × grid`` tiles of :func:`sample_jigsaw_tiles` without randomness: each tile
    centred in its cell, in reading order — how an image is cut when it is evaluated.

    Args:
        images: ``(B, C, H, W)``.

    Returns:
        ``(B, grid², C, S, S)``.
    """
    batch = images.shape[0]
    cell, cell_top, cell_left = _tile_grid(images.shape[-2:], grid, tile_size)
    offset = (cell - tile_size) // 2
    return crop_patches(images, (cell_top + offset).expand(batch, -1), (cell_left + offset).expand(batch, -1), tile_size)


def normalize_tiles(tiles: Tensor, eps: float = 1e-2) -> Tensor:
    """Normalise each tile by its own mean and std over its pixels and channels (Noroozi & Favaro
    2016, Sec. 3.2: "we normalize the mean and the standard deviation of each patch independently",
    so low-level statistics shared by neighbouring tiles are no shortcut).

    ``eps`` is added to the variance: on normalised images it keeps near-constant tiles (the
    black background of Fashion-MNIST) from having their interpolation noise blown up.

    Args:
        tiles: ``(..., C, S, S)``.
    """
    flat = tiles.flatten(-3)
    mean = flat.mean(dim=-1)[..., None, None, None]
    var = flat.var(dim=-1, unbiased=False)[..., None, None, None]
    return (tiles - mean) / torch.sqrt(var + eps)


__all__ = ["JigsawPuzzle", "centred_tiles", "greedy_permutation_set", "normalize_tiles", "sample_jigsaw_tiles"]
