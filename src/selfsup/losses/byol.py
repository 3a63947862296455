"""BYOL's regression loss (Grill et al. 2020, "Bootstrap Your Own Latent", Sec. 3.1, Eq. 2).

The online network's prediction ``q`` of one view regresses the target network's projection
``z'`` of the other view after both are ℓ2-normalised::

    L(q, z') = ‖ q/‖q‖ − z'/‖z'‖ ‖²  =  2 − 2·⟨q, z'⟩ / (‖q‖·‖z'‖)

and the loss is symmetrised by swapping the views, ``L_BYOL = L + L̃`` (Sec. 3.1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.losses.precision import full_precision


def normalized_mse(prediction: Tensor, target: Tensor) -> Tensor:
    """``2 − 2·cos(prediction, target)`` per row.

    Args:
        prediction: ``(B, D)`` online predictions ``q``.
        target: ``(B, D)`` target projections ``z'`` (treated as constants).
    Returns:
        ``(B,)`` squared distances of the normalised vectors, each in ``[0, 4]``.
    """
    if prediction.shape != target.shape or prediction.dim() != 2:
        raise ValueError(f"expected two (B, D) tensors of equal shape, got {tuple(prediction.shape)} and "
                         f"{tuple(target.shape)}")
    # The target network is updated only by EMA: never let a gradient reach it (Sec. 3.1, "sg").
    # float32 even under mixed precision: 2 − 2·cos loses its small values in bf16.
    return 2.0 - 2.0 * F.cosine_similarity(full_precision(prediction), full_precision(target.detach()), dim=1)


class BYOLLoss(nn.Module):
    """Symmetrised BYOL loss ``L + L̃``: each view's prediction regresses the other view's target.

    Every term is a mean over the local batch, so under DDP the gradient average of the
    processes is the gradient of the loss over the global batch; no gathering is needed.

    Example:
        >>> loss = BYOLLoss()(q_a, q_b, z_target_a, z_target_b)   # all (B, D)
    """

    def forward(self, pred_a: Tensor, pred_b: Tensor, target_a: Tensor, target_b: Tensor) -> Tensor:
        """
        Args:
            pred_a: ``(B, D)`` online predictions of the first views.
            pred_b: ``(B, D)`` online predictions of the second views.
            target_a: ``(B, D)`` target projections of the first views.
            target_b: ``(B, D)`` target projections of the second views.
        Returns:
            scalar in ``[0, 8]``.
        """
        return normalized_mse(pred_a, target_b).mean() + normalized_mse(pred_b, target_a).mean()


__all__ = ["BYOLLoss", "normalized_mse"]
