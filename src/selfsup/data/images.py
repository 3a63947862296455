"""Image files on disk: reading one safely, storing many paths compactly, and what to do with a bad one.

Shared by every dataset that decodes files (``folder:PATH``, ``frames:PATH``) and by
``selfsup data check``, so that training, evaluation and the pre-flight check agree on which
files are readable: there is one decoder, :func:`open_image`.

A file is *unreadable* when PIL cannot identify it (zero bytes, a text file named ``.jpg``),
cannot decode all of it (a truncated JPEG or PNG), or when its header declares more than
:data:`MAX_IMAGE_PIXELS` pixels (a decompression bomb, or a scan too large to be a training
image). What then happens is the policy ``on_bad_image``:

* ``skip``: the sample is replaced by the next readable one (index ``i+1``, ``i+2`` … wrapping
  around), so batches keep their size and the replacement is the same in every run; each
  skipped file is warned about once and listed in a ``skipped.txt`` (:class:`SkipLog`).
* ``error``: stop with a one-line :class:`UnreadableImage` naming the file and the reason.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence, Tuple, TypeVar

import numpy as np
from PIL import Image

from selfsup.errors import DataError

try:  # POSIX: DataLoader workers serialise their appends to skipped.txt with a file lock
    import fcntl
except ImportError:  # pragma: no cover - Windows appends without the duplicate check's lock
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
SPLIT_FOLDERS = ("train", "val", "test")

MAX_IMAGE_PIXELS = 2 ** 27
"""Largest image read, in pixels (134M: e.g. 11585×11585, 400 MB as RGB). Larger files count as
unreadable. Below PIL's own hard limit (2 × ``Image.MAX_IMAGE_PIXELS`` = 179M by default, where
``Image.open`` raises DecompressionBombError), so this check, made on the header before any pixel is
decoded, is the one that applies; PIL's DecompressionBombWarning between the two is silenced here."""

BAD_IMAGE_POLICIES = ("skip", "error")
SKIPPED_FILE = "skipped.txt"  # in the run's output folder: one "path<TAB>reason" line per skipped file


class UnreadableImage(DataError):
    """An image file that cannot be used; ``path`` and ``reason`` say which and why.

    Raised by datasets under the ``error`` policy (and by :func:`open_image`). Inside a DataLoader
    worker it reaches the main process re-created from its message (see ``SelfSupError``).
    """

    def __init__(self, message: str, path: Optional[str] = None, reason: Optional[str] = None) -> None:
        super().__init__(message)
        self.path, self.reason = path, reason

    @classmethod
    def of(cls, path: str | os.PathLike, reason: str) -> "UnreadableImage":
        return cls(f"cannot read image {path}: {reason}", str(path), reason)


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split()) or "no message"
    return f"{type(error).__name__}: {text}"


def open_image(path: str | os.PathLike, decode: bool = True) -> Image.Image:
    """Open ``path`` with PIL (and decode every pixel when ``decode``); the caller closes it.

    Raises :class:`UnreadableImage` for a file PIL cannot identify or decode, or one whose header
    declares more than :data:`MAX_IMAGE_PIXELS` pixels (checked before decoding).
    """
    image = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise UnreadableImage.of(path, f"{width}x{height} = {width * height} pixels exceeds the limit of "
                                           f"{MAX_IMAGE_PIXELS} (selfsup.data.images.MAX_IMAGE_PIXELS)")
        if decode:
            image.load()  # decode now so a truncated file fails here, not in a transform
        return image
    except UnreadableImage:
        image.close()
        raise
    # PIL's format plugins raise many types on corrupt input (OSError, SyntaxError, struct.error,
    # EOFError, IndexError, DecompressionBombError …): all of them mean "this file is unusable".
    except Exception as error:  # noqa: BLE001
        if image is not None:
            image.close()
        raise UnreadableImage.of(path, _reason(error)) from error


def image_mode(path: str | os.PathLike) -> str:
    """The PIL mode of ``path`` from its header alone (no pixels decoded)."""
    with open_image(path, decode=False) as image:
        return image.mode


def check_image(path: str | os.PathLike) -> Optional[str]:
    """Why ``path`` is unreadable (one line), or None if it decodes: what :func:`open_image` decides."""
    try:
        open_image(path).close()
        return None
    except UnreadableImage as error:
        return error.reason


