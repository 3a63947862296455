"""Evaluation in bounded memory: arrays above a budget live in files on disk, read in chunks.

ImageNet's 1.28 M training images give 10 GB of ResNet-50 features (2048 floats each), and the
raw-pixel floor at 224 px would be 720 GiB: held in RAM, either ends the run. An array larger than
the budget is written to an unnamed file and mapped back with :class:`numpy.memmap`. The mapping
is shared, so its pages belong to the kernel's page cache — written back and evicted as memory
runs short — not to the process's anonymous memory (nor to its ``RLIMIT_DATA``). The protocols
(:mod:`~selfsup.evaluation.knn`, :mod:`~selfsup.evaluation.linear`) read such arrays a chunk of
rows at a time; arrays within the budget take the unchunked in-memory path, so small datasets
(Fashion-MNIST, CIFAR) give exactly the numbers they gave before there was a budget.

The budget bounds each array, not the process: the peak is a small multiple of it (a split's
features, the kNN's normalised bank, a similarity block), independent of the dataset's size.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from selfsup.errors import ConfigError

DEFAULT_BUDGET_GB = 4.0
"""Fashion-MNIST's and CIFAR's features and pixels stay well within it: they never touch the disk."""


@dataclass(frozen=True)
class MemoryBudget:
    """Where evaluation arrays go: RAM up to ``max_bytes`` each, files in ``directory`` beyond.

    ``directory`` is the feature cache's folder when there is one (the same disk as the cache),
    else the system's temporary folder (``$TMPDIR``; point it at a disk, not a RAM-backed tmpfs).
    The files are unnamed (``O_TMPFILE``) and vanish with the last tensor that maps them.

    Example:
        >>> memory = MemoryBudget.gigabytes(4, "runs/x/features")
        >>> features = memory.empty((1_281_167, 2048))   # 10 GB: a file, mapped
        >>> chunk = memory.chunk_rows(2048 * 4)           # rows to read at a time
    """

    max_bytes: int
    directory: Optional[Path] = None

    @classmethod
    def gigabytes(cls, gigabytes: float, directory: Union[str, Path, None] = None) -> "MemoryBudget":
        if not gigabytes > 0:
            raise ConfigError(f"the memory budget must be a positive number of GB, got {gigabytes}")
        return cls(int(gigabytes * 2**30), Path(directory) if directory is not None else None)

    def fits(self, nbytes: int) -> bool:
        """Whether an array of ``nbytes`` may be held in RAM."""
        return nbytes <= self.max_bytes

    def chunk_rows(self, row_bytes: int) -> int:
        """Rows of ``row_bytes`` each per working chunk: an eighth of the budget, at least one row."""
        return max(1, self.max_bytes // (8 * max(1, row_bytes)))

    def empty(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> Tensor:
        """An uninitialised tensor: in RAM when it fits the budget, else mapped from a file."""
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        if self.fits(nbytes) or nbytes == 0:
            return torch.empty(tuple(shape), dtype=dtype)
        return disk_tensor(shape, dtype, self.directory)

    def take(self, x: Tensor, index: Tensor) -> Tensor:
        """``x[index]`` along the first dimension; copied chunk by chunk into a file when it is above the budget."""
        index = torch.as_tensor(index, dtype=torch.int64)
        row_bytes = x[:1].numel() * x.element_size()
        if self.fits(len(index) * row_bytes):
            return x[index]
        out = self.empty((len(index), *x.shape[1:]), x.dtype)
        step = self.chunk_rows(row_bytes)
        for start in range(0, len(index), step):
            out[start:start + step] = x[index[start:start + step]]
        return out


def disk_tensor(shape: Sequence[int], dtype: torch.dtype = torch.float32,
                directory: Union[str, Path, None] = None) -> Tensor:
    """An uninitialised CPU tensor backed by an unnamed file in ``directory`` (default: ``$TMPDIR``).

    The file has no name from the start (``tempfile.TemporaryFile``), so nothing is left behind
    however the process ends; the tensor keeps the mapping, and with it the disk space, alive.
    """
    if directory is not None:
        Path(directory).mkdir(parents=True, exist_ok=True)
    np_dtype = torch.empty((), dtype=dtype).numpy().dtype
    with tempfile.TemporaryFile(dir=directory, prefix="selfsup-features-") as file:
        # mode w+ sizes the file; the mapping outlives the descriptor closed here.
        array = np.memmap(file, dtype=np_dtype, mode="w+", shape=tuple(shape))
    return torch.from_numpy(array)
