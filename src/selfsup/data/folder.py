"""Any folder of images: ``folder:PATH``, labelled by class sub-folders or unlabeled when flat."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor

from selfsup.data.base import UNLABELED, DatasetInfo, ImageDataset
from selfsup.data.catalog import DATASETS
from selfsup.errors import DataError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
MODE_SAMPLES = 16  # images whose mode is read to choose between 1 and 3 channels
SPLIT_FOLDERS = ("train", "val", "test")
DEFAULT_SIZE = 224  # ImageNet resolution; images of any size are resized by the transforms
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _images(folder: Path) -> list[Path]:
    """All image files below ``folder``, sorted, skipping hidden files and folders."""
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _split_root(path: Path, split: str) -> Path:
    """The folder serving ``split``: ``PATH/<split>`` when PATH has split folders, else PATH for ``train``."""
    present = [s for s in SPLIT_FOLDERS if (path / s).is_dir()]
    if "train" in present and len(present) > 1:
        if split not in present:
            raise DataError(f"no split folder '{split}' in {path}; found: {', '.join(present)}")
        return path / split
    if split != "train":
        raise DataError(f"no split folder '{split}' in {path}; without train/ and test/ (or val/) "
                        "sub-folders the whole folder is split 'train'")
    return path


class FolderDataset(ImageDataset):
    """Images read lazily with PIL; ``dataset[i]`` is ``(uint8 (C, H, W), label)``, sizes may vary.

    Sub-folders holding images are classes (sorted names; images directly in the root are then
    ignored, as in torchvision's ImageFolder); a flat folder is unlabeled (label -1). If up to 16
    evenly spaced images are all grayscale, images load with C=1, otherwise as RGB (C=3).
    """

    def __init__(self, root: str | Path, name: str | None = None) -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"image folder {root} does not exist")
        self.root = root
        classes = sorted(d.name for d in root.iterdir()
                         if d.is_dir() and not d.name.startswith(".") and _images(d))
        if classes:
            per_class = [_images(root / c) for c in classes]
            self.files = [f for files in per_class for f in files]
            self.labels = torch.tensor([k for k, files in enumerate(per_class) for _ in files], dtype=torch.int64)
            self._label_list = self.labels.tolist()
        else:
            self.files = _images(root)
            self.labels = None
            self._label_list = [UNLABELED] * len(self.files)
        if not self.files:
            raise DataError(f"no images ({', '.join(EXTENSIONS)}) found in folder {root}")
        # Decoding one file at construction catches a wrong folder early; verify() checks all.
        self._open(self.files[0]).close()
        # Grayscale only if every sampled image is: one grey photo (ImageNet has some) sorted
        # first must not turn a colour dataset grey. Reading a header does not decode pixels.
        sample = self.files[:: math.ceil(len(self.files) / MODE_SAMPLES)]
        self.mode = "L" if all(self._mode(p) in GRAY_MODES for p in sample) else "RGB"
        gray = self.mode == "L"
        self.info = DatasetInfo(
            name=name or f"folder:{root}", num_channels=1 if gray else 3, num_classes=len(classes),
            image_size=DEFAULT_SIZE, mean=(0.5,) if gray else IMAGENET_MEAN,
            std=(0.5,) if gray else IMAGENET_STD, classes=tuple(classes))

    @staticmethod
    def _open(path: Path) -> Image.Image:
        try:
            image = Image.open(path)
            image.load()  # decode now so a truncated file fails here, not later
            return image
        except (OSError, SyntaxError, ValueError) as e:
            raise DataError(f"cannot read image {path}: {e}".replace("\n", " ")) from e

    @staticmethod
    def _mode(path: Path) -> str:
        try:
            with Image.open(path) as image:
                return image.mode
        except (OSError, SyntaxError, ValueError) as e:
            raise DataError(f"cannot read image {path}: {e}".replace("\n", " ")) from e

    def verify(self) -> None:
        """Decode every image once; raise DataError naming the first unreadable file."""
        for path in self.files:
            self._open(path).close()

    def __len__(self) -> int:
        return len(self.files)

    def relative_path(self, i: int) -> str:
        """Path of image ``i`` relative to the folder, with ``/`` separators (``"cat/001.jpg"``)."""
        return Path(self.files[i]).relative_to(self.root).as_posix()

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with self._open(self.files[i]) as image:
            return pil_to_tensor(image.convert(self.mode)), self._label_list[i]


@DATASETS.register("folder:PATH")
def folder(split: str, path: str | None, download: bool) -> FolderDataset:
    """``folder:PATH`` with ``split`` choosing ``PATH/train``, ``PATH/test`` or ``PATH/val`` when present."""
    if not path:
        raise DataError("folder dataset needs a path: use 'folder:/path/to/images'")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    return FolderDataset(_split_root(root, split), name=f"folder:{path}")
