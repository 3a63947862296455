"""Weighted k-nearest-neighbour classification of frozen features (Wu et al. 2018, InstDisc).

Each query's k most cosine-similar training samples vote for their own class with weight
``exp(s / τ)`` (Wu et al. 2018: k=200, τ=0.07; DINO uses k=20, τ=0.07, solo-learn
k=200, τ=0.1). No training: it measures how well the feature space's neighbourhoods follow
the labels, which is why it is cheap enough to monitor every epoch.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.evaluation.storage import MemoryBudget


def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    query_features: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
    memory: Optional[MemoryBudget] = None,
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
        memory: when the bank, the queries or one similarity matrix exceed its budget, the bank is
            read in chunks of rows instead (see :func:`knn_predict_sweep`); None: all in RAM.

    Returns:
        ``(Q, C)`` scores: for each class, the summed weights of the neighbours of that class.
    """
    return knn_predict_sweep(train_features, train_labels, query_features, num_classes, (k,), temperature,
                             chunk_size, memory)[min(k, len(train_features))]


def knn_predict_sweep(
    train_features: Tensor,
    train_labels: Tensor,
    query_features: Tensor,
    num_classes: int,
    ks: Sequence[int],
    temperature: float = 0.1,
    chunk_size: int = 1024,
    memory: Optional[MemoryBudget] = None,
) -> Dict[int, Tensor]:
    """:func:`knn_predict` for several ``k`` from ONE similarity pass over the memory bank.

    Each chunk of queries is compared with the bank once and its ``max(ks)`` nearest neighbours
    are taken, sorted by similarity; the vote for each ``k`` reads the first ``k`` of them.

    When the normalised bank, the queries or a ``(chunk, N)`` similarity matrix would exceed
    ``memory``'s budget (ImageNet: 1.28 M bank rows), the bank is read once, a chunk of rows at a
    time, and each query keeps its running ``max(ks)`` nearest neighbours (the top-k of a union is
    the top-k of the parts' top-k): the same neighbours, up to the order of exact ties.

    Returns:
        ``{k: (Q, C) scores}``, one entry per distinct ``k`` after clamping to ``N``.
    """
    if train_features.ndim != 2 or query_features.ndim != 2 or train_features.shape[1] != query_features.shape[1]:
        raise ValueError(f"features must be (N, D) and (Q, D), got {tuple(train_features.shape)} "
                         f"and {tuple(query_features.shape)}")
    if not ks or min(ks) < 1:
        raise ValueError(f"k must be positive integers, got {list(ks)}")
    clamped = sorted({min(int(k), len(train_features)) for k in ks})
    (n, dim), q = train_features.shape, len(query_features)
    if memory is not None and not (memory.fits(4 * n * dim) and memory.fits(4 * q * dim)
                                   and memory.fits(4 * min(chunk_size, q) * n)):
        top_sims, top_labels = _streamed_neighbours(train_features, train_labels, query_features, clamped[-1],
                                                    chunk_size, memory)
        return _vote(top_sims, top_labels, num_classes, clamped, temperature, memory)
    bank = F.normalize(train_features.float(), dim=1)  # (N, D)
    queries = F.normalize(query_features.float(), dim=1)  # (Q, D)
    labels = train_labels.to(bank.device, torch.int64)
    scores = {k: torch.zeros(len(queries), num_classes, device=bank.device) for k in clamped}  # (Q, C) each
    for start in range(0, len(queries), chunk_size):
        sims = queries[start:start + chunk_size].to(bank.device) @ bank.T  # (q, N) cosine similarities
        top_sims, top_idx = sims.topk(clamped[-1], dim=1)  # (q, max k), most similar first
        weights = (top_sims / temperature).exp()
        neighbour_labels = labels[top_idx]  # (q, max k)
        for k in clamped:
            scores[k][start:start + chunk_size].scatter_add_(1, neighbour_labels[:, :k], weights[:, :k])
    return scores


