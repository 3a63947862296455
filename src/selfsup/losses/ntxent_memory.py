"""NT-Xent with extra negatives from a memory (SimCLR v2, Chen et al. 2020b, Sec. 2).

SimCLR v2 keeps SimCLR's loss (Chen et al. 2020, Eq. 1) and adds MoCo's memory: the projections
of a momentum network from past batches are buffered and serve as further negatives. For view
``i`` with positive ``j`` (the other view of the same image)::

    l(i, j) = -log  exp(s_ij / τ) / ( Σ_{k ≠ i} exp(s_ik / τ) + Σ_{m ∈ memory} exp(s_im / τ) )

with ``s`` the cosine similarity; ``k`` runs over the ``2N`` views of the (global) batch. With an
empty memory this is exactly :class:`~selfsup.losses.ntxent.NTXentLoss`.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup import distributed


class NTXentMemoryLoss(nn.Module):
    """NT-Xent over ``2N`` views plus ``K`` memory negatives.

    Args:
        temperature: τ (SimCLR v2 on ImageNet: 0.1).
        gather_distributed: take the batch negatives of every process under DDP (with gradients,
            as :class:`~selfsup.losses.ntxent.NTXentLoss`); the memory is the same on every process.

    Shapes:
        ``z_a (B, D)``, ``z_b (B, D)``, ``memory (K, D)`` or None → scalar loss.
    """

    def __init__(self, temperature: float = 0.1, gather_distributed: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def forward(self, z_a: Tensor, z_b: Tensor, memory: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            z_a, z_b: ``(B, D)`` projections of the two views; row ``i`` of each is image ``i``.
            memory: ``(K, D)`` extra negatives (no gradient flows into them), or None.
        """
        if z_a.shape != z_b.shape or z_a.dim() != 2:
            raise ValueError(f"expected two (B, D) tensors of equal shape, got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
        if memory is not None and (memory.dim() != 2 or memory.shape[1] != z_a.shape[1]):
            raise ValueError(f"memory must be (K, {z_a.shape[1]}), got {tuple(memory.shape)}")
        batch = z_a.shape[0]
        z_a, z_b = F.normalize(z_a, dim=1), F.normalize(z_b, dim=1)
        if self.gather_distributed:
            keys_a, keys_b = distributed.gather_with_grad(z_a), distributed.gather_with_grad(z_b)
            offset = distributed.rank() * batch
        else:
            keys_a, keys_b, offset = z_a, z_b, 0
        total = keys_a.shape[0]

        anchors = torch.cat([z_a, z_b])  # (2B, D)
        logits = anchors @ torch.cat([keys_a, keys_b]).T  # (2B, 2N)
        local = torch.arange(batch, device=z_a.device) + offset
        rows = torch.arange(2 * batch, device=z_a.device)
        # An anchor is never its own negative (the fill value a device tensor: no host→device copy per step).
        minus_inf = torch.full((), float("-inf"), dtype=logits.dtype, device=logits.device)
        logits.index_put_((rows, torch.cat([local, local + total])), minus_inf)
        if memory is not None:
            memory = F.normalize(memory.detach(), dim=1).to(anchors.dtype)
            logits = torch.cat([logits, anchors @ memory.T], dim=1)  # (2B, 2N + K)
        positive = torch.cat([local + total, local])  # the other view of the same image
        return F.cross_entropy(logits / self.temperature, positive)
