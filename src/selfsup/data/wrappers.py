"""Datasets that apply a transform to an ImageDataset: views for pretraining, one image for evaluation."""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.data import Dataset

from selfsup.data.base import ImageDataset


class ViewDataset(Dataset):
    """``dataset[i]`` is ``(views, label, i)``: a list of augmented views ``(C, S, S)`` of image ``i``.

    The index is returned because memory-bank methods (e.g. NNCLR's support set, instance
    discrimination) store one entry per dataset image.
    """

    def __init__(self, dataset: ImageDataset, transform: Callable[[torch.Tensor], list[torch.Tensor]]) -> None:
        self.dataset = dataset
        self.transform = transform
        self.info = dataset.info

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[list[torch.Tensor], int, int]:
        image, label = self.dataset[i]
        return self.transform(image), label, i


class TransformDataset(Dataset):
    """``dataset[i]`` is ``(transform(image), label)``, e.g. with an evaluation transform."""

    def __init__(self, dataset: ImageDataset, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.dataset = dataset
        self.transform = transform
        self.info = dataset.info

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[i]
        return self.transform(image), label
