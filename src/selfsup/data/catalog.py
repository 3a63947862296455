"""Datasets by name: ``load_dataset("cifar10", split="test")`` or ``load_dataset("folder:/path")``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from selfsup.data.base import ImageDataset
from selfsup.errors import DataError
from selfsup.registry import Registry

# Each entry is a factory ``(split, data_dir, download) -> ImageDataset``. A dataset read from a
# path given in its name registers as ``"<prefix>:PATH"`` (``folder:PATH``, ``frames:PATH``) and
# receives that path as ``data_dir``. Registration happens when the package selfsup.data imports
# its dataset modules; this module imports none of them.
DatasetFactory = Callable[[str, "str | None", bool], ImageDataset]
DATASETS: Registry[DatasetFactory] = Registry("dataset")

PATH_SUFFIX = "PATH"
FOLDER_PREFIX = "folder:"
FRAMES_PREFIX = "frames:"  # a folder of videos, one sub-folder of frames each (selfsup.data.frames)


def load_dataset(
    name: str, split: str = "train", data_dir: str | None = None, download: bool = False
) -> ImageDataset:
    """Load a named dataset split; ``folder:PATH`` loads any folder of images.

    Raises ConfigError for an unknown name and DataError for a bad split or missing files.
    """
    prefix, colon, path = name.partition(":")
    if colon and f"{prefix}:{PATH_SUFFIX}" in DATASETS:
        # The path is part of the name, so a recipe names its data in one place.
        return DATASETS.get(f"{prefix}:{PATH_SUFFIX}")(split, path, download)
    return DATASETS.get(name)(split, data_dir, download)


def dataset_names() -> list[str]:
    """Valid names for :func:`load_dataset`, e.g. ``['cifar10', ..., 'folder:PATH', 'stl10']``."""
    return DATASETS.names()


def default_data_dir(name: str) -> Path:
    """Where a dataset lives unless told otherwise: ``$SELFSUP_DATA/<name>`` or ``~/.cache/selfsup/<name>``."""
    root = os.environ.get("SELFSUP_DATA")
    return Path(root) / name if root else Path.home() / ".cache" / "selfsup" / name


def check_split(dataset: str, split: str, valid: tuple[str, ...]) -> None:
    """Raise a one-line DataError unless ``split`` is one of ``valid``."""
    if split not in valid:
        raise DataError(f"unknown split '{split}' for dataset {dataset}; valid splits: {', '.join(valid)}")
