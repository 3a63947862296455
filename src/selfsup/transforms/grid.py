"""A picture of the augmented views, to check a recipe by eye."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F
from torchvision.utils import make_grid, save_image

from selfsup.data.base import ImageDataset
from selfsup.transforms.eval import denormalize
from selfsup.transforms.views import MultiViewTransform


def _cell(image: torch.Tensor, size: int) -> torch.Tensor:
    """Float ``(C, H, W)`` in [0, 1] -> ``(C, size, size)``; nearest-neighbour keeps small images' pixels honest."""
    image = F.resize(image, [size], interpolation=InterpolationMode.NEAREST)
    return F.center_crop(image, [size, size])


def save_view_grid(dataset: ImageDataset, transform: MultiViewTransform, path: str, num_images: int = 8,
                   seed: int = 0, cell_size: int | None = None) -> str:
    """Write a PNG with one row per image: the original, then each of its views; return ``path``.

    Every cell is ``cell_size`` pixels square (default: the global crop size), so local crops are
    shown enlarged. With ``make_grid``'s 2-pixel padding the PNG is
    ``(num_images * (cell + 2) + 2)`` high and ``((1 + num_views) * (cell + 2) + 2)`` wide.
    The global random state is left unchanged.
    """
    size = cell_size or transform.global_size
    cells = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in torch.randperm(len(dataset))[:num_images].tolist():
            image, _ = dataset[i]
            cells.append(_cell(F.to_dtype(image, torch.float32, scale=True), size))
            cells += [_cell(denormalize(view, dataset.info), size) for view in transform(image)]
    grid = make_grid(cells, nrow=1 + len(transform.views), padding=2, pad_value=1.0)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    return str(path)
