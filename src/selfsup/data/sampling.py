"""Training order and per-sample randomness as pure functions of (seed, epoch, index).

A resumed run must draw what an uninterrupted one drew. DataLoader workers make views with
their own RNG streams, seeded once per iterator (and kept across epochs by persistent workers),
which no checkpoint captures: after ``--resume`` the views differed. Here nothing depends on
worker state: :class:`EpochShuffleSampler` derives each epoch's order from ``seed + epoch`` and
hands every index to the workers together with its epoch, and :func:`seeded` gives every sample its
own seed (:class:`~selfsup.data.ViewDataset` draws the sample's views inside it). The results are
then the same for any number of workers, any timing, and across kills.
"""

from __future__ import annotations

import math
import random
from contextlib import contextmanager
from typing import Iterator, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

EpochIndex = Tuple[int, int]  # (epoch, dataset index): what the sampler yields and ViewDataset takes


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 64-bit seed for one sample, well mixed from its three parts by numpy's SeedSequence
    (so neighbouring indices or epochs get unrelated streams)."""
    words = np.random.SeedSequence([seed % 2 ** 64, epoch, index]).generate_state(2, np.uint32)
    return int(words[0]) << 32 | int(words[1])


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's CPU, Python's and numpy's global generators seeded from ``seed``,
    then restore them: the block's draws are a function of ``seed`` alone and the caller's
    streams (checkpointed in the main process) are left as they were."""
    torch_state, python_state, numpy_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        random.setstate(python_state)
        np.random.set_state(numpy_state)


class EpochShuffleSampler(DistributedSampler):
    """Yields ``(epoch, index)`` pairs: a permutation of ``range(size)`` drawn from ``seed + epoch``.

    The epoch travels with each index through the DataLoader's index queue, so it reaches the
    workers exactly, even persistent ones and batches prefetched across an epoch boundary.
    Lightning calls :meth:`set_epoch` at every epoch start (also the first one after ``--resume``).

    A :class:`~torch.utils.data.DistributedSampler`, so Lightning does not replace it under DDP; the
    process group is read when iterating (it does not exist yet when the loader is built) and each
    process takes its share of the permutation as DistributedSampler does.
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        super().__init__(range(size), num_replicas=1, rank=0, shuffle=True, seed=seed, drop_last=False)

    def _join_process_group(self) -> None:
        if dist.is_available() and dist.is_initialized():
            world, rank = dist.get_world_size(), dist.get_rank()
            if (world, rank) != (self.num_replicas, self.rank):
                self.num_replicas, self.rank = world, rank
                self.num_samples = math.ceil(len(self.dataset) / world)
                self.total_size = self.num_samples * world

    def __iter__(self) -> Iterator[EpochIndex]:  # type: ignore[override]
        self._join_process_group()
        epoch = self.epoch
        return ((epoch, index) for index in super().__iter__())

    def __len__(self) -> int:
        self._join_process_group()
        return self.num_samples


class LoaderGenerator(torch.Generator):
    """A CPU ``torch.Generator`` seeded with ``seed`` for ``DataLoader(generator=...)``.

    The DataLoader draws its workers' base seed from it instead of from the global stream, which
    checkpoints capture: otherwise persistent workers (one draw per run) and a resumed run (one more
    draw) would shift the global stream. Unlike a plain Generator, it survives the pickling of
    ``torch.multiprocessing`` into spawned processes (Lightning's ``ddp_spawn``), whose shared-memory
    rebuild of the Generator's state tensor fails; its state travels as bytes.
    """

    def __new__(cls, seed: int = 0) -> "LoaderGenerator":
        return super().__new__(cls, device="cpu")  # the C type reads its arguments as (device,)

    def __init__(self, seed: int = 0) -> None:
        self.manual_seed(seed)

    def __reduce__(self):
        return _rebuild_loader_generator, (bytes(self.get_state().numpy()),)


def _rebuild_loader_generator(state: bytes) -> LoaderGenerator:
    generator = LoaderGenerator()
    generator.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))
    return generator
