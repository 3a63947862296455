"""Run the frozen-feature protocols (kNN, linear probe, few-label probe) on one encoder and one
labelled dataset; the features of each split are extracted once and shared by all of them.

Result keys (fractions in [0, 1]):

* ``knn_top1``, ``knn_top5`` for ``knn_k``; with ``knn_ks`` also ``knn_top1_k{k}``, ``knn_top5_k{k}``
  for every ``k`` (one similarity pass), and ``knn_top1``/``knn_top5`` are those of the first ``k``.
* ``linear_top1``, ``linear_top5``, ``linear_train_top1``, ``linear_lr``; with several
  ``linear_lrs`` the lr is chosen on a held-out part of the TRAIN split, whose accuracies are
  ``linear_val_top1_lr{lr}``, then the probe is retrained on the whole train split.
* ``fewshot{f}_linear_top1``, ``fewshot{f}_knn_top1``, ``fewshot{f}_num_labels`` for each fraction
  ``f`` of ``fewshot_fractions`` (class-balanced subsets of the train split, fixed by ``seed``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from torch import Tensor, nn

from selfsup.data import ImageDataset, TransformDataset
from selfsup.errors import ConfigError
from selfsup.evaluation.features import FeatureCache, extract_features
from selfsup.evaluation.knn import knn_sweep
from selfsup.evaluation.linear import LinearProbeResult, linear_probe, linear_probe_sweep
from selfsup.evaluation.storage import DEFAULT_BUDGET_GB, MemoryBudget
from selfsup.evaluation.subsets import balanced_subset
from selfsup.transforms import eval_transform

PROTOCOLS = ("knn", "linear")
"""The default protocols of :func:`evaluate_encoder`."""
FEATURE_PROTOCOLS = ("knn", "linear", "fewshot")
"""Every protocol that :func:`evaluate_encoder` runs on frozen features."""


@dataclass
class EvalSettings:
    knn_k: int = 200
    knn_ks: List[int] = field(default_factory=list)
    """Several k from one similarity pass (e.g. [10, 20, 100, 200]); empty = just ``knn_k``."""
    knn_temperature: float = 0.1
    linear_epochs: int = 100
    linear_lr: float = 0.1
    linear_lrs: List[float] = field(default_factory=list)
    """Learning rates to choose from on a held-out part of the train split; empty = just ``linear_lr``."""
    linear_val_fraction: float = 0.1
    """Share of each class of the train split held out to choose the lr."""
    linear_batch_norm: bool = True
    fewshot_fractions: List[float] = field(default_factory=lambda: [0.01, 0.1])
    """Label fractions of the few-label protocol (class-balanced subsets of the train split)."""
    seed: int = 0
    """Fixes the held-out split, the few-label subsets and the probes' shuffling."""
    batch_size: int = 512
    image_size: Optional[int] = None
    device: str = "cpu"
    num_workers: int = 0
    memory_budget_gb: float = DEFAULT_BUDGET_GB
    """Largest array held in RAM; larger features go to files, read in chunks (:mod:`~selfsup.evaluation.storage`)."""
    progress: bool = False
    """Show a progress bar of feature extraction on stderr (only when it is a terminal)."""

    def memory(self, directory: Optional[Path] = None) -> MemoryBudget:
        """The budget, with its files in ``directory`` (the feature cache's folder) or ``$TMPDIR``."""
        return MemoryBudget.gigabytes(self.memory_budget_gb, directory)


def encode_splits(
    encoder: nn.Module,
    train_set: ImageDataset,
    test_set: ImageDataset,
    settings: EvalSettings,
    cache: Optional[FeatureCache] = None,
    cache_key: str = "",
) -> Tuple[Tuple[Tensor, Tensor], Tuple[Tensor, Tensor]]:
    """Frozen features of both splits, computed once per (encoder, data, size) when cached; a
    split whose features exceed the memory budget is written to a file beside the cache."""
    transform = eval_transform(train_set.info, settings.image_size)
    channels_last = any(isinstance(m, nn.Conv2d) and m.kernel_size != m.stride for m in encoder.modules())
    memory = settings.memory(cache.directory if cache is not None else None)
    out = []
    for split, dataset in (("train", train_set), ("test", test_set)):
        def compute(dataset: ImageDataset = dataset, split: str = split) -> Tuple[Tensor, Tensor]:
            return extract_features(
                encoder, TransformDataset(dataset, transform), batch_size=settings.batch_size,
                num_workers=settings.num_workers, device=settings.device, channels_last=channels_last,
                memory=memory, progress=f"{split} features" if settings.progress else None,
            )

        key = f"{cache_key}|{train_set.info.name}|{split}|{len(dataset)}|{settings.image_size}"
        out.append(cache.get_or_compute(key, compute) if cache is not None and cache_key else compute())
    return out[0], out[1]


