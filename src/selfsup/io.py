"""How selfsup writes and reads its files: the one place that decides.

**Writes are atomic.** Every file (checkpoints, exported encoders, feature caches, JSON reports,
figures) is written to a temporary file in the destination folder, flushed and ``fsync``-ed, then
renamed over the destination with ``os.replace`` (atomic on POSIX): a reader, or a run killed
mid-write, sees the old file or the complete new one, never half of one, and a failed write leaves
no temporary file behind. The file is created with mode ``0o666`` filtered by the process umask,
like ``open(path, "w")`` — not the ``0o600`` of :func:`tempfile.mkstemp` — so checkpoints are
as readable by the group as the logs beside them.

**Disk errors are one line.** A full disk, a read-only or forbidden folder, an output path under
a regular file become a :class:`FileWriteError` naming the path and the cause, e.g.
``cannot write 'runs/x/last.ckpt': no space left on device`` — not the zip writer's
``unexpected pos`` traceback that ``torch.save`` raises when its writes fail.

**Reads run no code.** :func:`load_torch_file` is the only ``torch.load`` in selfsup, always
with ``weights_only=True`` (PyTorch's restricted unpickler: tensors, containers, numbers,
strings; https://pytorch.org/docs/stable/notes/serialization.html#weights-only). A selfsup
training checkpoint needs nothing beyond that default allow-list — model, optimizer, LR
scheduler, loop and callback states are plain, and the ``selfsup`` entry (config, dataset
info, RNG streams) is stored as lists and tensors (:func:`selfsup.engine.checkpoint.capture_rng_state`);
``tests/test_safe_loading.py`` checks this on a real run, so :data:`EXTRA_SAFE_GLOBALS` is empty.
A file that names any other Python object (``os.system``, a class whose ``__reduce__`` runs a
command) is refused with an :class:`UnsafeFileError` before anything in it is called; a missing,
empty, truncated or foreign file is a :class:`FileReadError`.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import pickletools
import secrets
import warnings
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Optional, Sequence

from selfsup.errors import SelfSupError

EXTRA_SAFE_GLOBALS: Sequence[Any] = ()
"""Python objects a selfsup file may name beyond ``torch.load(weights_only=True)``'s default
allow-list: none (see the module docstring)."""

_CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EISDIR: "it is a folder",
    errno.ENAMETOOLONG: "the file name is too long",
}


class FileWriteError(SelfSupError):
    """A file could not be written (full disk, no permission, bad output path); one line."""


class FileReadError(SelfSupError):
    """A file is missing, unreadable, or not the kind of file expected; one line."""


class UnsafeFileError(FileReadError):
    """A file holds pickled Python objects that could run code when loaded: refused."""


# --------------------------------------------------------------------------- writing
def _file_in_the_way(path: Path) -> Optional[Path]:
    """The first ancestor of ``path`` that exists and is not a folder, if any."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def _write_error(path: Path, err: OSError) -> FileWriteError:
    """One line naming ``path`` and what the OS said went wrong."""
    blocker = _file_in_the_way(path)
    if blocker is not None:
        cause = f"'{blocker}' is a file, not a folder"
    elif err.errno in _CAUSES:
        cause = _CAUSES[err.errno]
        where = Path(err.filename) if isinstance(err.filename, str) else None
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and where is not None and where != path:
            cause += f" (in '{where.parent if where.name.endswith('.tmp') else where}')"
    else:
        cause = (err.strerror or str(err)).lower()
    return FileWriteError(f"cannot write '{path}': {cause}")


