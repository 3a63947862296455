"""Barlow Twins: redundancy reduction on the cross-correlation of two views' embeddings
(Zbontar, Jing, Misra, LeCun, Deny, ICML 2021, Sec. 2, Eq. 1-2).

    C_ij = Σ_b ẑ^A_{b,i} ẑ^B_{b,j} / N                       (Eq. 2; ẑ: embeddings standardised
                                                               along the batch, so C is a correlation)
    L_BT = Σ_i (1 − C_ii)²  +  λ · Σ_i Σ_{j≠i} C_ij²           (Eq. 1), λ = 5·10⁻³

The standardisation is the affine-free BatchNorm of the authors' implementation, in training
mode: per-dimension mean and *biased* variance over the batch, ``ε = 1e-5``.

Distributed training (the paper trains with batch 2048 over 32 GPUs): ``C`` is a statistic of
the *global* batch. Each process therefore

1. standardises its embeddings with the global mean and variance, obtained as differentiable
   ``all_reduce`` sums of ``Σ_b z_b``, ``Σ_b (z_b − mean)²`` and the row count ``N``;
2. computes its partial ``Σ_{b local} ẑ^A_b ẑ^B_bᵀ`` and sums it over processes with a
   differentiable ``all_reduce``, then divides by the global ``N``.

Every process then holds the same ``C`` and the same loss; the ``all_reduce`` backward sums the
processes' (identical) upstream gradients, i.e. ``world_size × ∂L/∂(local rows)``, and DDP's
average over processes divides that factor away again: the update equals one process training
on the global batch (checked by ``tests/methods/test_noncontrastive.py``).
"""

from __future__ import annotations

from typing import NamedTuple, Tuple

import torch
import torch.distributed.nn.functional as dist_fn
from torch import Tensor, nn

from selfsup import distributed


def _sum_over_processes(x: Tensor, enabled: bool) -> Tensor:
    """Differentiable sum of ``x`` over all processes (identity in a single process)."""
    if enabled and distributed.is_distributed():
        return dist_fn.all_reduce(x)
    return x


def standardize(z: Tensor, eps: float = 1e-5, global_batch: bool = True) -> Tuple[Tensor, Tensor]:
    """Per-dimension ``(z − mean) / sqrt(var + ε)`` over the (global) batch; biased variance.

    Args:
        z: ``(B, D)`` local embeddings.
        eps: added to the variance (BatchNorm's default).
        global_batch: use the statistics of all processes' rows when DDP is initialised.
    Returns:
        ``(B, D)`` standardised local rows and the global row count ``N`` (a 0-d tensor).
    """
    count = _sum_over_processes(torch.full((), float(z.shape[0]), device=z.device, dtype=z.dtype), global_batch)
    mean = _sum_over_processes(z.sum(dim=0), global_batch) / count
    centred = z - mean
    var = _sum_over_processes(centred.pow(2).sum(dim=0), global_batch) / count
    return centred / torch.sqrt(var + eps), count


def cross_correlation(z_a: Tensor, z_b: Tensor, eps: float = 1e-5, global_batch: bool = True) -> Tensor:
    """``C`` of Eq. 2 over the (global) batch.

    Args:
        z_a: ``(B, D)`` embeddings of the first views.
        z_b: ``(B, D)`` embeddings of the second views.
    Returns:
        ``(D, D)`` cross-correlation, entries in ``[−1, 1]`` up to ε.
    """
    a, count = standardize(z_a, eps, global_batch)
    b, _ = standardize(z_b, eps, global_batch)
    return _sum_over_processes(a.T @ b, global_batch) / count


class BarlowTwinsTerms(NamedTuple):
    """The total loss and its two parts, unweighted (for logging)."""

    loss: Tensor
    on_diagonal: Tensor
    off_diagonal: Tensor


class BarlowTwinsLoss(nn.Module):
    """``Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij²`` over the global batch (Eq. 1).

    Args:
        off_diagonal_weight: λ, trading invariance (diagonal → 1) against redundancy reduction
            (off-diagonal → 0); 5e-3 in the paper.
        eps: ε of the batch standardisation.
        gather_distributed: global batch statistics and correlation under DDP (see module doc).

    Example:
        >>> terms = BarlowTwinsLoss()(z_a, z_b)   # (B, D) each; terms.loss is the scalar
    """

    def __init__(self, off_diagonal_weight: float = 5e-3, eps: float = 1e-5, gather_distributed: bool = True) -> None:
        super().__init__()
        if off_diagonal_weight < 0:
            raise ValueError(f"off_diagonal_weight must be >= 0, got {off_diagonal_weight}")
        self.off_diagonal_weight = off_diagonal_weight
        self.eps = eps
        self.gather_distributed = gather_distributed

    def forward(self, z_a: Tensor, z_b: Tensor) -> BarlowTwinsTerms:
        if z_a.shape != z_b.shape or z_a.dim() != 2:
            raise ValueError(f"expected two (B, D) tensors of equal shape, got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
        c = cross_correlation(z_a, z_b, self.eps, self.gather_distributed)
        diagonal = torch.diagonal(c)
        on_diagonal = (1.0 - diagonal).pow(2).sum()
        off_diagonal = (c - torch.diag_embed(diagonal)).pow(2).sum()
        return BarlowTwinsTerms(on_diagonal + self.off_diagonal_weight * off_diagonal, on_diagonal, off_diagonal)


__all__ = ["BarlowTwinsLoss", "BarlowTwinsTerms", "cross_correlation", "standardize"]
