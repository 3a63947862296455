"""Instance discrimination losses over a memory bank (Wu, Xiong, Yu, Lin, CVPR 2018).

Each training image ``i`` is its own class, represented by the bank entry ``v_i``. With
L2-normalised features the non-parametric softmax (Sec. 3.1) is::

    P(i | f) = exp(v_i·f / τ) / Z,    Z = Σ_j exp(v_j·f / τ)  over all n images.

:class:`InstanceSoftmaxLoss` computes it exactly against the whole bank;
:class:`NCELoss` is the paper's Noise-Contrastive Estimation of it (Sec. 3.2), which
only needs ``m`` noise entries per step.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class NCELoss(nn.Module):
    """NCE for the non-parametric softmax (Wu et al. 2018, Sec. 3.2).

    The data sample is the image's own bank entry ``v_i``; ``m`` noise entries are drawn from
    the uniform noise distribution ``P_n = 1/n``. With ``P(j | f) = exp(v_j·f / τ) / Z``::

        h(j, f) = P(j | f) / (P(j | f) + m·P_n)
        J = -E_batch[ log h(i, f) + Σ_noise log(1 - h(j, f)) ]

    ``Z`` is treated as a constant and estimated by Monte Carlo, ``Z ≈ n·mean_j exp(v_j·f / τ)``
    (:meth:`estimate_log_normalizer`); the caller decides when to re-estimate it (the
    authors fix it at the first iteration). Everything is computed in log space: with τ = 0.07,
    ``exp(1/τ) ≈ 1.6e6`` and the ratios above are better taken as differences of logs.

    Args:
        temperature: τ (0.07 in the paper).
        num_samples: ``n``, the number of images in the bank.

    Shapes:
        ``query (B, D)``, ``positive (B, D)``, ``noise (m, D)`` (one draw shared by the batch),
        ``log_normalizer`` scalar → scalar loss.
    """

    def __init__(self, temperature: float = 0.07, num_samples: int = 1) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.temperature = temperature
        self.num_samples = num_samples

    @torch.no_grad()
    def estimate_log_normalizer(self, query: Tensor, noise: Tensor) -> Tensor:
        """``log Z`` with ``Z = n · mean over batch and noise of exp(v_j·f / τ)`` (Sec. 3.2), no gradient."""
        scores = query @ noise.T / self.temperature  # (B, m)
        return math.log(self.num_samples) + torch.logsumexp(scores.flatten(), 0) - math.log(scores.numel())

    def forward(self, query: Tensor, positive: Tensor, noise: Tensor, log_normalizer: Tensor) -> Tensor:
        """
        Args:
            query: ``(B, D)`` L2-normalised features ``f`` of the batch (with gradient).
            positive: ``(B, D)`` bank entries ``v_i`` of the batch's own images.
            noise: ``(m, D)`` bank entries drawn uniformly.
            log_normalizer: scalar ``log Z``.
        Returns:
            scalar loss, the sum over data and noise terms averaged over the batch.
        """
        if query.dim() != 2 or query.shape != positive.shape or noise.dim() != 2 or noise.shape[1] != query.shape[1]:
            raise ValueError(f"expected query (B, D), positive (B, D) and noise (m, D), got "
                             f"{tuple(query.shape)}, {tuple(positive.shape)} and {tuple(noise.shape)}")
        num_noise = noise.shape[0]
        # log(m · P_n) = log(m / n): the noise's share in the posterior h.
        log_noise_mass = math.log(num_noise / self.num_samples)
        log_p_data = (query * positive).sum(dim=1) / self.temperature - log_normalizer  # (B,)
        log_p_noise = query @ noise.T / self.temperature - log_normalizer  # (B, m)
        noise_mass = torch.full_like(log_p_data, log_noise_mass)
        log_h_data = log_p_data - torch.logaddexp(log_p_data, noise_mass)
        log_one_minus_h_noise = log_noise_mass - torch.logaddexp(log_p_noise, noise_mass[:, None])
        return -(log_h_data + log_one_minus_h_noise.sum(dim=1)).mean()


class InstanceSoftmaxLoss(nn.Module):
    """The exact non-parametric softmax (Wu et al. 2018, Sec. 3.1): cross-entropy of ``f·Vᵀ / τ``
    over every bank entry, with the image's own index as the target.

    Args:
        temperature: τ (0.07 in the paper).

    Shapes:
        ``query (B, D)``, ``bank (n, D)``, ``indices (B,)`` (distinct), optional ``positives (B, D)``
        → scalar loss. ``positives`` stand in for the bank rows at ``indices`` (NPID's entries not
        filled yet), without copying the bank.
    """

    def __init__(self, temperature: float = 0.07) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, query: Tensor, bank: Tensor, indices: Tensor, positives: Optional[Tensor] = None) -> Tensor:
        if query.dim() != 2 or bank.dim() != 2 or bank.shape[1] != query.shape[1] or indices.shape != query.shape[:1]:
            raise ValueError(f"expected query (B, D), bank (n, D) and indices (B,), got "
                             f"{tuple(query.shape)}, {tuple(bank.shape)} and {tuple(indices.shape)}")
        logits = query @ bank.T / self.temperature  # (B, n)
        if positives is not None:
            # Columns ``indices`` as if the bank held ``positives`` there, for every query (they are
            # the other images' negatives too). In place: the matmul and division backward do not
            # need their outputs.
            logits.index_copy_(1, indices, query @ positives.T / self.temperature)
        return F.cross_entropy(logits, indices)
