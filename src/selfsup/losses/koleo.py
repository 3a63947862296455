"""KoLeo regulariser (DINOv2, Oquab et al. 2023, Sec. 4; Sablayrolles et al. 2019).

The Kozachenko-Leonenko differential-entropy estimator, used as a loss on the student's
L2-normalised [CLS] features: ``L = −(1/n) Σ_i log(d_{n,i})`` with ``d_{n,i} = min_{j≠i} ‖x_i − x_j‖``
the distance to the nearest other feature in the batch. Minimising it spreads the features
uniformly over the sphere, which DINOv2 found helps nearest-neighbour retrieval.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.losses.precision import full_precision


def koleo_loss(features: Tensor, eps: float = 1e-8) -> Tensor:
    """``−mean_i log(min_{j≠i} ‖x̂_i − x̂_j‖ + eps)`` over the rows of ``features``, ``x̂ = x/‖x‖``.

    Args:
        features: ``(B, D)`` with ``B >= 2`` (DINOv2 applies it per global crop, within a process).
        eps: keeps the log finite for duplicated rows.

    Returns:
        Scalar loss; gradients flow to every row (the nearest neighbour is chosen without gradient).
    """
    if features.dim() != 2 or features.shape[0] < 2:
        raise ValueError(f"koleo_loss needs (B, D) features with B >= 2, got {tuple(features.shape)}")
    x = F.normalize(full_precision(features), dim=-1, eps=eps)
    with torch.no_grad():
        # On the sphere the nearest neighbour is the largest inner product; exclude i itself.
        similarity = x @ x.t()
        similarity.fill_diagonal_(-2.0)
        nearest = similarity.argmax(dim=1)  # (B,)
    distances = (x - x[nearest]).norm(dim=-1)  # (B,)
    return -torch.log(distances + eps).mean()
