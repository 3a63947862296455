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
    keeps the same bank. Initialised with random unit vectors, as in the paper; with
    ``fill_on_first_visit`` an entry instead takes the image's first feature as it is (no mixing
    with the random start), and :meth:`get` can hand out a stand-in for entries not yet filled.

    Shapes:
        ``vectors``: ``(size, dim)``; ``update(indices (B,), features (B, dim))``.
    """

    def __init__(self, size: int, dim: int, momentum: float = 0.5, fill_on_first_visit: bool = False) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"bank size ({size}) and dimension ({dim}) must be positive")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"bank momentum must be in [0, 1), got {momentum}")
        self.size = size
        self.momentum = momentum
        self.register_buffer("vectors", F.normalize(torch.randn(size, dim), dim=1))
        # True where the entry holds a feature of its image (all of them when starting random).
        self.register_buffer("filled", torch.full((size,), not fill_on_first_visit, dtype=torch.bool))

    def get(self, indices: Tensor, unfilled: Optional[Tensor] = None) -> Tensor:
        """``(B, dim)`` entries at ``indices (B,)``; rows whose entry is not filled yet take the
        row of ``unfilled (B, dim)`` when it is given."""
        indices = indices.to(self.vectors.device)
        entries = self.vectors.index_select(0, indices)
        if unfilled is None:
            return entries
        return torch.where(self.filled.index_select(0, indices)[:, None], entries, unfilled.to(entries.dtype))

    def sample(self, count: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``(count,)`` indices drawn uniformly with replacement: NPID's noise distribution ``P_n = 1/n``."""
        return torch.randint(self.size, (count,), generator=generator).to(self.vectors.device)

    @torch.no_grad()
    def update(self, indices: Tensor, features: Tensor) -> None:
        """Move the entries at ``indices`` towards ``features`` (gathered across processes) and renormalise."""
        indices = gather_no_grad(indices.to(self.vectors.device))
        features = gather_no_grad(features.detach().to(self.vectors.device, self.vectors.dtype))
        # An entry not filled yet starts from the feature itself, so the mix is just the feature.
        old = torch.where(self.filled.index_select(0, indices)[:, None], self.vectors.index_select(0, indices), features)
        mixed = self.momentum * old + (1.0 - self.momentum) * features
        self.vectors.index_copy_(0, indices, F.normalize(mixed, dim=1))
        self.filled.index_fill_(0, indices, True)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.vectors.shape[1]}, momentum={self.momentum}"
