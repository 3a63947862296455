"""Automatic data curation with a trained encoder (DINOv2, Oquab et al. 2023, Sec. 3).

DINOv2 builds LVD-142M from a large uncurated pool in three steps, each in an embedding space:

1. embed every image with a self-supervised encoder (L2-normalised features, cosine similarity);
2. remove near-duplicates: images whose similarity exceeds a threshold are linked, and each
   connected group keeps one image (Sec. 3, "Deduplication", after Pizzi et al. 2022);
3. retrieve, for every image of a small curated set, its nearest uncurated images
   ("sample-based retrieval", k nearest per query; or every image above a similarity threshold).

The functions here are plain and composable; :func:`curate` chains them and ``selfsup curate``
(:mod:`selfsup.commands.curate`) is its command line. Example::

    loaded = load_encoder("runs/dino/last.ckpt")
    result = curate(loaded.encoder, FolderDataset("pool/"), FolderDataset("seeds/"), per_query=4,
                    dedup_threshold=0.95, info=training_info("runs/dino/last.ckpt"))
    write_file_list(result.selected, "selected.txt")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.data import DatasetInfo, FolderDataset, TransformDataset
from selfsup.data.catalog import FOLDER_PREFIX
from selfsup.errors import ConfigError, DataError
from selfsup.evaluation import extract_features
from selfsup.io import atomic_write_text, load_torch_file
from selfsup.transforms import eval_transform

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale


@dataclass
class CurationResult:
    """What :func:`curate` chose."""

    selected: List[Path]
    """Uncurated files retrieved for the curated set, in the pool's (sorted) order."""
    num_uncurated: int
    num_after_dedup: int
    num_queries: int

    @property
    def duplicates_removed(self) -> int:
        return self.num_uncurated - self.num_after_dedup


def image_folder(spec: str) -> FolderDataset:
    """The images of ``folder:PATH`` or of a plain directory ``PATH`` (all of them, sub-folders included)."""
    path = spec[len(FOLDER_PREFIX):] if spec.startswith(FOLDER_PREFIX) else spec
    if not path:
        raise DataError(f"'{spec}' names no folder; give a directory or folder:/path/to/images")
    return FolderDataset(path)


def training_info(checkpoint: str | Path) -> Optional[DatasetInfo]:
    """The description of the data the encoder in ``checkpoint`` was trained on (its input size,
    channels and normalisation), or None when the file does not record it (e.g. 'random')."""
    path = Path(checkpoint)
    if not path.is_file():
        return None
    stored = load_torch_file(path, "a selfsup checkpoint or exported encoder", mmap=True)
    meta = stored.get("selfsup") if isinstance(stored, dict) else None
    info = meta.get("dataset_info") if isinstance(meta, dict) else None
    if info is None and isinstance(stored, dict) and isinstance(stored.get("method"), dict):
        info = stored["method"].get("dataset_info")  # an exported encoder of a wrapping method
    if info is None:
        return None
    return DatasetInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in info.items()})


