"""Frozen-encoder features: extract them once, cache them on disk.

kNN and linear evaluation both train nothing but a classifier on fixed features, so the
encoder runs once per (checkpoint, dataset, split, image size) and the result is cached.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Dict, Tuple, Union

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from selfsup.io import FileReadError, UnsafeFileError, atomic_torch_save, load_torch_file


def extract_features(
    encoder: nn.Module,
    dataset: Dataset,
    batch_size: int = 512,
    num_workers: int = 0,
    device: Union[str, torch.device] = "cpu",
    channels_last: bool = False,
) -> Tuple[Tensor, Tensor]:
    """Run ``encoder`` in eval mode over ``dataset`` in order.

    Args:
        encoder: maps images ``(B, C, H, W)`` to features ``(B, D)``; must already be on ``device``.
        dataset: yields ``(image (C, H, W) float, label int)``.
        channels_last: feed NHWC batches (faster for convolutional encoders).

    Returns:
        ``features (N, D)`` float32 and ``labels (N,)`` int64, both on CPU, in dataset order.
        They are ordinary tensors (usable with autograd, e.g. by :func:`linear_probe`).

    The encoder is put in ``eval()`` (BatchNorm uses running statistics, dropout is off) and
    every submodule's previous train/eval mode is restored afterwards.
    """
    modes = {m: m.training for m in encoder.modules()}  # per module: a frozen BN may stay in eval
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=torch.device(device).type == "cuda")
    features, labels = [], []
    encoder.eval()
    try:
        # inference_mode only around the forward: its outputs would be "inference tensors", which
        # autograd refuses to save for backward; torch.cat outside it returns ordinary tensors.
        for images, targets in loader:
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                features.append(encoder(images).float().cpu())  # (B, D)
            labels.append(torch.as_tensor(targets, dtype=torch.int64))
    finally:
        for module, training in modes.items():
            module.train(training)
    if not features:
        raise ValueError("extract_features: the dataset is empty")
    return torch.cat(features), torch.cat(labels)


class FeatureCache:
    """Features cached on disk under ``directory/<sha1(key)>.pt``.

    The key is a string the caller builds from everything the features depend on, e.g.
    ``f"{checkpoint}:{mtime}|fashion-mnist|test|28"``. Files are written to a temporary file
    in the same directory and renamed (:mod:`selfsup.io`), so an interrupted run never
    leaves a truncated cache entry behind; entries are read weights-only, and one that holds
    pickled code is refused (:class:`~selfsup.io.UnsafeFileError`).

    Example:
        >>> cache = FeatureCache("runs/x/features")
        >>> feats, labels = cache.get_or_compute(key, lambda: extract_features(encoder, test_set))
    """

    def __init__(self, directory: Union[str, Path]) -> None:
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        return self.directory / f"{hashlib.sha1(key.encode('utf-8')).hexdigest()}.pt"

    def get_or_compute(self, key: str, compute: Callable[[], Tuple[Tensor, Tensor]]) -> Tuple[Tensor, Tensor]:
        """The cached ``(features (N, D), labels (N,))`` for ``key``, computing and storing them if absent."""
        path = self.path(key)
        if path.is_file():
            try:
                entry = load_torch_file(path, "a feature cache entry")
                if isinstance(entry, dict) and entry.get("key") == key:
                    return entry["features"], entry["labels"]
            except UnsafeFileError:  # code planted in the cache: refused, never overwritten silently
                raise
            except FileReadError:  # an unreadable entry (e.g. a torn copy) is recomputed
                pass
        features, labels = compute()
        self._write(path, {"key": key, "features": features, "labels": labels})
        return features, labels

    def _write(self, path: Path, entry: Dict[str, object]) -> None:
        atomic_torch_save(entry, path)
