"""Image files decoded with torchvision.io (libjpeg-turbo, libpng, libwebp straight into a tensor), PIL as fallback.

Measured on this project's CPU machine (``benchmarks/gpu_throughput.py --decode-only``, 500x375-ish
JPEGs at quality 90, one thread): ``torchvision.io.decode_image`` about 2.5x faster per image than
``PIL.Image.open(...).convert("RGB")`` + ``pil_to_tensor`` (no PIL image object, no conversion
copy) and bit-identical on RGB JPEGs. Formats torchvision does not read (BMP, TIFF), 16-bit PNGs
and anything it refuses go through PIL, so every file FolderDataset reads is read here too.

:class:`DecodedFolder` serves a :class:`~selfsup.data.folder.FolderDataset`'s files, labels and
description with this decoder.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2.functional import pil_to_tensor

from selfsup.data.base import UNLABELED, ImageDataset
from selfsup.data.folder import FolderDataset
from selfsup.data.images import first_readable, open_image

TORCHVISION_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")  # what torchvision.io decodes to one image


def read_image(path: str | Path, gray: bool) -> torch.Tensor:
    """The file's pixels as uint8 ``(1, H, W)`` (``gray``) or ``(3, H, W)``.

    Raises :class:`~selfsup.data.images.UnreadableImage` (a DataError) for a file that cannot be
    decoded or whose header declares more than ``MAX_IMAGE_PIXELS`` pixels (read before decoding,
    as :func:`~selfsup.data.images.open_image` does for PIL)."""
    path = Path(path)
    open_image(path, decode=False).close()  # identifies the file and checks its size from the header
    suffix = path.suffix.lower()
    # torchvision's WebP decoder ignores grey conversion (and says so on stderr for every image).
    if suffix in TORCHVISION_SUFFIXES and not (gray and suffix == ".webp"):
        try:
            image = decode_image(read_file(str(path)), mode=ImageReadMode.GRAY if gray else ImageReadMode.RGB)
            if image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == (1 if gray else 3):
                return image
        except (RuntimeError, ValueError):
            pass  # PIL below decides: it reads more variants, and names the problem if it cannot
    with open_image(path) as image:
        return pil_to_tensor(image.convert("L" if gray else "RGB"))


class DecodedFolder(ImageDataset):
    """``folder[i]`` read with :func:`read_image`: the same images, labels and info as ``folder``.

    Grayscale folders (``folder.mode == "L"``) decode with libjpeg's own grey conversion, which may
    differ from PIL's ``convert("L")`` by one level on colour files; grey files are identical.
    """

    def __init__(self, folder: FolderDataset) -> None:
        self.folder = folder
        self.files = folder.files
        self.labels = folder.labels
        self.info = folder.info
        self.gray = folder.mode == "L"

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        # The folder's bad-image policy and skip list (set_bad_image_policy sets them on the folder).
        return first_readable(i, len(self.files), self._read, self.folder.on_bad_image, self.folder.skip_log)

    def _read(self, i: int) -> tuple[torch.Tensor, int]:
        label = UNLABELED if self.labels is None else int(self.folder._label_array[i])
        return read_image(self.files[i], self.gray), label