def _match_channels(channels: int) -> Callable[[Tensor], Tensor]:
    """uint8 ``(C, H, W)`` → ``(channels, H, W)``: grey images repeated to RGB, RGB reduced to luma."""

    def convert(image: Tensor) -> Tensor:
        if image.shape[0] == channels:
            return image
        if channels == 3 and image.shape[0] == 1:
            return image.expand(3, -1, -1)
        if channels == 1 and image.shape[0] == 3:
            weights = torch.tensor(GRAY_WEIGHTS).view(3, 1, 1)
            return (image.float() * weights).sum(0, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        raise DataError(f"cannot feed {image.shape[0]}-channel images to an encoder of {channels} channels")

    return convert


def embed_images(
    encoder: nn.Module,
    dataset: FolderDataset,
    info: Optional[DatasetInfo] = None,
    image_size: Optional[int] = None,
    batch_size: int = 256,
    device: str = "cpu",
) -> Tensor:
    """L2-normalised features ``(N, D)`` of every image of ``dataset``, in its order.

    Args:
        encoder: images ``(B, C, H, W)`` → ``(B, D)``, already on ``device``.
        info: size, channels and normalisation the encoder was trained with (default: the
            folder's own, i.e. ImageNet statistics at 224 pixels).
        image_size: side of the images fed to the encoder (default ``info.image_size``).
    """
    info = info or dataset.info
    to_tensor = eval_transform(info, image_size)
    convert = _match_channels(info.num_channels)
    transformed = TransformDataset(dataset, lambda image: to_tensor(convert(image)))
    features, _ = extract_features(encoder, transformed, batch_size=batch_size, device=device)
    return F.normalize(features, dim=1)


def near_duplicate_groups(features: Tensor, threshold: float, chunk_size: int = 1024) -> Tensor:
    """Group id ``(N,)`` of each row: rows with cosine similarity ``> threshold`` are linked, and a
    group is a connected component of these links, named by its smallest row index.

    Args:
        features: ``(N, D)`` L2-normalised.
        threshold: similarity above which two images are near-duplicates (e.g. 0.95).
        chunk_size: rows compared at once (memory ``chunk_size × N``).
    """
    n = features.shape[0]
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving
            i = parent[i]
        return i

    for start in range(0, n, chunk_size):
        similarity = features[start:start + chunk_size] @ features.t()  # (chunk, N)
        rows, cols = torch.nonzero(similarity > threshold, as_tuple=True)
        for i, j in zip((rows + start).tolist(), cols.tolist()):
            if i < j:
                a, b = root(i), root(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)  # the smaller index stays the group's name
    return torch.tensor([root(i) for i in range(n)], dtype=torch.long)


def deduplicate(features: Tensor, threshold: float) -> Tensor:
    """Indices ``(N',)`` (sorted) of the rows kept: the first row of each near-duplicate group."""
    groups = near_duplicate_groups(features, threshold)
    return torch.nonzero(groups == torch.arange(len(groups)), as_tuple=True)[0]


def retrieve(
    queries: Tensor, pool: Tensor, per_query: Optional[int] = None, threshold: Optional[float] = None
) -> Tensor:
    """Sorted unique indices into ``pool`` of the images close to some query.

    Args:
        queries: ``(Q, D)`` L2-normalised features of the curated images.
        pool: ``(N, D)`` L2-normalised features of the (deduplicated) uncurated images.
        per_query: keep each query's ``k`` most similar pool images (DINOv2's sample-based retrieval).
        threshold: keep pool images whose similarity to a query is at least this; with
            ``per_query``, both conditions must hold.
    """
    if per_query is None and threshold is None:
        raise ConfigError("retrieval needs per_query (k nearest per curated image) or a similarity threshold")
    if per_query is not None and per_query < 1:
        raise ConfigError(f"per_query={per_query} must be a positive number of images per curated image")
    similarity = queries @ pool.t()  # (Q, N)
    chosen = torch.zeros_like(similarity, dtype=torch.bool)
    if per_query is not None:
        nearest = similarity.topk(min(per_query, pool.shape[0]), dim=1).indices  # (Q, k)
        chosen.scatter_(1, nearest, True)
    else:
        chosen.fill_(True)
    if threshold is not None:
        chosen &= similarity >= threshold
    return torch.nonzero(chosen.any(dim=0), as_tuple=True)[0]


def curate(
    encoder: nn.Module,
    uncurated: FolderDataset,
    curated: FolderDataset,
    per_query: Optional[int] = 4,
    threshold: Optional[float] = None,
    dedup_threshold: Optional[float] = 0.95,
    info: Optional[DatasetInfo] = None,
    image_size: Optional[int] = None,
    batch_size: int = 256,
    device: str = "cpu",
) -> CurationResult:
    """Embed both folders, deduplicate the uncurated one (``dedup_threshold`` None: skip), and
    retrieve its images nearest to the curated ones."""
    if dedup_threshold is not None and not -1.0 <= dedup_threshold <= 1.0:
        raise ConfigError(f"dedup threshold {dedup_threshold} must be a cosine similarity in [-1, 1] (e.g. 0.95)")
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise ConfigError(f"similarity threshold {threshold} must be a cosine similarity in [-1, 1]")
    info = info or uncurated.info  # one preprocessing for both folders, matching the encoder's channels
    encoder = encoder.to(device)
    pool = embed_images(encoder, uncurated, info, image_size, batch_size, device)
    queries = embed_images(encoder, curated, info, image_size, batch_size, device)
    kept = deduplicate(pool, dedup_threshold) if dedup_threshold is not None else torch.arange(len(pool))
    chosen = kept[retrieve(queries, pool[kept], per_query, threshold)]
    return CurationResult([Path(uncurated.files[i]) for i in chosen.tolist()], len(pool), len(kept), len(queries))


def write_file_list(paths: Sequence[Path], output: str | Path) -> Path:
    """Write one absolute path per line to ``output`` (atomically: a temporary file is renamed)."""
    return atomic_write_text(output, "".join(f"{Path(p).resolve()}\n" for p in paths))
