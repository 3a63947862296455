"""The linear classification protocol on frozen, pre-computed features.

A linear classifier is trained on the encoder's features of the labelled training set and
tested on the test set (Zhang et al. 2016; the standard protocol of SimCLR, MoCo, DINO). As
in MAE's linear probe (He et al. 2022, appendix), an affine-free BatchNorm normalises each
feature first, which removes the need to tune the learning rate per encoder: feature scales
differ by orders of magnitude between methods. Because the features are frozen, the
normalisation uses the exact statistics of the whole training set (what BatchNorm's running
averages converge to) and is applied once, so each step is one ``(B, D) @ (D, C)`` matmul.

:func:`linear_probe_sweep` chooses the learning rate on a held-out part of the training split
and reports the probe retrained with it on the whole split: the test split is never used to choose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.errors import ConfigError
from selfsup.evaluation.knn import topk_accuracy
from selfsup.evaluation.storage import MemoryBudget
from selfsup.evaluation.subsets import stratified_split
from selfsup.schedules import cosine_at_step


@dataclass
class LinearProbeResult:
    """Accuracies are fractions in [0, 1]."""

    top1: float
    top5: float
    train_top1: float
    epochs: int
    lr: float
    classifier: Optional[nn.Sequential] = field(default=None, repr=False, compare=False)
    """``BatchNorm1d(affine=False)`` (or ``Identity``) + ``Linear``, in eval mode, on CPU: maps ``(B, D)`` → ``(B, C)``."""


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    epochs: int = 100,
    lr: float = 0.1,
    batch_size: int = 1024,
    weight_decay: float = 0.0,
    batch_norm: bool = True,
    seed: int = 0,
    device: Union[str, torch.device] = "cpu",
    memory: Optional[MemoryBudget] = None,
) -> LinearProbeResult:
    """Train ``BatchNorm1d(affine=False) + Linear`` on frozen features with SGD and report accuracy.

    Args:
        train_features: ``(N, D)``; train_labels: ``(N,)`` int64.
        test_features: ``(M, D)``; test_labels: ``(M,)`` int64.
        num_classes: ``C``.
        epochs: passes over the training features.
        lr: peak learning rate of SGD (momentum 0.9, Nesterov off), cosine-decayed to 0 per step.
        batch_size: mini-batch size; mini-batches are reshuffled each epoch by a generator seeded
            with ``seed``, so the result is deterministic (the global RNG is not touched).
        weight_decay: L2 penalty on the linear layer (0 as in MAE/MoCo v3 linear probes).
        batch_norm: normalise features by the training set's mean and std first (recommended).
        device: where to train; the features are moved there once.
        memory: when the features (their float64 copy for the statistics) exceed its budget, they
            stay where they are (e.g. a file, see :mod:`selfsup.evaluation.storage`): statistics
            and accuracies are computed a chunk of rows at a time, and each mini-batch is read,
            normalised and moved to ``device`` on its own. Same steps, same result up to float
            rounding of the statistics. None: everything in RAM (on ``device``).
    """
    device = torch.device(device)
    n, dim = train_features.shape
    streamed = memory is not None and not memory.fits(8 * dim * max(n, len(test_features)))
    norm: nn.Module = nn.Identity()
    if batch_norm:
        norm = nn.BatchNorm1d(dim, affine=False, eps=1e-6)  # eps as in MAE
        if streamed:
            mean, var = _moments(train_features, memory.chunk_rows(8 * dim))  # type: ignore[union-attr]
        else:
            train64 = train_features.double()
            mean, var = train64.mean(dim=0), train64.var(dim=0)
        norm.running_mean.copy_(mean)
        norm.running_var.copy_(var)
    norm.eval()  # always: its statistics are the training set's, not a batch's
    # A convex problem: any start works. Zeros is deterministic, and skip_init leaves the global
    # RNG untouched (the training loop's kNN/probe monitors must not shift its random stream).
    head = torch.nn.utils.skip_init(nn.Linear, dim, num_classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    classifier = nn.Sequential(norm, head).to(device)

    y_train = train_labels.to(device, torch.int64)
    y_test = test_labels.to(device, torch.int64)
    if streamed:
        def train_rows(idx: Tensor) -> Tensor:  # one mini-batch, read and normalised on its own
            with torch.no_grad():
                return norm(train_features[idx.cpu()].to(device, torch.float32))
    else:
        with torch.no_grad():
            x_train = norm(train_features.to(device, torch.float32))  # (N, D), normalised once
            x_test = norm(test_features.to(device, torch.float32))  # (M, D)

        def train_rows(idx: Tensor) -> Tensor:
            return x_train[idx]

    optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps, step = epochs * steps_per_epoch, 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, batch_size):
            for group in optimizer.param_groups:  # cosine decay (Loshchilov & Hutter 2017), per step
                group["lr"] = cosine_at_step(lr, 0.0, step, total_steps)
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(head(train_rows(idx)), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1

    with torch.no_grad():
        if streamed:
            rows = memory.chunk_rows(8 * dim)  # type: ignore[union-attr]
            test_top1, test_top5 = _streamed_accuracy(classifier, test_features, y_test, (1, 5), rows, device)
            (train_top1,) = _streamed_accuracy(classifier, train_features, y_train, (1,), rows, device)
        else:
            test_top1, test_top5 = topk_accuracy(head(x_test), y_test, (1, 5))
            (train_top1,) = topk_accuracy(head(x_train), y_train, (1,))
    return LinearProbeResult(top1=test_top1, top5=test_top5, train_top1=train_top1, epochs=epochs, lr=lr,
                             classifier=classifier.cpu().eval())


def _moments(features: Tensor, rows: int) -> Tuple[Tensor, Tensor]:
    """Per-feature mean and unbiased variance of ``(N, D)`` in float64, ``rows`` rows at a time
    (two passes: the sum of squared deviations from the exact mean does not cancel as ``E[x²] - E[x]²`` does)."""
    n, dim = features.shape
    total = torch.zeros(dim, dtype=torch.float64)
    for start in range(0, n, rows):
        total += features[start:start + rows].double().sum(dim=0)
    mean = total / n
    squares = torch.zeros(dim, dtype=torch.float64)
    for start in range(0, n, rows):
        squares += (features[start:start + rows].double() - mean).square().sum(dim=0)
    return mean, squares / (n - 1)


def _streamed_accuracy(classifier: nn.Module, features: Tensor, labels: Tensor, ks: Sequence[int], rows: int,
                       device: torch.device) -> Tuple[float, ...]:
    """:func:`topk_accuracy` of ``classifier`` on ``features`` read ``rows`` at a time: hits are counted per chunk."""
    hits = [0] * len(ks)
    for start in range(0, len(features), rows):
        logits = classifier(features[start:start + rows].to(device, torch.float32))  # (rows, C)
        ranked = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
        found = ranked == labels[start:start + rows, None]
        for i, k in enumerate(ks):
            hits[i] += int(found[:, :k].any(dim=1).sum())
    return tuple(h / len(features) for h in hits)


@dataclass
class LinearSweepResult:
    """The linear probe retrained on the whole training split with the learning rate chosen on a
    held-out part of it; ``val_top1`` maps each tried lr to its held-out accuracy (fractions)."""

    best: LinearProbeResult
    val_top1: Dict[float, float]
    val_fraction: float

    @property
    def lr(self) -> float:
        return self.best.lr


def linear_probe_sweep(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    lrs: Sequence[float] = (0.01, 0.03, 0.1, 0.3, 1.0),
    val_fraction: float = 0.1,
    seed: int = 0,
    memory: Optional[MemoryBudget] = None,
    **probe_kwargs: Any,
) -> LinearSweepResult:
    """Choose the learning rate of :func:`linear_probe` without ever looking at the test split.

    1. Hold out ``val_fraction`` of each class of the training features (seeded, stratified).
    2. Train one probe per lr on the rest and measure its top-1 on the held-out part.
    3. Retrain with the best lr (the smallest one on ties) on the WHOLE training split and report
       its test accuracy — the protocol of the sweeps in SimCLR (Chen et al. 2020, App. B.6) and
       DINO's linear evaluation, with the selection moved from the test to a held-out train part.

    ``probe_kwargs`` (epochs, batch_size, weight_decay, batch_norm, device) go to every probe, and
    so does ``memory``, which also holds the two parts (in a file when they exceed its budget).
    """
    if not lrs or min(lrs) <= 0:
        raise ConfigError(f"learning rates must be positive, got {list(lrs)}")
    fit_idx, val_idx = stratified_split(train_labels, val_fraction, seed)
    if memory is None:
        fit_x, val_x = train_features[fit_idx], train_features[val_idx]
    else:
        fit_x, val_x = memory.take(train_features, fit_idx), memory.take(train_features, val_idx)
    val_top1: Dict[float, float] = {}
    for lr in lrs:
        held_out = linear_probe(fit_x, train_labels[fit_idx], val_x, train_labels[val_idx], num_classes, lr=lr,
                                seed=seed, memory=memory, **probe_kwargs)
        val_top1[float(lr)] = held_out.top1
    del fit_x, val_x
    best_lr = max(sorted(val_top1), key=lambda lr: val_top1[lr])  # max keeps the first (smallest) of ties
    best = linear_probe(train_features, train_labels, test_features, test_labels, num_classes, lr=best_lr,
                        seed=seed, memory=memory, **probe_kwargs)
    return LinearSweepResult(best=best, val_top1=val_top1, val_fraction=val_fraction)
