"""Any folder of images: ``folder:PATH``, labelled by class sub-folders or unlabeled when flat."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torchvision.transforms.v2.functional import pil_to_tensor

from selfsup.data.base import UNLABELED, DatasetInfo, ImageDataset
from selfsup.data.catalog import DATASETS, FOLDER_PREFIX
from selfsup.data.images import (  # noqa: F401  EXTENSIONS: also imported from here elsewhere
    EXTENSIONS, GRAY_MODES, PathList, SkipLog, UnreadableImage, check_policy, find_unreadable,
    first_readable, image_mode, list_images, open_image, split_root)
from selfsup.errors import DataError

MODE_SAMPLES = 16  # images whose mode is read to choose between 1 and 3 channels
DEFAULT_SIZE = 224  # ImageNet resolution; images of any size are resized by the transforms
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class FolderDataset(ImageDataset):
    """Images read lazily with PIL; ``dataset[i]`` is ``(uint8 (C, H, W), label)``, sizes may vary.

    Sub-folders holding images are classes (sorted names; images directly in the root are then
    ignored, as in torchvision's ImageFolder); a flat folder is unlabeled (label -1). If up to 16
    evenly spaced images are all grayscale, images load with C=1, otherwise as RGB (C=3).

    An unreadable file (see :mod:`selfsup.data.images`) raises :class:`UnreadableImage` under
    ``on_bad_image="error"``; under ``"skip"`` item ``i`` is the next readable image instead and the
    file is recorded in ``skip_log``. ``files`` are the image paths (a :class:`PathList`).
    """

    def __init__(self, root: str | Path, name: str | None = None, on_bad_image: str = "error",
                 skip_log: Optional[SkipLog] = None) -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"image folder {root} does not exist")
        self.root = root
        self.on_bad_image = check_policy(on_bad_image)
        self.skip_log = skip_log or SkipLog()
        classes = sorted(d.name for d in root.iterdir()
                         if d.is_dir() and not d.name.startswith(".") and list_images(d))
        if classes:
            per_class = [list_images(root / c) for c in classes]
            self.files = PathList(f for files in per_class for f in files)
            # numpy indexing is ~20x cheaper than a tensor's. The array owns its memory: a view of
            # ``self.labels`` would dangle once DDP's spawn pickling moves the tensor to shared memory.
            self._label_array = np.array([k for k, files in enumerate(per_class) for _ in files], dtype=np.int64)
            self.labels = torch.tensor(self._label_array)
        else:
            self.files = PathList(list_images(root))
            self.labels = None
        if not len(self.files):
            raise DataError(f"no images ({', '.join(EXTENSIONS)}) found in folder {root}")
        # Grayscale only if every sampled image is: one grey photo (ImageNet has some) sorted
        # first must not turn a colour dataset grey. Reading a header does not decode pixels;
        # unreadable files are left to the policy, but a folder where none of the sample reads
        # is the wrong folder.
        sample = self.files[:: math.ceil(len(self.files) / MODE_SAMPLES)]
        modes, first_error = [], None
        for path in sample:
            try:
                modes.append(image_mode(path))
            except UnreadableImage as error:
                first_error = first_error or error
        if not modes:
            raise DataError(f"none of {len(sample)} sampled files of {root} is a readable image, e.g. {first_error}")
        self.mode = "L" if all(m in GRAY_MODES for m in modes) else "RGB"
        gray = self.mode == "L"
        self.info = DatasetInfo(
            name=name or f"folder:{root}", num_channels=1 if gray else 3, num_classes=len(classes),
            image_size=DEFAULT_SIZE, mean=(0.5,) if gray else IMAGENET_MEAN,
            std=(0.5,) if gray else IMAGENET_STD, classes=tuple(classes))

    def verify(self) -> None:
        """Decode every image once; raise DataError naming the first unreadable file."""
        for path in self.files:
            open_image(path).close()

    def unreadable(self, workers: Optional[int] = None,
                   progress: Optional[Callable[[int], None]] = None) -> list[tuple[str, str]]:
        """``(path, reason)`` of every file that cannot be read, decoding with ``workers``
        processes (default: all cores); see :func:`~selfsup.data.images.find_unreadable`."""
        return find_unreadable(self.files, workers, progress)

    def __len__(self) -> int:
        return len(self.files)

    def relative_path(self, i: int) -> str:
        """Path of image ``i`` relative to the folder, with ``/`` separators (``"cat/001.jpg"``)."""
        return Path(self.files[i]).relative_to(self.root).as_posix()

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return first_readable(i, len(self.files), self._read, self.on_bad_image, self.skip_log)

    def _read(self, i: int) -> tuple[torch.Tensor, int]:
        with open_image(self.files[i]) as image:
            pixels = pil_to_tensor(image.convert(self.mode))
        return pixels, UNLABELED if self.labels is None else int(self._label_array[i])


@DATASETS.register(FOLDER_PREFIX + "PATH")
def folder(split: str, path: str | None, download: bool) -> FolderDataset:
    """``folder:PATH`` with ``split`` choosing ``PATH/train``, ``PATH/test`` or ``PATH/val`` when present."""
    if not path:
        raise DataError("folder dataset needs a path: use 'folder:/path/to/images'")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    return FolderDataset(split_root(root, split), name=f"folder:{path}")

