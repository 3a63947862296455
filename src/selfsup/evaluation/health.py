"""Representation health during training: is the embedding collapsing?

Cheap statistics of a few batches of the features a method returns (``MethodOutput.features``,
``(B, D)``, detached), logged by the engine as ``health/*``:

* ``rankme`` — the effective rank of the embedding matrix (RankMe, Garrido et al. 2023, Eq. 1):
  ``exp(-Σ_k p_k log p_k)`` with ``p_k = σ_k / Σ_j σ_j + ε`` over the singular values ``σ`` of
  the ``(N, D)`` matrix (not centred, as in the paper; ``ε = 1e-7``). Between 1 (every sample
  on one line) and ``min(N, D)``; a complete collapse gives ~1, a dimensional collapse a small
  fraction of ``D``. Garrido et al. find it tracks downstream accuracy without labels.
* ``feature_std`` — the mean over dimensions of the per-dimension standard deviation of the
  L2-normalised features (SimSiam, Chen & He 2021, Sec. 4.1): 0 when all outputs are equal,
  about ``1/√D`` for zero-mean isotropic features. ``feature_std_ratio`` is it times ``√D``.
  A warning is logged once when the ratio falls below :data:`COLLAPSE_RATIO` (0.05): the
  features then vary 20× less than isotropic ones would. Backbone features after a ReLU and
  average pooling are all positive, which alone puts a healthy network well below 1, hence the
  low threshold. Measured on 1,024 Fashion-MNIST images: random-init ResNet-18 (small stem)
  0.08, resnet18-tiny 0.18, vit-tiny 0.52; resnet18-tiny after 60 SimCLR steps 0.50; a
  complete collapse gives 0.
* ``uniformity`` — ``log E_{i<j} exp(-t ‖z_i - z_j‖²)`` on L2-normalised features, ``t = 2``
  (Wang & Isola 2020, Eq. 5): lower is more uniform on the sphere; 0 at complete collapse.
* ``alignment`` — ``E ‖z_i - z'_i‖^α`` over positive pairs, ``α = 2`` (Wang & Isola 2020,
  Eq. 4): lower is better aligned. It needs the features of a second view of the same images:
  logged only when the method returns them as ``output.extras[SECOND_VIEW_KEY]``
  (``(B, D)``, same rows as ``features``); otherwise uniformity is logged alone.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Deque, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

RANKME_EPS = 1e-7
"""ε added to the normalised singular values (Garrido et al. 2023)."""
COLLAPSE_RATIO = 0.05
"""Warn when ``feature_std · √D`` falls below this (isotropic features give ~1)."""
SECOND_VIEW_KEY = "features_view2"
"""Key of ``MethodOutput.extras`` holding the detached ``(B, D)`` features of the second view."""


def effective_rank(features: Tensor, eps: float = RANKME_EPS) -> float:
    """RankMe of ``features (N, D)``: exp of the entropy of the L1-normalised singular values."""
    sigma = torch.linalg.svdvals(features.double())  # (min(N, D),)
    p = sigma / sigma.sum().clamp(min=torch.finfo(torch.float64).tiny) + eps
    return float(torch.exp(-(p * p.log()).sum()))


def normalized_feature_std(features: Tensor) -> float:
    """Mean over the ``D`` dimensions of the std (over ``N`` samples) of L2-normalised ``features (N, D)``."""
    z = F.normalize(features.double(), dim=1)
    return float(z.std(dim=0, unbiased=True).mean()) if len(z) > 1 else 0.0


def uniformity(features: Tensor, t: float = 2.0) -> float:
    """Wang & Isola's uniformity ``log mean_{i<j} exp(-t ‖z_i - z_j‖²)`` of ``features (N, D)``, L2-normalised here."""
    z = F.normalize(features.double(), dim=1)
    return float(torch.pdist(z, p=2).pow(2).mul(-t).exp().mean().log())


def alignment(features: Tensor, positives: Tensor, alpha: float = 2.0) -> float:
    """Wang & Isola's alignment ``mean_i ‖z_i - z'_i‖^α`` of two ``(N, D)`` views, L2-normalised here."""
    z, zp = F.normalize(features.double(), dim=1), F.normalize(positives.double(), dim=1)
    return float((z - zp).norm(dim=1).pow(alpha).mean())


def health_metrics(features: Tensor, positives: Optional[Tensor] = None) -> Dict[str, float]:
    """All statistics of the module docstring for ``features (N, D)`` (and its positives ``(N, D)``)."""
    dim = features.shape[1]
    std = normalized_feature_std(features)
    metrics = {"rankme": effective_rank(features), "feature_std": std, "feature_std_ratio": std * math.sqrt(dim),
               "uniformity": uniformity(features)}
    if positives is not None:
        metrics["alignment"] = alignment(features, positives)
    return metrics


class HealthMonitor:
    """Keeps the most recent ``max_samples`` rows of features (and second-view features) and
    computes :func:`health_metrics` on them.

    Example (what the engine does each step, then at epoch end)::

        monitor.update(output.features, output.extras.get(SECOND_VIEW_KEY))
        metrics = monitor.compute(); monitor.reset()
    """

    def __init__(self, max_samples: int = 1024, collapse_ratio: Optional[float] = None) -> None:
        if max_samples < 2:
            raise ValueError(f"max_samples={max_samples} must be >= 2")
        self.max_samples = max_samples
        self.collapse_ratio = COLLAPSE_RATIO if collapse_ratio is None else collapse_ratio
        self._batches: Deque[Tuple[Tensor, Optional[Tensor]]] = deque()
        self._rows = 0
        self.collapse_warned = False

    @property
    def num_samples(self) -> int:
        return self._rows

    @torch.no_grad()
    def update(self, features: Tensor, positives: Optional[Tensor] = None) -> None:
        """Add a batch ``(B, D)`` (stored detached, float32, on its device); drop the oldest beyond ``max_samples``."""
        if positives is not None and positives.shape != features.shape:
            positives = None  # not a row-aligned second view: uniformity only
        features = features.detach().float()[: self.max_samples]
        positives = None if positives is None else positives.detach().float()[: self.max_samples]
        self._batches.append((features, positives))
        self._rows += len(features)
        while self._rows - len(self._batches[0][0]) >= self.max_samples:
            self._rows -= len(self._batches.popleft()[0])

    def compute(self) -> Dict[str, float]:
        """:func:`health_metrics` of the stored rows (alignment only if every stored batch had positives)."""
        if self._rows < 2:
            return {}
        features = torch.cat([f for f, _ in self._batches])[-self.max_samples:]
        positives = None
        if all(p is not None for _, p in self._batches):
            positives = torch.cat([p for _, p in self._batches])[-self.max_samples:]  # type: ignore[misc]
        return health_metrics(features, positives)

    def reset(self) -> None:
        self._batches.clear()
        self._rows = 0

    def is_collapsing(self, metrics: Dict[str, float]) -> bool:
        """Whether ``feature_std · √D`` is below ``collapse_ratio`` (default :data:`COLLAPSE_RATIO`)."""
        return metrics.get("feature_std_ratio", math.inf) < self.collapse_ratio
