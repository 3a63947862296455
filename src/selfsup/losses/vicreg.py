"""VICReg: Variance-Invariance-Covariance Regularization (Bardes, Ponce, LeCun, ICLR 2022).

For two batches of embeddings ``Z, Z'`` of shape ``(n, d)`` (Sec. 3.1, 3.2)::

    s(Z, Z') = 1/n Σ_i ‖z_i − z'_i‖²                           invariance, Eq. 5 (here also / d: MSE)
    v(Z)     = 1/d Σ_j max(0, γ − sqrt(Var(z^j) + ε))           variance hinge, Eq. 1-2
    c(Z)     = 1/d Σ_{i≠j} [C(Z)]²_{ij},  C(Z) = 1/(n−1) Σ_i (z_i − z̄)(z_i − z̄)ᵀ    Eq. 3-4
    ℓ        = λ·s(Z, Z') + μ·[v(Z) + v(Z')] + ν·[c(Z) + c(Z')]                       Eq. 6

with λ = μ = 25, ν = 1, γ = 1, ε = 1e-4 (Sec. 4.1). The invariance term is the mean squared
error over all ``n·d`` entries, as in the paper's Algorithm 1 (``F.mse_loss``), which is Eq. 5
divided by ``d``; the weights λ = 25 were chosen for that form.

The variance term has two published forms. Eq. 6 (and Algorithm 1) *sums* the two hinges; the
authors' released code (``facebookresearch/vicreg``, ``main_vicreg.py``), which produced the
paper's numbers, *averages* them: ``std_loss = mean(relu(1 − std_x))/2 + mean(relu(1 − std_y))/2``,
so with the same μ = 25 the published runs weighed the variance half as much as Eq. 6 reads.
``variance_reduction="mean"`` (the default) is the released code's form, ``"sum"`` is Eq. 6 as
printed. The covariance term is summed over the two branches in both (as here).

Under DDP, variance and covariance are batch statistics: the embeddings of every process are
gathered (with gradients) first, so they are computed over the global batch, as in the paper.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup import distributed

VARIANCE_REDUCTIONS = ("mean", "sum")


def invariance_term(z_a: Tensor, z_b: Tensor) -> Tensor:
    """``s(Z, Z')``: mean squared difference over all ``(n, d)`` entries. Scalar."""
    return F.mse_loss(z_a, z_b)


def variance_term(z: Tensor, gamma: float = 1.0, eps: float = 1e-4) -> Tensor:
    """``v(Z)``: mean over dimensions of ``max(0, γ − std)``, std regularised by ε (Eq. 1-2).

    Args:
        z: ``(n, d)`` embeddings, ``n >= 2`` (unbiased variance).
    Returns:
        scalar in ``[0, γ]``.
    """
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(gamma - std).mean()


def covariance_term(z: Tensor) -> Tensor:
    """``c(Z)``: sum of squared off-diagonal covariances divided by ``d`` (Eq. 3-4).

    Args:
        z: ``(n, d)`` embeddings, ``n >= 2``.
    Returns:
        scalar >= 0.
    """
    n, d = z.shape
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (n - 1)  # (d, d)
    off_diagonal = cov - torch.diag_embed(torch.diagonal(cov))
    return off_diagonal.pow(2).sum() / d


class VICRegTerms(NamedTuple):
    """The weighted total and the three unweighted terms (for logging)."""

    loss: Tensor
    invariance: Tensor
    variance: Tensor
    """The two branches' variance hinges, averaged or summed as ``variance_reduction`` says."""
    covariance: Tensor


class VICRegLoss(nn.Module):
    """``λ·s + μ·r(v(Z), v(Z')) + ν·[c(Z) + c(Z')]``: Eq. 6 with ``r`` the mean (the authors'
    released code, default) or the sum (Eq. 6 as printed) of the two variance hinges.

    Args:
        invariance_weight: λ (25).
        variance_weight: μ (25).
        covariance_weight: ν (1).
        gamma: target standard deviation γ of every dimension (1).
        eps: ε inside the square root of the variance (1e-4).
        gather_distributed: compute variance and covariance over the batch of all processes.
        variance_reduction: ``"mean"`` of the two branches' variance hinges, as the released code
            that produced the paper's numbers (default), or ``"sum"``, Eq. 6 as printed.

    Example:
        >>> terms = VICRegLoss()(z_a, z_b)   # z_a, z_b: (B, D); terms.loss is the scalar to minimise
    """

    def __init__(self, invariance_weight: float = 25.0, variance_weight: float = 25.0, covariance_weight: float = 1.0,
                 gamma: float = 1.0, eps: float = 1e-4, gather_distributed: bool = True,
                 variance_reduction: str = "mean") -> None:
        super().__init__()
        if variance_reduction not in VARIANCE_REDUCTIONS:
            raise ValueError(f"variance_reduction must be one of {', '.join(VARIANCE_REDUCTIONS)}, "
                             f"got {variance_reduction!r}")
        for name, value in (("invariance_weight", invariance_weight), ("variance_weight", variance_weight),
                            ("covariance_weight", covariance_weight), ("eps", eps)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.invariance_weight = invariance_weight
        self.variance_weight = variance_weight
        self.covariance_weight = covariance_weight
        self.gamma = gamma
        self.eps = eps
        self.gather_distributed = gather_distributed
        self.variance_reduction = variance_reduction

    def forward(self, z_a: Tensor, z_b: Tensor) -> VICRegTerms:
        """
        Args:
            z_a: ``(B, D)`` expander outputs of the first views.
            z_b: ``(B, D)`` expander outputs of the second views; row ``i`` pairs with ``z_a[i]``.
        Returns:
            :class:`VICRegTerms`; ``loss`` is a scalar.
        """
        if z_a.shape != z_b.shape or z_a.dim() != 2:
            raise ValueError(f"expected two (B, D) tensors of equal shape, got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
        # A per-pair term: the mean over local pairs, averaged by DDP, is the global mean.
        invariance = invariance_term(z_a, z_b)
        if self.gather_distributed:
            # Batch statistics: every process computes them over the same global batch; the
            # gather's backward sends each process the gradient of its own rows.
            z_a, z_b = distributed.gather_with_grad(z_a), distributed.gather_with_grad(z_b)
        if z_a.shape[0] < 2:
            raise ValueError("VICReg's variance and covariance need a batch of at least 2 embeddings")
        variance = variance_term(z_a, self.gamma, self.eps) + variance_term(z_b, self.gamma, self.eps)
        if self.variance_reduction == "mean":
            variance = variance / 2
        covariance = covariance_term(z_a) + covariance_term(z_b)
        loss = self.invariance_weight * invariance + self.variance_weight * variance + self.covariance_weight * covariance
        return VICRegTerms(loss, invariance, variance, covariance)


__all__ = ["VICRegLoss", "VICRegTerms", "covariance_term", "invariance_term", "variance_term"]
