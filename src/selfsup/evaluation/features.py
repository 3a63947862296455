"""Frozen-encoder features: extract them once, cache them on disk.

kNN and linear evaluation both train nothing but a classifier on fixed features, so the
encoder runs once per (checkpoint, dataset, split, image size) and the result is cached.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from selfsup.evaluation.storage import MemoryBudget

from selfsup.io import FileReadError, UnsafeFileError, atomic_torch_save, load_torch_file


def extract_features(
    encoder: nn.Module,
    dataset: Dataset,
    batch_size: int = 512,
    num_workers: int = 0,
    device: Union[str, torch.device] = "cpu",
    channels_last: bool = False,
    memory: Optional[MemoryBudget] = None,
    progress: Optional[str] = None,
) -> Tuple[Tensor, Tensor]:
    """Run ``encoder`` in eval mode over ``dataset`` in order.

    Args:
        encoder: maps images ``(B, C, H, W)`` to features ``(B, D)``; must already be on ``device``.
        dataset: yields ``(image (C, H, W) float, label int)``.
        channels_last: feed NHWC batches (faster for convolutional encoders).
        memory: when given, each batch is written into one ``(N, D)`` array from it, which is a
            file mapped from disk when it exceeds the budget; otherwise batches are concatenated in RAM.
        progress: a label, e.g. ``"train features"``: a progress bar of it on stderr, shown only
            when stderr is a terminal (tqdm's ``disable=None``); ``None`` shows nothing.

    Returns:
        ``features (N, D)`` float32 and ``labels (N,)`` int64, both on CPU, in dataset order.
        They are ordinary tensors (usable with autograd, e.g. by :func:`linear_probe`); with
        ``memory``, possibly backed by a file (see :mod:`selfsup.evaluation.storage`).

    The encoder is put in ``eval()`` (BatchNorm uses running statistics, dropout is off) and
    every submodule's previous train/eval mode is restored afterwards.
    """
    modes = {m: m.training for m in encoder.modules()}  # per module: a frozen BN may stay in eval
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=torch.device(device).type == "cuda")
    features: List[Tensor] = []
    labels: List[Tensor] = []
    out: Optional[Tensor] = None  # (N, D) from ``memory``, allocated once the first batch gives D
    done = 0
    bar = tqdm(total=len(dataset), desc=progress, unit="img", unit_scale=True, leave=False,  # type: ignore[arg-type]
               file=sys.stderr, dynamic_ncols=True, disable=None if progress else True)
    encoder.eval()
    try:
        # inference_mode only around the forward: its outputs would be "inference tensors", which
        # autograd refuses to save for backward; torch.cat outside it returns ordinary tensors.
        for images, targets in loader:
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                batch = encoder(images).float().cpu()  # (B, D)
            if memory is None:
                features.append(batch)
            else:
                if out is None:
                    out = memory.empty((len(dataset), *batch.shape[1:]))  # type: ignore[arg-type]
                out[done:done + len(batch)] = batch
            done += len(batch)
            labels.append(torch.as_tensor(targets, dtype=torch.int64))
            bar.update(len(batch))
    finally:
        bar.close()
        for module, training in modes.items():
            module.train(training)
    if not labels:
        raise ValueError("extract_features: the dataset is empty")
    return (torch.cat(features) if out is None else out), torch.cat(labels)


class FeatureCache:
    """Features cached on disk under ``directory/<sha1(key)>.pt``.

    The key is a string the caller builds from everything the features depend on, e.g.
    ``f"{checkpoint}:{mtime}|fashion-mnist|test|28"``. Files are written to a temporary file
    in the same directory and renamed (:mod:`selfsup.io`), so an interrupted run never
    leaves a truncated cache entry behind; entries are read weights-only, and one that holds
    pickled code is refused (:class:`~selfsup.io.UnsafeFileError`). Entries are memory-mapped:
    their features are paged in from the file as the protocols read them, never copied whole
    into RAM.

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
                entry = load_torch_file(path, "a feature cache entry", mmap=True)
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
