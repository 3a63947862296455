"""Run the evaluation protocols on one encoder and one labelled dataset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from selfsup.data import ImageDataset, TransformDataset
from selfsup.evaluation.features import FeatureCache, extract_features
from selfsup.evaluation.knn import knn_accuracy
from selfsup.evaluation.linear import linear_probe
from selfsup.transforms import eval_transform

PROTOCOLS = ("knn", "linear")


@dataclass
class EvalSettings:
    knn_k: int = 200
    knn_temperature: float = 0.1
    linear_epochs: int = 100
    linear_lr: float = 0.1
    linear_batch_norm: bool = True
    batch_size: int = 512
    image_size: Optional[int] = None
    device: str = "cpu"
    num_workers: int = 0


def encode_splits(
    encoder: nn.Module,
    train_set: ImageDataset,
    test_set: ImageDataset,
    settings: EvalSettings,
    cache: Optional[FeatureCache] = None,
    cache_key: str = "",
) -> Tuple[Tuple[Tensor, Tensor], Tuple[Tensor, Tensor]]:
    """Frozen features of both splits, computed once per (encoder, data, size) when cached."""
    transform = eval_transform(train_set.info, settings.image_size)
    channels_last = any(isinstance(m, nn.Conv2d) and m.kernel_size != m.stride for m in encoder.modules())
    out = []
    for split, dataset in (("train", train_set), ("test", test_set)):
        def compute(dataset: ImageDataset = dataset) -> Tuple[Tensor, Tensor]:
            return extract_features(
                encoder, TransformDataset(dataset, transform), batch_size=settings.batch_size,
                num_workers=settings.num_workers, device=settings.device, channels_last=channels_last,
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
    """kNN and/or linear-probe accuracy (fractions) of ``encoder`` on a labelled dataset."""
    settings = settings or EvalSettings()
    unknown = sorted(set(protocols) - set(PROTOCOLS))
    if unknown:
        raise ValueError(f"unknown protocol(s) {unknown}; valid: {', '.join(PROTOCOLS)}")
    (train_x, train_y), (test_x, test_y) = encode_splits(encoder, train_set, test_set, settings, cache, cache_key)
    num_classes = train_set.info.num_classes
    results: Dict[str, float] = {"feature_dim": float(train_x.shape[1])}
    if "knn" in protocols:
        results.update(knn_accuracy(train_x, train_y, test_x, test_y, num_classes,
                                    k=min(settings.knn_k, len(train_y)), temperature=settings.knn_temperature))
    if "linear" in protocols:
        torch.manual_seed(0)
        probe = linear_probe(train_x, train_y, test_x, test_y, num_classes, epochs=settings.linear_epochs,
                             lr=settings.linear_lr, batch_norm=settings.linear_batch_norm, device=settings.device)
        results.update({"linear_top1": probe.top1, "linear_top5": probe.top5, "linear_train_top1": probe.train_top1})
    return results