def evaluate_encoder(
    encoder: nn.Module,
    train_set: ImageDataset,
    test_set: ImageDataset,
    protocols: Sequence[str] = PROTOCOLS,
    settings: Optional[EvalSettings] = None,
    cache: Optional[FeatureCache] = None,
    cache_key: str = "",
) -> Dict[str, float]:
    """kNN, linear-probe and/or few-label accuracy (fractions) of ``encoder`` on a labelled dataset.

    ``protocols`` is a subset of :data:`FEATURE_PROTOCOLS`; the keys returned are listed in the
    module docstring.
    """
    settings = settings or EvalSettings()
    unknown = sorted(set(protocols) - set(FEATURE_PROTOCOLS))
    if unknown:
        raise ValueError(f"unknown protocol(s) {unknown}; valid: {', '.join(FEATURE_PROTOCOLS)}")
    (train_x, train_y), (test_x, test_y) = encode_splits(encoder, train_set, test_set, settings, cache, cache_key)
    memory = settings.memory(cache.directory if cache is not None else None)
    return evaluate_features(train_x, train_y, test_x, test_y, train_set.info.num_classes, protocols, settings, memory)


def evaluate_features(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    num_classes: int,
    protocols: Sequence[str] = PROTOCOLS,
    settings: Optional[EvalSettings] = None,
    memory: Optional[MemoryBudget] = None,
) -> Dict[str, float]:
    """The protocols of :func:`evaluate_encoder` on features already extracted: ``(N, D)``, ``(N,)``, ``(M, D)``, ``(M,)``.

    ``memory`` (default: ``settings.memory()``) decides which arrays stay in RAM; features above
    it (e.g. file-backed ones from :func:`encode_splits`) are read in chunks.
    """
    settings = settings or EvalSettings()
    memory = memory or settings.memory()
    results: Dict[str, float] = {"feature_dim": float(train_x.shape[1])}
    if "knn" in protocols:
        ks = list(settings.knn_ks) or [settings.knn_k]
        by_k = knn_sweep(train_x, train_y, test_x, test_y, num_classes, ks, settings.knn_temperature, memory=memory)
        results.update(by_k[ks[0]])
        if settings.knn_ks:
            for k, accuracy in by_k.items():
                results.update({f"{name}_k{k}": value for name, value in accuracy.items()})
    if "linear" in protocols:
        probe, val_top1 = _linear(train_x, train_y, test_x, test_y, num_classes, settings, memory)
        results.update({"linear_top1": probe.top1, "linear_top5": probe.top5, "linear_train_top1": probe.train_top1,
                        "linear_lr": probe.lr})
        results.update({f"linear_val_top1_lr{lr:g}": value for lr, value in val_top1.items()})
    if "fewshot" in protocols:
        if not settings.fewshot_fractions:
            raise ConfigError("the few-label protocol needs at least one fraction, e.g. fewshot_fractions=[0.01, 0.1]")
        for fraction in settings.fewshot_fractions:
            subset = balanced_subset(train_y, fraction, settings.seed)
            sub_x, sub_y = memory.take(train_x, subset), train_y[subset]
            probe, _ = _linear(sub_x, sub_y, test_x, test_y, num_classes, settings, memory)
            knn = knn_sweep(sub_x, sub_y, test_x, test_y, num_classes, [settings.knn_k], settings.knn_temperature,
                            memory=memory)
            prefix = f"fewshot{fraction:g}"
            results.update({f"{prefix}_num_labels": float(len(subset)), f"{prefix}_linear_top1": probe.top1,
                            f"{prefix}_linear_top5": probe.top5, f"{prefix}_linear_lr": probe.lr,
                            f"{prefix}_knn_top1": knn[settings.knn_k]["knn_top1"]})
    return results


def _linear(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, num_classes: int,
            settings: EvalSettings, memory: MemoryBudget) -> Tuple[LinearProbeResult, Dict[float, float]]:
    """One probe at ``linear_lr``, or the held-out lr sweep over ``linear_lrs``: (result, {lr: val top-1})."""
    kwargs = dict(epochs=settings.linear_epochs, batch_norm=settings.linear_batch_norm, device=settings.device,
                  memory=memory)
    if len(settings.linear_lrs) > 1:
        sweep = linear_probe_sweep(train_x, train_y, test_x, test_y, num_classes, settings.linear_lrs,
                                   settings.linear_val_fraction, settings.seed, **kwargs)
        return sweep.best, sweep.val_top1
    lr = settings.linear_lrs[0] if settings.linear_lrs else settings.linear_lr
    return linear_probe(train_x, train_y, test_x, test_y, num_classes, lr=lr, seed=settings.seed, **kwargs), {}
