"""Seeded, class-aware index subsets of a labelled split: held-out validation parts and few-label sets.

Both draw from their own ``torch.Generator`` so the global random state is never touched and
the same seed gives the same subset on every machine.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from selfsup.errors import ConfigError


def _classes(labels: Tensor) -> Tensor:
    labels = torch.as_tensor(labels, dtype=torch.int64)
    if labels.ndim != 1 or len(labels) == 0:
        raise ConfigError(f"labels must be a non-empty (N,) tensor, got shape {tuple(labels.shape)}")
    if (labels < 0).any():
        raise ConfigError("labels contain -1 (unlabelled images); few-label and held-out subsets need labels")
    return labels.unique()


def stratified_split(labels: Tensor, val_fraction: float = 0.1, seed: int = 0) -> Tuple[Tensor, Tensor]:
    """Split indices of ``labels (N,)`` into ``(train_idx, val_idx)``, ``val_fraction`` of each class held out.

    Every class with at least two samples keeps at least one in each part (``round`` otherwise), so
    the validation accuracy sees every class. Both index tensors are sorted int64.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction={val_fraction} must be in (0, 1), e.g. 0.1")
    labels = torch.as_tensor(labels, dtype=torch.int64)
    generator = torch.Generator().manual_seed(seed)
    train_parts, val_parts = [], []
    for c in _classes(labels).tolist():
        members = (labels == c).nonzero()[:, 0]
        members = members[torch.randperm(len(members), generator=generator)]
        n_val = min(max(1, round(val_fraction * len(members))), len(members) - 1) if len(members) > 1 else 0
        val_parts.append(members[:n_val])
        train_parts.append(members[n_val:])
    return torch.cat(train_parts).sort().values, torch.cat(val_parts).sort().values


def balanced_subset(labels: Tensor, fraction: float, seed: int = 0) -> Tensor:
    """Indices of a class-balanced subset holding about ``fraction`` of ``labels (N,)``.

    Each of the ``C`` classes contributes the same number of samples,
    ``max(1, round(fraction · N / C))`` (fewer only if the class has fewer), drawn without
    replacement with ``seed``: the protocol of the 1 % / 10 % ImageNet subsets of semi-supervised
    evaluation (Chen et al. 2020, SimCLR Sec. 4.2; about 13 / 128 images per class). A smaller
    fraction with the same seed gives a subset of the larger one's (the per-class order is fixed
    by the seed), so results across fractions differ only by the added labels.

    Returns:
        sorted int64 indices ``(M,)``.
    """
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"fraction={fraction} must be in (0, 1], e.g. 0.01 or 0.1")
    labels = torch.as_tensor(labels, dtype=torch.int64)
    classes = _classes(labels)
    per_class = max(1, round(fraction * len(labels) / len(classes)))
    generator = torch.Generator().manual_seed(seed)
    parts = []
    for c in classes.tolist():
        members = (labels == c).nonzero()[:, 0]
        parts.append(members[torch.randperm(len(members), generator=generator)][:per_class])
    return torch.cat(parts).sort().values
