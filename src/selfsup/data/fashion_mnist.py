"""Fashion-MNIST (Xiao et al. 2017): 60,000 + 10,000 grayscale 28x28 images of 10 clothing classes."""

from __future__ import annotations

from pathlib import Path

import torch

from selfsup.data.base import DatasetInfo, TensorImageDataset
from selfsup.data.catalog import DATASETS, check_split, default_data_dir
from selfsup.data.idx import read_idx
from selfsup.errors import DataError

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
INFO = DatasetInfo("fashion-mnist", num_channels=1, num_classes=10, image_size=28,
                   mean=(0.2860,), std=(0.3530,), classes=CLASSES)
_PREFIX = {"train": "train", "test": "t10k"}


def _find(folders: list[Path], stem: str) -> Path | None:
    """First existing ``stem`` or ``stem.gz`` in ``folders`` (also where torchvision downloads to)."""
    for folder in folders:
        for sub in (folder, folder / "FashionMNIST" / "raw"):
            for candidate in (sub / stem, sub / f"{stem}.gz"):
                if candidate.is_file():
                    return candidate
    return None


@DATASETS.register("fashion-mnist")
def fashion_mnist(split: str, data_dir: str | None, download: bool) -> TensorImageDataset:
    """Load a split (``train``/``test``) as uint8 images ``(N, 1, 28, 28)`` with int64 labels ``(N,)``."""
    check_split("fashion-mnist", split, tuple(_PREFIX))
    folders = [Path(data_dir)] if data_dir else [SYSTEM_DIR, default_data_dir("fashion-mnist")]
    stems = (f"{_PREFIX[split]}-images-idx3-ubyte", f"{_PREFIX[split]}-labels-idx1-ubyte")
    paths = [_find(folders, s) for s in stems]
    if None in paths and download:
        import torchvision  # only needed here; downloads into <root>/FashionMNIST/raw

        root = Path(data_dir) if data_dir else default_data_dir("fashion-mnist")
        try:
            torchvision.datasets.FashionMNIST(str(root), train=split == "train", download=True)
        except (OSError, RuntimeError) as e:
            raise DataError(f"could not download fashion-mnist into {root}: {e}".replace("\n", " ")) from e
        paths = [_find([root], s) for s in stems]
    if None in paths:
        raise DataError(
            f"fashion-mnist {split} files not found: place {stems[0]}.gz and {stems[1]}.gz "
            f"in {folders[0]} (apt-get install dataset-fashion-mnist), pass data_dir, "
            "or use --set data.download=true when online"
        )
    images, labels = (read_idx(p) for p in paths)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{paths[0]} and {paths[1]} do not match: {images.shape} images, {labels.shape} labels")
    images = torch.from_numpy(images.copy()).unsqueeze(1)  # (N, 1, H, W); copy: frombuffer is read-only
    return TensorImageDataset(images, torch.from_numpy(labels.astype("int64")), INFO)
