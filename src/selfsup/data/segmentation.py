"""Segmentation folders: images with per-pixel class masks, for dense evaluation.

Format (``selfsup eval dense --data PATH``, :mod:`selfsup.evaluation.dense`)::

    PATH/train/images/<name>.png|jpg    the images (any size, grayscale or RGB)
    PATH/train/masks/<name>.png         one-channel PNG ('L' or palette 'P'), pixel value = class index,
                                        255 = ignore (not scored, no loss); same size as the image
    PATH/test/images/..., PATH/test/masks/...   (or val/ instead of test/)

Images are normalised like ``folder:`` datasets (0.5/0.5 for grayscale, ImageNet statistics for
RGB) and resized to ``image_size`` squares (masks with nearest-neighbour). The number of classes
is the largest class index in the training masks plus one, unless given.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from selfsup.data.base import DatasetInfo
from selfsup.data.folder import FolderDataset
from selfsup.errors import DataError

IGNORE_INDEX = 255
"""Mask value of pixels that are neither scored nor trained on."""
SPLITS = ("train", "test", "val")


class SegmentationFolder(Dataset):
    """``dataset[i]`` is ``(image uint8 (C, H, W), mask int64 (H, W))`` from ``root/images`` and ``root/masks``.

    Masks are matched to images by file name stem (``images/a.jpg`` ↔ ``masks/a.png``).
    """

    def __init__(self, root: str | Path) -> None:
        root = Path(root).expanduser()
        for sub in ("images", "masks"):
            if not (root / sub).is_dir():
                raise DataError(f"segmentation data needs {root / sub}/ (images/ and masks/ with matching names)")
        self.images = FolderDataset(root / "images", name=f"segmentation:{root}")
        if self.images.labels is not None:
            raise DataError(f"{root / 'images'} has sub-folders; put the images directly in it")
        self.info: DatasetInfo = self.images.info
        masks = {p.stem: p for p in (root / "masks").iterdir() if p.suffix.lower() == ".png"}
        self.masks: List[Path] = []
        for path in self.images.files:
            if path.stem not in masks:
                raise DataError(f"no mask {root / 'masks' / (path.stem + '.png')} for image {path}")
            self.masks.append(masks[path.stem])

    def __len__(self) -> int:
        return len(self.images)

    def read_mask(self, i: int) -> Tensor:
        """``(H, W)`` int64 class indices of image ``i``."""
        with Image.open(self.masks[i]) as mask:
            if mask.mode not in ("L", "P", "I", "I;16"):
                raise DataError(f"mask {self.masks[i]} has mode {mask.mode}; use one-channel PNGs ('L' or 'P') of class indices")
            return torch.from_numpy(np.array(mask, dtype=np.int64))

    def __getitem__(self, i: int) -> Tuple[Tensor, Tensor]:
        image, _ = self.images[i]
        mask = self.read_mask(i)
        if tuple(mask.shape) != tuple(image.shape[1:]):
            raise DataError(f"mask {self.masks[i]} is {tuple(mask.shape)} but its image is {tuple(image.shape[1:])}")
        return image, mask


def load_segmentation(path: str | Path, split: str) -> SegmentationFolder:
    """The ``split`` ('train', 'test' or 'val') of a segmentation folder (format in the module docstring)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"segmentation folder {root} does not exist")
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; valid: {', '.join(SPLITS)}")
    if split == "test" and not (root / "test").is_dir() and (root / "val").is_dir():
        split = "val"
    if not (root / split).is_dir():
        raise DataError(f"no split folder {root / split} (expected {root}/train/ and {root}/test/ or val/, "
                        "each with images/ and masks/)")
    return SegmentationFolder(root / split)


__all__ = ["IGNORE_INDEX", "SPLITS", "SegmentationFolder", "load_segmentation"]
