"""CPC's InfoNCE over a grid of patch embeddings (van den Oord, Li, Vinyals 2018, Eq. 4).

For a prediction ``ẑ = W_k c_{r,j}`` of the patch ``z_{r+k,j}`` of the same image, the score of
a candidate ``z`` is the log-bilinear ``f(z) = exp(ẑ·z)`` (Eq. 3), and the loss is the
cross-entropy of picking the true patch among the candidates::

    L = -log  exp(ẑ·z_{r+k,j}) / Σ_{z ∈ {z_{r+k,j}} ∪ negatives} exp(ẑ·z)

The negatives are the other patches of the batch, of the same image and of the other images
(Hénaff et al. 2019). Plain dot products, no normalisation or temperature, as in the
paper. Gradients reach both the predictions and the candidate embeddings.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def cpc_infonce_terms(
    predictions: Sequence[Tensor],
    embeddings: Tensor,
    num_negatives: int = 0,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """The InfoNCE loss of each prediction offset ``k``.

    Args:
        predictions: entry ``k − 1`` is ``(B, Gh − k, Gw, D)``; its row ``r`` predicts
            ``embeddings[:, r + k]``.
        embeddings: ``(B, Gh, Gw, D)`` patch embeddings, the positives and the pool of negatives.
        num_negatives: 0 to contrast every prediction with all ``B·Gh·Gw − 1`` other patches of
            the batch (the paper); ``M > 0`` to draw ``M`` patches uniformly without replacement,
            shared by all predictions of the step (cheaper on large grids). A drawn patch that is
            a prediction's own positive is masked out of that prediction's negatives.
        generator: RNG of the draw (the global one when None).

    Returns:
        ``(len(predictions),)`` mean loss per offset.
    """
    if embeddings.dim() != 4:
        raise ValueError(f"expected (B, Gh, Gw, D) embeddings, got {tuple(embeddings.shape)}")
    batch, rows, cols, dim = embeddings.shape
    pool = embeddings.reshape(-1, dim)  # (N, D), patch (b, r, j) at b·Gh·Gw + r·Gw + j
    flat_index = torch.arange(pool.shape[0], device=pool.device).view(batch, rows, cols)
    if 0 < num_negatives < pool.shape[0]:
        candidates = torch.randperm(pool.shape[0], generator=generator,
                                    device=generator.device if generator is not None else "cpu")
        candidates = candidates[:num_negatives].to(pool.device)
    else:
        candidates = flat_index.reshape(-1)
    negatives = pool[candidates]  # (M, D)

    terms = []
    for k, prediction in enumerate(predictions, start=1):
        if prediction.shape != (batch, rows - k, cols, dim):
            raise ValueError(f"prediction for offset {k} should be {(batch, rows - k, cols, dim)}, "
                             f"got {tuple(prediction.shape)}")
        query = prediction.reshape(-1, dim)  # (Q, D)
        target = flat_index[:, k:].reshape(-1)  # (Q,) flat index of each query's positive
        positive_logit = (query * pool[target]).sum(dim=1, keepdim=True)  # (Q, 1)
        negative_logits = query @ negatives.T  # (Q, M)
        negative_logits = negative_logits.masked_fill(candidates[None, :] == target[:, None], float("-inf"))
        logits = torch.cat([positive_logit, negative_logits], dim=1)
        terms.append(F.cross_entropy(logits, torch.zeros_like(target)))
    return torch.stack(terms)


class CPCInfoNCELoss(nn.Module):
    """InfoNCE of CPC, averaged over the prediction offsets (each offset weighs the same).

    Args:
        num_negatives: see :func:`cpc_infonce_terms` (0: every other patch of the batch).

    Shapes:
        predictions as in :func:`cpc_infonce_terms`, ``embeddings (B, Gh, Gw, D)`` → scalar.
    """

    def __init__(self, num_negatives: int = 0) -> None:
        super().__init__()
        if num_negatives < 0:
            raise ValueError(f"num_negatives must be >= 0 (0 = all patches of the batch), got {num_negatives}")
        self.num_negatives = num_negatives

    def terms(self, predictions: Sequence[Tensor], embeddings: Tensor,
              generator: Optional[torch.Generator] = None) -> Tensor:
        """``(K,)`` loss per offset ``k = 1..K``, for logging."""
        if not predictions:
            raise ValueError("no predictions: the patch grid needs at least 2 rows")
        return cpc_infonce_terms(predictions, embeddings, self.num_negatives, generator)

    def forward(self, predictions: Sequence[Tensor], embeddings: Tensor,
                generator: Optional[torch.Generator] = None) -> Tensor:
        return self.terms(predictions, embeddings, generator).mean()