def _streamed_neighbours(train_features: Tensor, train_labels: Tensor, query_features: Tensor, k: int,
                         chunk_size: int, memory: MemoryBudget) -> Tuple[Tensor, Tensor]:
    """Each query's ``k`` most similar bank rows, reading the bank once in chunks of rows:
    ``(similarities (Q, k), labels (Q, k))``, most similar first."""
    (n, dim), q = train_features.shape, len(query_features)
    queries = memory.empty((q, dim))  # normalised once: the inner loop reads them once per bank chunk
    rows = memory.chunk_rows(4 * dim)
    for start in range(0, q, rows):
        queries[start:start + rows] = F.normalize(query_features[start:start + rows].float(), dim=1)
    chunk_size = min(chunk_size, q)
    bank_rows = memory.chunk_rows(4 * (dim + chunk_size))  # a bank chunk and its (queries, rows) similarities
    # -inf loses to every cosine similarity, so the k real neighbours (k <= N) replace all of them.
    top_sims = memory.empty((q, k))
    top_sims.fill_(-math.inf)
    top_labels = memory.empty((q, k), torch.int64)
    top_labels.zero_()
    for bank_start in range(0, n, bank_rows):
        bank = F.normalize(train_features[bank_start:bank_start + bank_rows].float(), dim=1)  # (b, D)
        labels = train_labels[bank_start:bank_start + bank_rows].to(torch.int64)  # (b,)
        for start in range(0, q, chunk_size):
            sims = queries[start:start + chunk_size] @ bank.T  # (q, b)
            part_sims, part_idx = sims.topk(min(k, len(bank)), dim=1)
            both_sims = torch.cat([top_sims[start:start + chunk_size], part_sims], dim=1)
            both_labels = torch.cat([top_labels[start:start + chunk_size], labels[part_idx]], dim=1)
            best_sims, best = both_sims.topk(k, dim=1)  # sorted: most similar first
            top_sims[start:start + chunk_size] = best_sims
            top_labels[start:start + chunk_size] = both_labels.gather(1, best)
    return top_sims, top_labels


def _vote(top_sims: Tensor, top_labels: Tensor, num_classes: int, ks: Sequence[int], temperature: float,
          memory: MemoryBudget) -> Dict[int, Tensor]:
    """``{k: (Q, C) scores}`` from each query's sorted neighbours ``(Q, max k)``, as :func:`knn_predict_sweep`."""
    scores = {k: torch.zeros(len(top_sims), num_classes) for k in ks}
    rows = memory.chunk_rows(12 * top_sims.shape[1])  # (rows, max k) weights and labels at a time
    for start in range(0, len(top_sims), rows):
        weights = (top_sims[start:start + rows] / temperature).exp()
        neighbour_labels = top_labels[start:start + rows]
        for k in ks:
            scores[k][start:start + rows].scatter_add_(1, neighbour_labels[:, :k], weights[:, :k])
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
    memory: Optional[MemoryBudget] = None,
) -> Dict[str, float]:
    """Top-1 and top-5 accuracy of :func:`knn_predict` as fractions: ``{"knn_top1", "knn_top5"}``.

    ``query_labels`` is ``(Q,)``; with fewer than 5 classes top-5 counts all of them (so it is 1.0).
    """
    scores = knn_predict(train_features, train_labels, query_features, num_classes, k, temperature, chunk_size,
                         memory)
    top1, top5 = topk_accuracy(scores, query_labels, (1, 5))
    return {"knn_top1": top1, "knn_top5": top5}


def knn_sweep(
    train_features: Tensor,
    train_labels: Tensor,
    query_features: Tensor,
    query_labels: Tensor,
    num_classes: int,
    ks: Sequence[int] = (10, 20, 100, 200),
    temperature: float = 0.1,
    chunk_size: int = 1024,
    memory: Optional[MemoryBudget] = None,
) -> Dict[int, Dict[str, float]]:
    """:func:`knn_accuracy` for every ``k`` in ``ks`` from one similarity pass: ``{k: {"knn_top1", "knn_top5"}}``.

    Keys are the requested ``k`` (a ``k`` above ``N`` uses all ``N`` samples, as :func:`knn_predict`).
    """
    scores = knn_predict_sweep(train_features, train_labels, query_features, num_classes, ks, temperature, chunk_size,
                               memory)
    results = {}
    for k in ks:
        top1, top5 = topk_accuracy(scores[min(int(k), len(train_features))], query_labels, (1, 5))
        results[int(k)] = {"knn_top1": top1, "knn_top5": top5}
    return results


def topk_accuracy(scores: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)) -> Tuple[float, ...]:
    """Fractions of rows of ``scores (Q, C)`` whose label ``(Q,)`` is among the ``k`` highest, per k."""
    labels = labels.to(scores.device, torch.int64)
    ranked = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices  # (Q, max k)
    hits = ranked == labels[:, None]  # (Q, max k)
    return tuple(hits[:, :k].any(dim=1).double().mean().item() for k in ks)
