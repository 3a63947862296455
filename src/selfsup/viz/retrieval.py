"""Nearest-neighbour retrieval: for each query image, its most cosine-similar training images in the
encoder's feature space — what the kNN classifier votes with, shown instead of counted."""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import torch.nn.functional as F
from torch import Tensor

from selfsup.data import DatasetInfo
from selfsup.viz.common import displayable, enlarge, frame, save_cells

MATCH, MISMATCH = (0.1, 0.75, 0.2), (0.9, 0.1, 0.1)
"""Frame colours of neighbours with the query's label and with another label."""


def nearest_neighbours(queries: Tensor, bank: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """Cosine ``(similarities (Q, k), indices (Q, k))`` of each query's ``k`` nearest rows of ``bank (N, D)``, most similar first."""
    sims = F.normalize(queries.float(), dim=1) @ F.normalize(bank.float(), dim=1).T  # (Q, N)
    return sims.topk(min(k, len(bank)), dim=1)


def save_retrieval_grid(query_images: Tensor, query_labels: Tensor, neighbour_images: Tensor,
                        neighbour_labels: Tensor, info: DatasetInfo, path: str | Path, cell_size: int = 64) -> Path:
    """PNG with one row per query: the query, then its neighbours framed green (same label) or red.

    Args:
        query_images: normalised ``(Q, C, H, W)``; query_labels ``(Q,)``.
        neighbour_images: normalised ``(Q, k, C, H, W)``; neighbour_labels ``(Q, k)``.
    """
    Q, k = neighbour_labels.shape
    queries = enlarge(displayable(query_images, info), cell_size)
    neighbours = enlarge(displayable(neighbour_images.flatten(0, 1), info), cell_size).reshape(Q, k, 3, cell_size, cell_size)
    cells = []
    for q in range(Q):
        cells.append(queries[q])
        for j in range(k):
            same = int(neighbour_labels[q, j]) == int(query_labels[q])
            cells.append(frame(neighbours[q, j], MATCH if same else MISMATCH, width=max(1, cell_size // 24)))
    return save_cells(cells, 1 + k, path)
