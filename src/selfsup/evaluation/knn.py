"""Weighted k-nearest-neighbour classification of frozen features (Wu et al. 2018, InstDisc).

Each query's k most cosine-similar training samples vote for their own class with weight
``exp(s / τ)`` (Wu et al. 2018: k=200, τ=0.07; DINO uses k=20, τ=0.07, solo-learn
k=200, τ=0.1). No training: it measures how well the feature space's neighbourhoods follow
the labels, which is why it is cheap enough to monitor every epoch.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    query_features: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> Tensor:
    """Class scores of the queries by temperature-weighted kNN voting.

    Args:
        train_features: ``(N, D)`` memory bank (need not be normalised).
        train_labels: ``(N,)`` int64 in ``[0, num_classes)``.
        query_features: ``(Q, D)``.
        num_classes: ``C``.
        k: neighbours per query; clamped to ``N``.
        temperature: τ in the vote weight ``exp(cos / τ)``.
        chunk_size: queries per similarity matrix ``(chunk, N)``, bounding memory.

    Returns:
        ``(Q, C)`` scores: for each class, the summed weights of the neighbours of that class.
    """
    if train_features.ndim != 2 or query_features.ndim != 2 or train_features.shape[1] != query_features.shape[1]:
        raise ValueError(f"features must be (N, D) and (Q, D), got {tuple(train_features.shape)} "
                         f"and {tuple(query_features.shape)}")
    k = min(k, len(train_features))
    bank = F.normalize(train_features.float(), dim=1)  # (N, D)
    queries = F.normalize(query_features.float(), dim=1)  # (Q, D)
    labels = train_labels.to(bank.device, torch.int64)
    scores = torch.zeros(len(queries), num_classes, device=bank.device)  # (Q, C)
    for start in range(0, len(queries), chunk_size):
        sims = queries[start:start + chunk_size].to(bank.device) @ bank.T  # (q, N) cosine similarities
        top_sims, top_idx = sims.topk(k, dim=1)  # (q, k)
        weights = (top_sims / temperature).exp()
        scores[start:start + chunk_size].scatter_add_(1, labels[top_idx], weights)
    return scores


def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    query_features: Tensor,
    query_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> Dict[str, float]:
    """Top-1 and top-5 accuracy of :func:`knn_predict` as fractions: ``{"knn_top1", "knn_top5"}``.

    ``query_labels`` is ``(Q,)``; with fewer than 5 classes top-5 counts all of them (so it is 1.0).
    """
    scores = knn_predict(train_features, train_labels, query_features, num_classes, k, temperature, chunk_size)
    top1, top5 = topk_accuracy(scores, query_labels, (1, 5))
    return {"knn_top1": top1, "knn_top5": top5}


def topk_accuracy(scores: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)) -> Tuple[float, ...]:
    """Fractions of rows of ``scores (Q, C)`` whose label ``(Q,)`` is among the ``k`` highest, per k."""
    labels = labels.to(scores.device, torch.int64)
    ranked = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices  # (Q, max k)
    hits = ranked == labels[:, None]  # (Q, max k)
    return tuple(hits[:, :k].any(dim=1).double().mean().item() for k in ks)
