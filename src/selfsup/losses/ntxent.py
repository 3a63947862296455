"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (Chen et al. 2020, Eq. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import distributed
from selfsup.losses.precision import full_precision


class NTXentLoss(nn.Module):
    """Contrastive loss over ``2N`` views of ``N`` images.

    For view ``i`` with positive ``j`` (the other view of the same image)::

        l(i, j) = -log  exp(sim(z_i, z_j) / τ) / Σ_{k ≠ i} exp(sim(z_i, z_k) / τ)

    averaged over all ``2N`` anchors, where ``sim`` is cosine similarity and ``k`` runs over
    the other ``2N - 1`` views: the ``2(N - 1)`` views of other images are the negatives.

    Under DDP the embeddings of every process are gathered (with gradients), so each anchor
    sees the negatives of the global batch, as in the paper's large-batch training. Each
    process's loss is the mean over its own anchors; DDP's gradient averaging then gives exactly
    the gradient of the single-process loss on the global batch.

    Args:
        temperature: τ; SimCLR uses 0.1 for ImageNet with large batches and 0.5 for CIFAR-10.
        gather_distributed: gather negatives across processes when DDP is initialised.

    Example:
        >>> loss = NTXentLoss(temperature=0.5)(z_a, z_b)   # z_a, z_b: (B, D)
    """

    def __init__(self, temperature: float = 0.5, gather_distributed: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        """
        Args:
            z_a: ``(B, D)`` projections of the first views.
            z_b: ``(B, D)`` projections of the second views; row ``i`` pairs with ``z_a[i]``.
        Returns:
            scalar loss.
        """
        if z_a.shape != z_b.shape or z_a.dim() != 2:
            raise ValueError(f"expected two (B, D) tensors of equal shape, got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
        batch = z_a.shape[0]
        z_a = F.normalize(z_a, dim=1)
        z_b = F.normalize(z_b, dim=1)
        if self.gather_distributed:
            keys_a, keys_b = distributed.gather_with_grad(z_a), distributed.gather_with_grad(z_b)
            offset = distributed.rank() * batch
        else:
            keys_a, keys_b, offset = z_a, z_b, 0
        total = keys_a.shape[0]

        anchors = torch.cat([z_a, z_b])  # (2B, D)
        keys = torch.cat([keys_a, keys_b])  # (2N, D)
        # Similarities in float32 even under mixed precision: bf16 keeps ~3 digits, too few for
        # logits of size 1/τ that differ by small amounts.
        with torch.autocast(anchors.device.type, enabled=False):
            logits = full_precision(anchors) @ full_precision(keys).T / self.temperature  # (2B, 2N)

        local = torch.arange(batch, device=z_a.device) + offset
        # An anchor is never its own negative: mask its self-similarity.
        self_index = torch.cat([local, local + total])
        # The fill value as a device tensor: a Python float here is copied host→device each step (a sync).
        minus_inf = torch.full((), float("-inf"), dtype=logits.dtype, device=logits.device)
        logits.index_put_((torch.arange(2 * batch, device=z_a.device), self_index), minus_inf)
        # The positive of a first view is the second view of the same image, and vice versa.
        positive_index = torch.cat([local + total, local])
        return F.cross_entropy(logits, positive_index)
