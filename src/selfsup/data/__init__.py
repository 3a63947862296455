"""Datasets: uint8 images ``(C, H, W)`` with integer labels, loaded by name.

Example:
    >>> from selfsup.data import load_dataset
    >>> train = load_dataset("fashion-mnist", split="train")
    >>> image, label = train[0]          # uint8 (1, 28, 28), int
"""

# Importing the dataset modules registers them (catalog.py imports none of them).
from selfsup.data import fashion_mnist, folder, frames, torchvision_sets  # noqa: F401
from selfsup.data.base import UNLABELED, DatasetInfo, ImageDataset, TensorImageDataset
from selfsup.data.catalog import DATASETS, dataset_names, default_data_dir, load_dataset
from selfsup.data.folder import FolderDataset
from selfsup.data.idx import read_idx
from selfsup.data.images import (BAD_IMAGE_POLICIES, MAX_IMAGE_PIXELS, SKIPPED_FILE, SkipLog, UnreadableImage,
                                 set_bad_image_policy)
from selfsup.data.sampling import EpochShuffleSampler, LoaderGenerator
from selfsup.data.wrappers import TransformDataset, ViewDataset

__all__ = [
    "BAD_IMAGE_POLICIES", "DATASETS", "MAX_IMAGE_PIXELS", "SKIPPED_FILE", "UNLABELED", "DatasetInfo",
    "EpochShuffleSampler", "FolderDataset", "ImageDataset", "LoaderGenerator", "SkipLog", "TensorImageDataset", "TransformDataset",
    "UnreadableImage", "ViewDataset", "dataset_names", "default_data_dir", "load_dataset", "read_idx",
    "set_bad_image_policy",
]
