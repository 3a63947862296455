"""A memory bank of one embedding per training image (instance discrimination, Wu et al. 2018, Sec. 3)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.distributed import gather_no_grad


class MemoryBank(nn.Module):
    """``size`` L2-normalised entries of dimension ``dim``, one per dataset index, saved in the state dict.

    After each step the entries of the batch's images move towards their new features with
    momentum and are renormalised. The paper writes the update as ``f_i → v_i``; the authors'
    released code mixes with momentum ``m = 0.5``, which damps the noise of single steps::

        v_i ← normalise(m·v_i + (1 − m)·f_i)

    Under DDP the indices and features of every process are gathered first, so every process
    keeps the same bank. Initialised with random unit vectors, as in the paper.

    Shapes:
        ``vectors``: ``(size, dim)``; ``update(indices (B,), features (B, dim))``.
    """

    def __init__(self, size: int, dim: int, momentum: float = 0.5) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"bank size ({size}) and dimension ({dim}) must be positive")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"bank momentum must be in [0, 1), got {momentum}")
        self.size = size
        self.momentum = momentum
        self.register_buffer("vectors", F.normalize(torch.randn(size, dim), dim=1))

    def get(self, indices: Tensor) -> Tensor:
        """``(B, dim)`` entries at ``indices (B,)``."""
        return self.vectors.index_select(0, indices.to(self.vectors.device))

    def sample(self, count: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``(count,)`` indices drawn uniformly with replacement: NPID's noise distribution ``P_n = 1/n``."""
        return torch.randint(self.size, (count,), generator=generator).to(self.vectors.device)

    @torch.no_grad()
    def update(self, indices: Tensor, features: Tensor) -> None:
        """Move the entries at ``indices`` towards ``features`` (gathered across processes) and renormalise."""
        indices = gather_no_grad(indices.to(self.vectors.device))
        features = gather_no_grad(features.detach().to(self.vectors.device, self.vectors.dtype))
        mixed = self.momentum * self.vectors.index_select(0, indices) + (1.0 - self.momentum) * features
        self.vectors.index_copy_(0, indices, F.normalize(mixed, dim=1))

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.vectors.shape[1]}, momentum={self.momentum}"
