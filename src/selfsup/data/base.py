"""What every dataset in selfsup is: uint8 images ``(C, H, W)``, integer labels, and a description."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

UNLABELED = -1  # label returned for images that have none


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset that transforms and models need.

    ``mean``/``std`` are per-channel statistics of pixels scaled to [0, 1].
    """

    name: str
    num_channels: int  # 1 for grayscale, 3 for colour
    num_classes: int  # 0 when unlabeled
    image_size: int  # native side length; transforms resize to it by default
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()


class ImageDataset(Dataset):
    """Base class of all datasets: ``dataset[i]`` is ``(image uint8 (C, H, W), label int)``.

    ``labels`` is the ``(N,)`` int64 tensor of all labels (``-1`` marks unlabeled images), or
    ``None`` when the whole dataset is unlabeled; it lets callers draw class-balanced subsets
    without decoding images.
    """

    info: DatasetInfo
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        raise NotImplementedError


class TensorImageDataset(ImageDataset):
    """A dataset held in memory as one uint8 tensor ``(N, C, H, W)``: no decoding per sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None, info: DatasetInfo) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = None if labels is None else labels.to(torch.int64)
        self.info = info
        # A Python list makes per-sample label access ~10x cheaper than tensor indexing.
        self._label_list = [UNLABELED] * len(images) if labels is None else self.labels.tolist()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], self._label_list[i]
