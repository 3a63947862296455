"""Datasets that apply a transform to an ImageDataset: views for pretraining, one image for evaluation."""

from __future__ import annotations

from typing import Callable, Optional, Union

import torch
from torch.utils.data import Dataset

from selfsup.data.base import ImageDataset
from selfsup.data.sampling import EpochIndex, sample_seed, seeded


class ViewDataset(Dataset):
    """``dataset[i]`` is ``(views, label, i)``: a list of augmented views ``(C, S, S)`` of image ``i``.

    The index is returned because memory-bank methods (e.g. NNCLR's support set, instance
    discrimination) store one entry per dataset image.

    With a ``seed``, ``dataset[(epoch, i)]`` (what :class:`~selfsup.data.sampling.EpochShuffleSampler`
    yields) reads image ``i`` and draws its views with every global generator seeded from
    ``(seed, epoch, i)`` (:func:`~selfsup.data.sampling.seeded`): the views are then the same in any
    DataLoader worker and after ``--resume``. A plain index ``i`` draws from the caller's generators.
    """

    def __init__(self, dataset: ImageDataset, transform: Callable[[torch.Tensor], list[torch.Tensor]],
                 seed: Optional[int] = None) -> None:
        self.dataset = dataset
        self.transform = transform
        self.info = dataset.info
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Union[int, EpochIndex]) -> tuple[list[torch.Tensor], int, int]:
        if isinstance(key, tuple):
            epoch, i = key
            if self.seed is not None:
                with seeded(sample_seed(self.seed, epoch, i)):
                    return self._views(i)
            return self._views(i)
        return self._views(key)

    def _views(self, i: int) -> tuple[list[torch.Tensor], int, int]:
        image, label = self.dataset[i]  # inside the seed too: datasets may draw (frame pairs' gap)
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
