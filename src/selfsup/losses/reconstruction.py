"""Masked, weighted L2 reconstruction loss of context encoders (Pathak et al. 2016, Eq. 1)."""

from __future__ import annotations

from torch import Tensor, nn


class MaskedReconstructionLoss(nn.Module):
    """``L_rec = Σ w ⊙ (x - x̂)² / (C · Σ w)``: the paper's ``‖M̂ ⊙ (x − F((1 − M̂) ⊙ x))‖²``
    as a mean over the masked pixels, with per-pixel weights ``w`` instead of the binary mask
    ``M̂`` so the overlap band can weigh more (the paper uses 10×, Sec. 3.3).

    Pixels with weight 0 — the visible context — do not enter the loss at all.

    Shapes:
        ``prediction, target: (B, C, H, W)``; ``weights: (B, 1, H, W)`` (broadcast over channels),
        non-negative. Returns a scalar (0 when every weight is 0).
    """

    def forward(self, prediction: Tensor, target: Tensor, weights: Tensor) -> Tensor:
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
        squared = (prediction - target).pow(2) * weights
        normaliser = weights.sum() * prediction.shape[1]
        return squared.sum() / normaliser.clamp_min(1e-12)
