"""A 2-D map of the embedding: exact t-SNE (van der Maaten & Hinton 2008), coloured by label.

Written in torch (scikit-learn is not a dependency). Exact t-SNE costs ``O(N²)`` memory and time
per iteration: a few thousand points take seconds to a minute on a CPU, which is what a picture
needs. The optimisation follows the paper (Sec. 3.1-3.4): inputs reduced to 50 dimensions by
PCA, per-point Gaussian bandwidths found by bisection to match the perplexity, symmetric joint
probabilities, the Student-t gradient of Eq. 5, momentum 0.5 then 0.8 and per-parameter adaptive
gains (Jacobs 1988). Early exaggeration is ×12 for 250 iterations and the learning rate
``max(N / 12 / 4, 50)``, the later defaults of Belkina et al. (2019) and scikit-learn (the paper
used ×4 for 50 iterations and a fixed rate of 100).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor

from selfsup.errors import ConfigError

EXAGGERATION, EXAGGERATION_ITERS = 12.0, 250


def conditional_probabilities(x: Tensor, perplexity: float = 30.0, tol: float = 1e-5, steps: int = 100) -> Tensor:
    """``P[i, j] = p(j | i)`` ``(N, N)``: Gaussian neighbourhoods whose entropy is ``log(perplexity)``.

    The precision ``β_i = 1 / (2σ_i²)`` of each row is found by bisection on the entropy
    ``H(P_i) = log Σ_j e^{-β d_ij} + β Σ_j p_ij d_ij`` (all rows at once).
    """
    n = len(x)
    distances = torch.cdist(x, x).pow(2)  # (N, N) squared Euclidean
    distances.fill_diagonal_(0.0)
    eye = torch.eye(n, dtype=torch.bool, device=x.device)
    target = math.log(perplexity)
    beta = torch.ones(n, 1, dtype=x.dtype, device=x.device)
    low = torch.full_like(beta, 0.0)
    high = torch.full_like(beta, math.inf)
    for _ in range(steps):
        logits = (-distances * beta).masked_fill(eye, -math.inf)
        p = logits.softmax(dim=1)
        entropy = torch.logsumexp(logits, dim=1, keepdim=True) + beta * (p * distances).sum(1, keepdim=True)
        if (entropy - target).abs().max() < tol:
            break
        too_flat = entropy > target  # too many neighbours: sharpen (larger β)
        low = torch.where(too_flat, beta, low)
        high = torch.where(too_flat, high, beta)
        beta = torch.where(torch.isinf(high), beta * 2, (low + high) / 2)
    return p


def tsne(features: Tensor, perplexity: float = 30.0, iterations: int = 1000, seed: int = 0,
         pca_dims: int = 50) -> Tensor:
    """2-D t-SNE coordinates ``(N, 2)`` of ``features (N, D)`` (float64 on the features' device)."""
    n = len(features)
    if n < 4:
        raise ConfigError(f"t-SNE needs at least 4 points, got {n}")
    if not 1.0 <= perplexity < n:
        raise ConfigError(f"perplexity={perplexity} must be in [1, number of points={n}); 5-50 is usual")
    x = features.detach().double()
    x = x - x.mean(0, keepdim=True)
    if x.shape[1] > pca_dims:
        _, _, vh = torch.linalg.svd(x, full_matrices=False)
        x = x @ vh[:pca_dims].T
    conditional = conditional_probabilities(x, perplexity)
    p = (conditional + conditional.T) / (2 * n)  # symmetric joint probabilities (Sec. 3.1)
    p = p.clamp(min=1e-12)
    generator = torch.Generator().manual_seed(seed)
    y = (1e-4 * torch.randn(n, 2, generator=generator, dtype=torch.float64)).to(x.device)
    update, gains = torch.zeros_like(y), torch.ones_like(y)
    lr = max(n / EXAGGERATION / 4, 50.0)
    eye = torch.eye(n, dtype=torch.bool, device=x.device)
    for it in range(iterations):
        exaggeration = EXAGGERATION if it < EXAGGERATION_ITERS else 1.0
        momentum = 0.5 if it < EXAGGERATION_ITERS else 0.8
        kernel = (1.0 / (1.0 + torch.cdist(y, y).pow(2))).masked_fill(eye, 0.0)  # Student-t, (N, N)
        q = (kernel / kernel.sum()).clamp(min=1e-12)
        weights = (exaggeration * p - q) * kernel  # (N, N)
        grad = 4.0 * (weights.sum(1, keepdim=True) * y - weights @ y)  # Eq. 5: 4 Σ_j (p-q)(1+d²)⁻¹ (y_i - y_j)
        same_direction = (grad > 0) == (update > 0)
        gains = torch.where(same_direction, gains * 0.8, gains + 0.2).clamp(min=0.01)
        update = momentum * update - lr * gains * grad
        y = y + update
        y = y - y.mean(0, keepdim=True)
    return y


def save_embedding_map(points: Tensor, labels: Tensor, path: str | Path, class_names: Optional[Sequence[str]] = None,
                       title: str = "", point_size: float = 6.0) -> Path:
    """Scatter plot PNG of ``points (N, 2)`` coloured by ``labels (N,)``, with a legend of class names."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 6.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    points, labels = points.detach().cpu().numpy(), labels.cpu().numpy()
    classes = sorted(set(labels.tolist()))
    palette = "tab10" if len(classes) <= 10 else "tab20"
    from matplotlib import colormaps

    cmap = colormaps[palette]
    for i, c in enumerate(classes):
        chosen = labels == c
        name = class_names[c] if class_names and 0 <= c < len(class_names) else str(c)
        axes.scatter(points[chosen, 0], points[chosen, 1], s=point_size, color=cmap(i % cmap.N), label=name)
    axes.set_xticks([])
    axes.set_yticks([])
    if title:
        axes.set_title(title)
    axes.legend(loc="best", fontsize=7, markerscale=2.0, frameon=True)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
