"""PCA of patch features shown as colours, with the background removed (DINOv2, Oquab et al. 2024,
Fig. 1 and Sec. 7.5).

1. A PCA over the patches of all the images together; the first component separates the object
   from the background, so thresholding it gives a foreground mask. Its sign is arbitrary: it is
   oriented so that the patches on the images' borders (mostly background) score low.
2. A second PCA over the foreground patches only; its first three components, each min-max
   scaled to [0, 1], are the red, green and blue of every foreground patch. Background is black.
   Matching colours across images mean matching parts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import torch
from torch import Tensor, nn

from selfsup.data import DatasetInfo
from selfsup.evaluation.dense import dense_features
from selfsup.viz.common import displayable, enlarge, save_cells


def _principal_scores(x: Tensor, k: int) -> Tensor:
    """Scores ``(N, k)`` of the rows of ``x (N, D)`` on their top-``k`` principal directions."""
    centred = x - x.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)  # exact and deterministic (up to sign)
    return centred @ vh[:k].T


def _border(h: int, w: int) -> Tensor:
    border = torch.zeros(h, w, dtype=torch.bool)
    border[0], border[-1], border[:, 0], border[:, -1] = True, True, True, True
    return border


def patch_pca_colors(features: Tensor, threshold: float = 0.0, remove_background: bool = True) -> Tuple[Tensor, Tensor]:
    """Colours of the patches of spatial features ``(B, D, h, w)``.

    Args:
        threshold: foreground is where the first component, divided by its standard deviation
            over all patches, exceeds this (0: above the mean).
        remove_background: when False every patch is coloured by one 3-component PCA.

    Returns:
        ``rgb (B, 3, h, w)`` in [0, 1] and ``foreground (B, h, w)`` bool.
    """
    B, D, h, w = features.shape
    x = features.detach().double().permute(0, 2, 3, 1).reshape(-1, D)  # (B·h·w, D)
    foreground = torch.ones(B * h * w, dtype=torch.bool)
    if remove_background:
        first = _principal_scores(x, 1)[:, 0]
        border = _border(h, w).repeat(B, 1, 1).reshape(-1)
        if h > 2 and w > 2 and first[border].mean() > first[~border].mean():
            first = -first
        foreground = first / first.std().clamp(min=1e-12) > threshold
        if foreground.sum() < 3:  # nothing stands out: colour everything rather than nothing
            foreground = torch.ones_like(foreground)
    scores = _principal_scores(x[foreground], min(3, D, int(foreground.sum())))  # (F, ≤3)
    low, high = scores.min(0).values, scores.max(0).values
    colors = torch.zeros(B * h * w, 3, dtype=torch.float64)
    colors[foreground, : scores.shape[1]] = (scores - low) / (high - low).clamp(min=1e-12)
    rgb = colors.reshape(B, h, w, 3).permute(0, 3, 1, 2).float()
    return rgb, foreground.reshape(B, h, w)


@torch.no_grad()
def save_patch_pca(encoder: nn.Module, images: Tensor, info: DatasetInfo, path: str | Path, cell_size: int = 112,
                   threshold: float = 0.0, remove_background: bool = True) -> Path:
    """PNG with one row per image: the image, then its patch-PCA colours (ViT or ResNet encoder).

    ``images`` are normalised ``(B, C, H, W)``; each cell is ``cell_size`` pixels square.
    """
    was_training = encoder.training
    encoder.eval()
    try:
        features = dense_features(encoder, images)  # (B, D, h, w)
    finally:
        encoder.train(was_training)
    rgb, _ = patch_pca_colors(features, threshold, remove_background)
    originals, maps = enlarge(displayable(images, info), cell_size), enlarge(rgb, cell_size)
    cells = [cell for pair in zip(originals, maps) for cell in pair]
    return save_cells(cells, 2, path)
