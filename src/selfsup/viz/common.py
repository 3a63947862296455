"""Shared pieces of the pictures: picking images, making them displayable, colour maps, PNG grids."""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.utils import make_grid, save_image

from selfsup.data import DatasetInfo
from selfsup.transforms import denormalize


def pick_images(dataset: Dataset, num_images: int, seed: int = 0) -> Tuple[Tensor, Tensor]:
    """``num_images`` random samples of a dataset of ``(image (C, S, S) float, label)``, drawn with
    ``seed`` (the global random state is untouched): ``(images (B, C, S, S), labels (B,))``."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=generator)[: min(num_images, len(dataset))].tolist()
    pairs = [dataset[i] for i in order]
    return torch.stack([p[0] for p in pairs]), torch.tensor([int(p[1]) for p in pairs])


def displayable(images: Tensor, info: DatasetInfo) -> Tensor:
    """Normalised ``(B, C, H, W)`` → RGB ``(B, 3, H, W)`` in [0, 1] (grayscale repeated on 3 channels)."""
    images = denormalize(images.detach().float().cpu(), info)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def enlarge(maps: Tensor, size: int) -> Tensor:
    """``(B, C, h, w)`` → ``(B, C, size, size)`` with nearest-neighbour, so each patch stays a visible square."""
    return F.interpolate(maps.float(), size=(size, size), mode="nearest")


def colorize(maps: Tensor, colormap: str = "inferno") -> Tensor:
    """``(B, h, w)`` values → RGB ``(B, 3, h, w)`` through a matplotlib colour map, each map min-max scaled."""
    from matplotlib import colormaps

    flat = maps.detach().float().cpu().flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    scaled = ((flat - low) / (high - low).clamp(min=1e-12)).reshape(maps.shape)
    rgba = colormaps[colormap](scaled.numpy())  # (B, h, w, 4)
    return torch.from_numpy(rgba[..., :3]).permute(0, 3, 1, 2).float()


def frame(cell: Tensor, color: Sequence[float], width: int = 2) -> Tensor:
    """``(3, H, W)`` with a coloured border of ``width`` pixels drawn inside it."""
    cell = cell.clone()
    c = torch.tensor(color, dtype=cell.dtype).view(3, 1, 1)
    cell[:, :width], cell[:, -width:], cell[:, :, :width], cell[:, :, -width:] = c, c, c, c
    return cell


def save_cells(cells: List[Tensor], columns: int, path: str | Path, padding: int = 2) -> Path:
    """Write ``(3, S, S)`` cells in [0, 1], ``columns`` per row, as a PNG on a white background."""
    grid = make_grid(cells, nrow=columns, padding=padding, pad_value=1.0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    return path
