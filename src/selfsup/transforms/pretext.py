"""Inputs and targets of the classic pretext tasks, made from a batch of normalised views.

Every function takes ``(B, C, H, W)`` float images and draws its randomness from torch's global
RNG (or an explicit ``generator``), so the engine's RNG capture makes a resumed run draw the
same puzzles. Everything is batched: no Python loop runs over the images of a batch.

* :func:`rotate_batch` — the four 90° rotations of every image (Gidaris et al. 2018).
* :func:`sample_patch_pairs` — centre patch + one of its 8 neighbours from a 3×3 grid with gaps
  and jitter (Doersch et al. 2015); :func:`drop_colour_channels` and
  :func:`project_out_green_magenta` are that paper's guards against chromatic aberration.
* :func:`greedy_permutation_set`, :func:`sample_jigsaw_tiles`, :func:`centred_tiles`, :func:`normalize_tiles` — jigsaw
  puzzles (Noroozi & Favaro 2016).
* :func:`centre_region_mask`, :func:`random_rectangles_mask`, :func:`erode_mask`,
  :func:`fill_holes` — the masked regions of context encoders (Pathak et al. 2016).
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.errors import ConfigError

NUM_ROTATIONS = 4

#: ``(row, col)`` grid offset of the neighbour for each relative-location label 0..7: the 8
#: cells around the centre of a 3×3 grid in reading order (Doersch et al. 2015, Fig. 2).
NEIGHBOUR_OFFSETS: Tuple[Tuple[int, int], ...] = (
    (-1, -1), (-1, 0), (-1, 1),
    (0, -1), (0, 1),
    (1, -1), (1, 0), (1, 1),
)

#: RGB direction of the green-magenta axis that chromatic aberration shifts (Doersch et al. 2015, Sec. 3.1).
GREEN_MAGENTA = (-1.0, 2.0, -1.0)


# --------------------------------------------------------------------------- shared
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


# --------------------------------------------------------------------------- rotation
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


# --------------------------------------------------------------------------- relative location
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


# --------------------------------------------------------------------------- jigsaw
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


# --------------------------------------------------------------------------- masks
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


__all__ = [
    "NEIGHBOUR_OFFSETS", "JigsawPuzzle", "PatchPair", "centre_region_mask", "crop_patches", "drop_colour_channels",
    "erode_mask", "fill_holes", "greedy_permutation_set", "grid_span", "normalize_tiles",
    "project_out_green_magenta", "random_rectangles_mask", "resize_canvas", "rotate_batch", "sample_jigsaw_tiles",
    "sample_patch_pairs",
]
