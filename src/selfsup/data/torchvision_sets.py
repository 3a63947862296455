"""CIFAR-10/100 (Krizhevsky 2009) and STL-10 (Coates et al. 2011), read through torchvision.datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torchvision

from selfsup.data.base import DatasetInfo, TensorImageDataset
from selfsup.data.catalog import DATASETS, check_split, default_data_dir
from selfsup.errors import DataError


def _open(name: str, folder: str, data_dir: str | None, download: bool,
          make: Callable[[str, bool], Any]) -> Any:
    """Call ``make(root, download)``, turning torchvision's missing-file errors into a one-line DataError."""
    root = Path(data_dir) if data_dir else default_data_dir(name)
    try:
        return make(str(root), download)
    except (OSError, RuntimeError) as e:
        if download:
            raise DataError(f"could not download {name} into {root}: {e}".replace("\n", " ")) from e
        raise DataError(
            f"{name} not found: expected folder {folder} under {root}; pass data_dir "
            "or use --set data.download=true when online"
        ) from e


def _cifar(name: str, cls: type, folder: str, mean: tuple[float, ...], std: tuple[float, ...],
           split: str, data_dir: str | None, download: bool) -> TensorImageDataset:
    check_split(name, split, ("train", "test"))
    ds = _open(name, folder, data_dir, download, lambda r, d: cls(r, train=split == "train", download=d))
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, H, W, C) -> (N, C, H, W)
    info = DatasetInfo(name, 3, len(ds.classes), 32, mean, std, tuple(ds.classes))
    return TensorImageDataset(images, torch.tensor(ds.targets, dtype=torch.int64), info)


@DATASETS.register("cifar10")
def cifar10(split: str, data_dir: str | None, download: bool) -> TensorImageDataset:
    """CIFAR-10 ``train``/``test``: uint8 ``(N, 3, 32, 32)``, 10 classes."""
    return _cifar("cifar10", torchvision.datasets.CIFAR10, "cifar-10-batches-py",
                  (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), split, data_dir, download)


@DATASETS.register("cifar100")
def cifar100(split: str, data_dir: str | None, download: bool) -> TensorImageDataset:
    """CIFAR-100 ``train``/``test``: uint8 ``(N, 3, 32, 32)``, 100 fine classes."""
    return _cifar("cifar100", torchvision.datasets.CIFAR100, "cifar-100-python",
                  (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), split, data_dir, download)


@DATASETS.register("stl10")
def stl10(split: str, data_dir: str | None, download: bool) -> TensorImageDataset:
    """STL-10 ``train``/``test``/``unlabeled``/``train+unlabeled``: uint8 ``(N, 3, 96, 96)``.

    ``unlabeled`` has ``labels=None``; in ``train+unlabeled`` the unlabeled images have label -1.
    The 100,000 unlabeled images take 2.8 GB of memory.
    """
    check_split("stl10", split, ("train", "test", "unlabeled", "train+unlabeled"))
    ds = _open("stl10", "stl10_binary", data_dir, download,
               lambda r, d: torchvision.datasets.STL10(r, split=split, download=d))
    images = torch.from_numpy(np.ascontiguousarray(ds.data))  # already (N, C, H, W)
    labels = None if split == "unlabeled" else torch.from_numpy(ds.labels.astype(np.int64))
    classes = () if split == "unlabeled" else tuple(ds.classes)
    info = DatasetInfo("stl10", 3, len(classes), 96, (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713), classes)
    return TensorImageDataset(images, labels, info)
