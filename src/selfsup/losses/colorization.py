"""The multinomial colorization loss with class rebalancing (Zhang, Isola & Efros, ECCV 2016, Sec. 2).

Per pixel ``(h, w)`` the network predicts a distribution ``Ẑ`` over ``Q`` quantised ab bins; the
target ``Z`` is the soft encoding of the true colour (:func:`selfsup.transforms.color.soft_encode_ab`).
The loss (Eq. 2) is the cross-entropy, each pixel weighted by ``v(Z_hw) = w_{q*}``, the weight of
its nearest bin ``q* = argmax_q Z_hwq`` (Eq. 3-4):

    L(Ẑ, Z) = -1/(HW) Σ_hw  w_{q*(hw)}  Σ_q Z_hwq log Ẑ_hwq

    w ∝ ((1 - λ) p̃ + λ / Q)^-1,   normalised so that  E_p̃[w] = Σ_q p̃_q w_q = 1

with ``p̃`` the empirical bin distribution smoothed by a Gaussian of σ = 5 over the ab plane and
λ = 0.5: rare (saturated) colours get larger weights, so the prediction is not pulled to the
desaturated colours that dominate natural images.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup import distributed


def soft_cross_entropy(logits: Tensor, target: Tensor, pixel_weights: Optional[Tensor] = None) -> Tensor:
    """Mean over pixels of ``-w · Σ_q Z_q log softmax(logits)_q`` (Zhang et al. 2016, Eq. 2).

    Args:
        logits: ``(B, Q, H, W)`` unnormalised scores.
        target: ``(B, Q, H, W)`` distributions (each pixel sums to 1).
        pixel_weights: ``(B, H, W)`` per-pixel weights ``v(Z)``, or None for 1.
    Returns:
        Scalar loss.
    """
    per_pixel = -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1)  # (B, H, W)
    if pixel_weights is not None:
        per_pixel = per_pixel * pixel_weights
    return per_pixel.mean()


class ClassRebalancing(nn.Module):
    """Class-rebalancing weights ``w`` (Zhang et al. 2016, Eq. 4) from a running bin histogram.

    The paper estimates ``p`` once on the whole ImageNet training set. Here ``counts`` accumulates
    the nearest-bin histogram of every training pixel seen so far (:meth:`update_`, called by the
    method's ``on_step_end``, summed over processes), so ``p`` converges to the training set's
    distribution within the first steps without a separate pass over the data; before any update
    all weights are 1. ``counts`` is an int64 buffer: exact, checkpointed, untouched by
    reduced-precision casts.

    Args:
        bin_centers: ``(Q, 2)`` ab values of the bins.
        mix: λ, the weight of the uniform distribution (0.5 in the paper).
        sigma: σ of the Gaussian that smooths ``p`` over the ab plane (5 in the paper).
    """

    counts: Tensor
    smoothing: Tensor

    def __init__(self, bin_centers: Tensor, mix: float = 0.5, sigma: float = 5.0) -> None:
        super().__init__()
        self.mix = mix
        self.register_buffer("counts", torch.zeros(len(bin_centers), dtype=torch.int64))
        # Column r spreads bin r's mass over the bins with a Gaussian, normalised so mass is kept.
        kernel = torch.exp(-torch.cdist(bin_centers.double(), bin_centers.double()).square() / (2 * sigma**2))
        self.register_buffer("smoothing", (kernel / kernel.sum(dim=0, keepdim=True)).float(), persistent=False)

    def distribution(self) -> Tensor:
        """The smoothed empirical distribution ``p̃`` ``(Q,)``; uniform before any update."""
        total = self.counts.sum()
        if total == 0:
            return torch.full_like(self.smoothing[0], 1.0 / len(self.counts))
        p = (self.counts.double() / total).to(self.smoothing.dtype)
        return self.smoothing @ p

    def weights(self) -> Tensor:
        """``w`` ``(Q,)`` with ``Σ_q p̃_q w_q = 1``."""
        p = self.distribution()
        w = 1.0 / ((1 - self.mix) * p + self.mix / len(p))
        return w / (p * w).sum()

    @torch.no_grad()
    def update_(self, histogram: Tensor) -> None:
        """Add a ``(Q,)`` integer histogram of nearest bins (this process's; summed over processes here)."""
        histogram = histogram.to(self.counts)
        if distributed.world_size() > 1:
            torch.distributed.all_reduce(histogram)
        self.counts += histogram


__all__ = ["ClassRebalancing", "soft_cross_entropy"]