def find_unreadable(paths: Sequence[str | os.PathLike], workers: Optional[int] = None,
                    progress: Optional[Callable[[int], None]] = None) -> list[Tuple[str, str]]:
    """``(path, reason)`` for every file of ``paths`` that :func:`check_image` refuses, in order.

    Files are decoded by ``workers`` processes (default: the machine's cores; 1 = in this
    process); ``progress(n)`` is called as each chunk of ``n`` files is done.
    """
    workers = workers or os.cpu_count() or 1
    names = [str(p) for p in paths]
    chunk = max(1, min(256, len(names) // (8 * workers) or 1))
    if workers == 1 or len(names) <= chunk:
        reasons: Iterable[Optional[str]] = _counted(map(check_image, names), progress)
        return [(p, r) for p, r in zip(names, reasons) if r is not None]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers) as pool:
        reasons = _counted(pool.map(check_image, names, chunksize=chunk), progress)
        return [(p, r) for p, r in zip(names, reasons) if r is not None]


T = TypeVar("T")


def _counted(items: Iterator[T], progress: Optional[Callable[[int], None]], every: int = 64) -> Iterator[T]:
    done = 0
    for done, item in enumerate(items, 1):
        if progress is not None and done % every == 0:
            progress(every)
        yield item
    if progress is not None and done % every:
        progress(done % every)


def list_images(folder: Path) -> list[Path]:
    """All image files below ``folder``, sorted, skipping hidden files and folders."""
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def split_root(path: Path, split: str) -> Path:
    """The folder serving ``split``: ``PATH/<split>`` when PATH has split folders (train/ plus
    test/ or val/), else PATH itself for ``train``."""
    present = [s for s in SPLIT_FOLDERS if (path / s).is_dir()]
    if "train" in present and len(present) > 1:
        if split not in present:
            raise DataError(f"no split folder '{split}' in {path}; found: {', '.join(present)}")
        return path / split
    if split != "train":
        raise DataError(f"no split folder '{split}' in {path}; without train/ and test/ (or val/) "
                        "sub-folders the whole folder is split 'train'")
    return path


class PathList(Sequence[Path]):
    """File paths packed into one byte buffer plus an int64 offset array.

    A Python list of N path objects would be copied page by page into every forked DataLoader
    worker as soon as the workers touch the objects' reference counts (PyTorch's "copy-on-access"
    note, https://pytorch.org/docs/stable/data.html#multi-process-data-loading): two numpy arrays
    have two reference counts in all.
    """

    def __init__(self, paths: Iterable[str | os.PathLike]) -> None:
        encoded = [os.fsencode(p) for p in paths]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=self._offsets[1:])
        self._buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8) if encoded else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"path index {i} out of range for {n} paths")
        i %= n
        start, end = self._offsets[i], self._offsets[i + 1]
        return Path(os.fsdecode(self._buffer[start:end].tobytes()))


class SkipLog:
    """Lists skipped files in ``path`` (``skipped.txt``), each once, and warns once per file.

    DataLoader workers are separate processes with their own copy of this object: each appends
    under an exclusive ``flock`` after checking that the file is not listed yet, so a file met
    again in a later epoch, by another worker, or after ``--resume`` is neither listed nor warned
    about twice. Without a ``path`` it only warns, once per file and process.
    """

    def __init__(self, path: Optional[str | os.PathLike] = None) -> None:
        self.path = Path(path) if path is not None else None
        self._known: set[str] = set()

    def record(self, file: str | os.PathLike, reason: str) -> None:
        file = str(file)
        if file in self._known:
            return
        self._known.add(file)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a+", encoding="utf-8") as handle:  # "a": every write appends (O_APPEND)
                if fcntl is not None:
                    fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
                handle.seek(0)
                if file in {line.split("\t", 1)[0] for line in handle.read().splitlines()}:
                    return
                handle.write(f"{file}\t{reason}\n")
                handle.flush()
        where = f"; listed in {self.path}" if self.path is not None else ""
        log.warning("skipped unreadable image %s (%s)%s", file, reason, where)

    def entries(self) -> list[Tuple[str, str]]:
        """``(path, reason)`` of every file listed so far (by any process)."""
        if self.path is None or not self.path.is_file():
            return []
        rows = [line.split("\t", 1) for line in self.path.read_text(encoding="utf-8").splitlines() if line]
        return [(row[0], row[1] if len(row) > 1 else "") for row in rows]


def check_policy(policy: str) -> str:
    if policy not in BAD_IMAGE_POLICIES:
        raise DataError(f"unknown on_bad_image '{policy}'; valid choices: {', '.join(BAD_IMAGE_POLICIES)}")
    return policy


def first_readable(i: int, size: int, read: Callable[[int], T], policy: str, skip_log: SkipLog) -> T:
    """``read(i)``, or under the ``skip`` policy ``read`` of the next index whose files are readable.

    ``read`` raises :class:`UnreadableImage` for a bad file; the replacement depends only on which
    files are readable, so every run (and every worker) picks the same one.
    """
    for step in range(size):
        try:
            return read((i + step) % size)
        except UnreadableImage as error:
            if policy != "skip":
                raise UnreadableImage(f"{error} (`selfsup data check` lists every unreadable file; "
                                      "training with on_bad_image=skip skips them)", error.path, error.reason) from None
            skip_log.record(error.path, error.reason)
    raise DataError(f"none of the {size} samples could be read (the skipped files are listed above)")


def set_bad_image_policy(dataset: object, policy: str, skipped: Optional[str | os.PathLike] = None) -> None:
    """Make a dataset that reads files (it has ``on_bad_image``) follow ``policy``, listing skipped
    files in ``skipped`` (e.g. ``<output_dir>/skipped.txt``); in-memory datasets are left as they are."""
    check_policy(policy)
    if hasattr(dataset, "on_bad_image"):
        dataset.on_bad_image = policy
        dataset.skip_log = SkipLog(skipped)
