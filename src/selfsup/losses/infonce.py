"""InfoNCE for momentum contrast: against a queue of negatives (MoCo v1/v2) and within the batch (MoCo v3).

Both follow the InfoNCE form of MoCo (He et al. 2019, Eq. 1; van den Oord et al. 2018)::

    L_q = -log  exp(q·k₊ / τ) / Σ_{k ∈ {k₊} ∪ negatives} exp(q·k / τ)

on L2-normalised vectors, i.e. cross-entropy over ``1 + #negatives`` logits whose target is the
positive. MoCo v1/v2 take the negatives from a queue of past keys; MoCo v3 (Chen, Xie, He 2021,
Alg. 1) takes them from the keys of the current (global) batch and symmetrises the loss.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup import distributed


def _check_temperature(temperature: float) -> float:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return temperature


class QueueInfoNCELoss(nn.Module):
    """MoCo's contrastive loss (He et al. 2019, Eq. 1 and Alg. 1): one positive key per query,
    ``K`` negatives from the queue.

    Logits are ``[q·k₊, q·n₁, …, q·n_K] / τ``; the loss is their cross-entropy with target 0,
    averaged over the batch. Queries and keys are L2-normalised here (idempotent for inputs that
    already are), so any head output can be passed.

    Args:
        temperature: τ; 0.07 in MoCo v1, 0.2 in MoCo v2.

    Shapes:
        ``query (B, D)``, ``positive (B, D)``, ``negatives (K, D)`` → scalar loss and logits ``(B, 1 + K)``.
    """

    def __init__(self, temperature: float = 0.07) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)

    def forward(self, query: Tensor, positive: Tensor, negatives: Tensor) -> Tuple[Tensor, Tensor]:
        """
        Args:
            query: ``(B, D)`` query embeddings ``q`` (with gradient).
            positive: ``(B, D)`` key ``k₊`` of the same image, row for row (no gradient in MoCo).
            negatives: ``(K, D)`` queue keys.
        Returns:
            ``(loss, logits)``; logits ``(B, 1 + K)`` with the positive in column 0.
        """
        if query.dim() != 2 or query.shape != positive.shape or negatives.dim() != 2 or negatives.shape[1] != query.shape[1]:
            raise ValueError(f"expected query (B, D), positive (B, D) and negatives (K, D), got "
                             f"{tuple(query.shape)}, {tuple(positive.shape)} and {tuple(negatives.shape)}")
        query = F.normalize(query, dim=1)
        positive = F.normalize(positive, dim=1)
        negatives = F.normalize(negatives, dim=1).to(query.dtype)
        positive_logits = (query * positive).sum(dim=1, keepdim=True)  # (B, 1)
        negative_logits = query @ negatives.T  # (B, K)
        logits = torch.cat([positive_logits, negative_logits], dim=1) / self.temperature
        targets = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
        return F.cross_entropy(logits, targets), logits


def in_batch_infonce(query: Tensor, keys: Tensor, temperature: float, gather_distributed: bool = True) -> Tensor:
    """MoCo v3's ``ctr(q, k)`` (Chen, Xie, He 2021, Alg. 1): each query's positive is the key of the
    same image; the keys of the other images of the global batch are its negatives.

    The cross-entropy is multiplied by ``2τ``, as in the paper's pseudo-code, which makes the
    gradient's scale less sensitive to τ. Keys are gathered from every process without gradient
    (they come from the momentum encoder).

    Args:
        query: ``(B, D)`` predictions of this process.
        keys: ``(B, D)`` momentum-encoder keys of this process, row ``i`` pairs with ``query[i]``.
    Returns:
        scalar loss.
    """
    if query.dim() != 2 or query.shape != keys.shape:
        raise ValueError(f"expected two (B, D) tensors of equal shape, got {tuple(query.shape)} and {tuple(keys.shape)}")
    query = F.normalize(query, dim=1)
    keys = F.normalize(keys, dim=1)
    if gather_distributed:
        all_keys, offset = distributed.gather_no_grad(keys), distributed.rank() * query.shape[0]
    else:
        all_keys, offset = keys, 0
    logits = query @ all_keys.T / temperature  # (B, N)
    targets = torch.arange(query.shape[0], device=query.device) + offset
    return F.cross_entropy(logits, targets) * (2 * temperature)


class SymmetricInfoNCELoss(nn.Module):
    """MoCo v3's loss: ``ctr(q₁, k₂) + ctr(q₂, k₁)`` (Chen, Xie, He 2021, Alg. 1).

    Args:
        temperature: τ; 1.0 for ResNet-50 and 0.2 for ViTs in the authors' recipes.
        gather_distributed: take the negatives from the keys of every process under DDP.

    Shapes:
        four ``(B, D)`` tensors → scalar loss.
    """

    def __init__(self, temperature: float = 0.2, gather_distributed: bool = True) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)
        self.gather_distributed = gather_distributed

    def forward(self, q1: Tensor, q2: Tensor, k1: Tensor, k2: Tensor) -> Tensor:
        """``q_i`` are the query-branch predictions of view ``i``, ``k_i`` the momentum keys of view ``i``."""
        return (in_batch_infonce(q1, k2, self.temperature, self.gather_distributed)
                + in_batch_infonce(q2, k1, self.temperature, self.gather_distributed))
