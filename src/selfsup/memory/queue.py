"""MoCo's dictionary as a queue (He et al. 2019, Sec. 3.2): the keys of the last K/B batches."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from selfsup.distributed import gather_no_grad


class KeyQueue(nn.Module):
    """A FIFO of ``size`` L2-normalised keys of dimension ``dim``, saved in the state dict.

    :meth:`enqueue` writes the newest keys over the oldest ones (a ring buffer: the write
    position ``ptr`` advances by the batch size), so :meth:`keys` in insertion order is
    ``stored[ptr:] ++ stored[:ptr]``. Under DDP the keys of every process are gathered first, so
    all processes keep the same queue. Initialised with random unit vectors, as in MoCo's code.

    Shapes:
        ``enqueue((B, dim))``; ``queue.stored``: ``(size, dim)``.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"queue size ({size}) and key dimension ({dim}) must be positive")
        self.size = size
        self.register_buffer("stored", nn.functional.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Append ``keys`` (gathered across processes), dropping as many of the oldest."""
        keys = gather_no_grad(keys.detach()).to(self.stored.dtype)
        n = keys.shape[0]
        if n > self.size:  # a batch bigger than the queue: only its newest `size` keys fit
            keys, n = keys[-self.size:], self.size
        start = int(self.ptr)
        positions = (torch.arange(n, device=keys.device) + start) % self.size
        self.stored.index_copy_(0, positions.to(self.stored.device), keys)
        self.ptr.fill_((start + n) % self.size)

    def keys(self) -> Tensor:
        """``(size, dim)`` keys from oldest to newest (the stored buffer is unordered by design)."""
        p = int(self.ptr)
        return torch.cat([self.stored[p:], self.stored[:p]])

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.stored.shape[1]}"
