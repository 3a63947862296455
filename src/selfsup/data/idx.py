"""Reader for the IDX format of (Fashion-)MNIST: http://yann.lecun.com/exdb/mnist/ (bottom of page)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from selfsup.errors import DataError

_UBYTE = 0x08  # the only element type (Fashion-)MNIST uses


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or ``.gz``) into a uint8 array of the shape its header declares.

    The header is two zero bytes, a type code, the number of dimensions, then one big-endian
    int32 per dimension; the pixels follow.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _UBYTE:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad header {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(shape)):
        raise DataError(f"{path} is truncated or corrupt: header says {shape}, found {len(raw) - offset} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape)
