"""SimSiam's symmetric negative cosine loss with stop-gradient (Chen & He 2021, Eq. 1-4).

    D(p, z) = − ⟨p, z⟩ / (‖p‖·‖z‖)                                   (Eq. 1)
    L = ½·D(p₁, stopgrad(z₂)) + ½·D(p₂, stopgrad(z₁))                (Eq. 3-4)

The stop-gradient is what prevents collapse (Sec. 4.1, Fig. 2): ``z`` is a constant in each
term, so the encoder receives gradients only through the predictions ``p``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def negative_cosine(prediction: Tensor, target: Tensor) -> Tensor:
    """``D(p, stopgrad(z))`` of Eq. 1-3, averaged over the batch.

    Args:
        prediction: ``(B, D)`` predictor outputs ``p``.
        target: ``(B, D)`` projections ``z`` of the other view; detached here.
    Returns:
        scalar in ``[−1, 1]``.
    """
    if prediction.shape != target.shape or prediction.dim() != 2:
        raise ValueError(f"expected two (B, D) tensors of equal shape, got {tuple(prediction.shape)} and "
                         f"{tuple(target.shape)}")
    return -F.cosine_similarity(prediction, target.detach(), dim=1).mean()


class SymmetricNegativeCosineLoss(nn.Module):
    """``½·D(p₁, sg(z₂)) + ½·D(p₂, sg(z₁))`` (SimSiam Eq. 4); minimum −1.

    Means over the local batch: DDP's gradient averaging gives the global-batch gradient.
    """

    def forward(self, pred_a: Tensor, pred_b: Tensor, proj_a: Tensor, proj_b: Tensor) -> Tensor:
        """
        Args:
            pred_a, pred_b: ``(B, D)`` predictions ``p₁``, ``p₂`` of the two views.
            proj_a, proj_b: ``(B, D)`` projections ``z₁``, ``z₂`` (receive no gradient here).
        Returns:
            scalar.
        """
        return 0.5 * negative_cosine(pred_a, proj_b) + 0.5 * negative_cosine(pred_b, proj_a)


__all__ = ["SymmetricNegativeCosineLoss", "negative_cosine"]