def _os_error_in(err: BaseException) -> Optional[OSError]:
    """The OSError behind ``err``: itself, or the one it was raised from. ``torch.save`` reports a
    failed write of its zip writer as ``RuntimeError: … unexpected pos``, the OSError as context."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new, empty file beside ``path``, opened for writing, with umask permissions."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            # 0o666 & ~umask, as for any new file (mkstemp would give 0o600).
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[tuple[int, Path]]:
    """``(fd, name)`` of a new temporary file beside ``path`` that replaces ``path`` when the block
    ends without an error; on an error it is removed and an OSError becomes one FileWriteError."""
    tmp: Optional[Path] = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temporary(path)
        yield fd, tmp
        os.replace(tmp, path)
        tmp = None
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        cause = _os_error_in(err) if isinstance(err, Exception) else None
        if cause is not None:
            raise _write_error(path, cause) from err
        raise


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary handle whose content replaces ``path`` atomically when the block ends.

    Example:
        >>> with atomic_writer("runs/x/figure.png") as handle:
        ...     figure.savefig(handle, format="png")

    Raises:
        FileWriteError: the folder cannot be made or written, or the disk is full; ``path`` is
            then unchanged and no temporary file is left behind.
    """
    with _replacing(Path(path)) as (fd, _):
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_to(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` for writers that want a file name, not a handle (ONNX's exporter,
    ``torch.jit.save``, safetensors' ``save_file``), into a temporary file beside ``path`` that
    then replaces ``path`` atomically, with the permissions and errors of :func:`atomic_writer`."""
    with _replacing(Path(path)) as (fd, tmp):
        os.close(fd)
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path) as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, payload: Any, indent: Optional[int] = 2,
                      sort_keys: bool = True) -> str:
    """Write ``payload`` as JSON (and a final newline) to ``path`` atomically; returns the JSON text."""
    text = json.dumps(payload, indent=indent, sort_keys=sort_keys)
    atomic_write_text(path, text + "\n")
    return text


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically: a crash never leaves half a checkpoint."""
    import torch

    with atomic_writer(path) as handle:
        torch.save(obj, handle)
    return Path(path)


# --------------------------------------------------------------------------- reading
def _pickle_bytes(path: Path) -> bytes:
    """The pickle inside a ``torch.save`` zip file, or the whole file when it is not a zip."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
            return archive.read(name)
    return path.read_bytes()


def _globals_named(data: bytes) -> set[str]:
    """Every ``module.name`` the pickles in ``data`` import, read statically with
    :mod:`pickletools` (nothing is imported or called): what a refusal names."""
    found: set[str] = set()
    stream = io.BytesIO(data)
    while stream.tell() < len(data):  # a legacy torch.save file is several pickles in a row
        strings: list = []
        memo: dict = {}
        for opcode, arg, _ in pickletools.genops(stream):
            if opcode.name == "GLOBAL":  # protocol 2 spells builtins as Python 2's __builtin__
                found.add(arg.replace(" ", ".").replace("__builtin__.", "builtins."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.add(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str) and "UNICODE" in opcode.name:
                strings.append(arg)
            elif opcode.name == "MEMOIZE" and strings:
                memo[len(memo)] = strings[-1]
            elif opcode.name in ("BINPUT", "LONG_BINPUT", "PUT") and strings:
                memo[arg] = strings[-1]
            elif opcode.name in ("BINGET", "LONG_BINGET", "GET") and arg in memo:
                strings.append(memo[arg])
    return found


def _unsafe_globals(path: Path) -> list[str]:
    """The globals of ``path`` outside torch's weights-only allow-list ([] when unreadable)."""
    import torch

    try:
        named = _globals_named(_pickle_bytes(path))
    except Exception:  # random bytes: the disassembler stops at the first bad opcode
        return []
    try:
        allowed = set(torch._weights_only_unpickler._get_allowed_globals())
        allowed |= set(torch._weights_only_unpickler._get_user_allowed_globals())
    except AttributeError:  # private helpers of torch; without them, name every global
        allowed = set()
    # os.system pickles as posix.system (nt.system on Windows): name it as users know it.
    module_of = {"posix": "os", "nt": "os"}
    return sorted({".".join([module_of.get(name.split(".")[0], name.split(".")[0]), *name.split(".")[1:]])
                   for name in named - allowed})


def load_torch_file(path: str | os.PathLike, expected: str, mmap: bool = False) -> Any:
    """The content of a file written by ``torch.save``, loaded on the CPU with
    ``weights_only=True``: tensors, containers, numbers and strings, never code.

    ``expected`` says what the file should be, for the message (e.g. ``"a selfsup checkpoint or
    exported encoder"``). ``mmap`` maps the tensors' storage instead of reading it (large files
    of which only a small part is used).

    Raises:
        FileReadError: ``path`` is missing, a folder, unreadable, empty, truncated or not a
            ``torch.save`` file: ``'x.ckpt' is not a selfsup checkpoint: <why>``.
        UnsafeFileError: the file pickles a Python object outside the weights-only allow-list:
            ``refused to load 'x.ckpt': it contains a pickled object `os.system`, …``.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise FileReadError(f"'{path}' does not exist (expected {expected})")
    if path.is_dir():
        raise FileReadError(f"'{path}' is a folder, not {expected}")
    try:
        if path.stat().st_size == 0:
            raise FileReadError(f"'{path}' is not {expected}: the file is empty")
        with torch.serialization.safe_globals(list(EXTRA_SAFE_GLOBALS)), warnings.catch_warnings():
            # A crafted pickle of another protocol would add torch's warning to our one line.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (SelfSupError, MemoryError):
        raise
    except OSError as err:
        raise FileReadError(f"cannot read '{path}': {(err.strerror or str(err)).lower()}") from err
    except Exception as err:  # the unpickler and the zip reader raise many kinds for a foreign file
        message = str(err)
        if "Weights only load failed" in message:
            unsafe = _unsafe_globals(path)
            if unsafe:
                what = f"a pickled object `{unsafe[0]}`" if len(unsafe) == 1 else \
                    "pickled objects " + ", ".join(f"`{name}`" for name in unsafe)
                raise UnsafeFileError(f"refused to load '{path}': it contains {what}, which could run code; "
                                      "selfsup loads weights only") from None
        if "mmap can only be used" in message:
            reason = "it is not in torch.save's zip format"
        elif "PytorchStreamReader" in message or "inline_container" in message:
            reason = "it is truncated, corrupted or not a torch.save file"
        elif isinstance(err, EOFError):
            reason = "the file ends too early"
        else:
            reason = "it is not a file written by torch.save"
        raise FileReadError(f"'{path}' is not {expected}: {reason}") from err
