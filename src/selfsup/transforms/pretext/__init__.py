"""Inputs and targets of the classic pretext tasks, made from a batch of normalised views.

Every function takes ``(B, C, H, W)`` float images and draws its randomness from torch's global
RNG (or an explicit ``generator``), so the engine's RNG capture makes a resumed run draw the
same puzzles. Everything is batched: no Python loop runs over the images of a batch.

One module per task, every name re-exported here:

* :mod:`.rotation` — :func:`rotate_batch`, the four 90° rotations of every image (Gidaris et al. 2018).
* :mod:`.relative_location` — :func:`sample_patch_pairs`, centre patch + one of its 8 neighbours
  from a 3×3 grid with gaps and jitter (Doersch et al. 2015); :func:`drop_colour_channels` and
  :func:`project_out_green_magenta` are that paper's guards against chromatic aberration.
* :mod:`.jigsaw` — :func:`greedy_permutation_set`, :func:`sample_jigsaw_tiles`, :func:`centred_tiles`,
  :func:`normalize_tiles`: jigsaw puzzles (Noroozi & Favaro 2016).
* :mod:`.inpainting` — :func:`centre_region_mask`, :func:`random_rectangles_mask`, :func:`erode_mask`,
  :func:`fill_holes`: the masked regions of context encoders (Pathak et al. 2016).
* :mod:`.common` — :func:`crop_patches` and :func:`resize_canvas`, shared by the patch tasks.
"""

from selfsup.transforms.pretext.common import crop_patches, resize_canvas
from selfsup.transforms.pretext.inpainting import centre_region_mask, erode_mask, fill_holes, random_rectangles_mask
from selfsup.transforms.pretext.jigsaw import (JigsawPuzzle, centred_tiles, greedy_permutation_set, normalize_tiles,
                                               sample_jigsaw_tiles)
from selfsup.transforms.pretext.relative_location import (GREEN_MAGENTA, NEIGHBOUR_OFFSETS, PatchPair,
                                                          drop_colour_channels, grid_span, project_out_green_magenta,
                                                          sample_patch_pairs)
from selfsup.transforms.pretext.rotation import NUM_ROTATIONS, rotate_batch

__all__ = [
    "GREEN_MAGENTA", "NEIGHBOUR_OFFSETS", "NUM_ROTATIONS", "JigsawPuzzle", "PatchPair", "centre_region_mask",
    "centred_tiles", "crop_patches", "drop_colour_channels", "erode_mask", "fill_holes", "greedy_permutation_set",
    "grid_span", "normalize_tiles", "project_out_green_magenta", "random_rectangles_mask", "resize_canvas",
    "rotate_batch", "sample_jigsaw_tiles", "sample_patch_pairs",
]
