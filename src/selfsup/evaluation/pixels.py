"""The raw-pixel floor: kNN and linear probe on the images themselves, no encoder at all.

Flattened images are the features up to :data:`PIXEL_DIMS` values per image (Fashion-MNIST's
784, CIFAR's 3072: exact, as always). Beyond, they are first reduced by a fixed, seeded very
sparse random projection to :data:`PIXEL_DIMS` dimensions (Li, Hastie & Church, KDD 2006), a
Johnson–Lindenstrauss map: pairwise distances and inner products are kept up to a relative error
of about ``sqrt(2 / PIXEL_DIMS)`` ≈ 2 % (one standard deviation), so kNN and the linear probe see
nearly the same geometry in 37× fewer dimensions for ImageNet at 224 px (150528 → 4096): 21 GB
of training features instead of 720 GiB. The report says when this was done.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.data import ImageDataset
from selfsup.evaluation.features import FeatureCache
from selfsup.evaluation.suite import PROTOCOLS, EvalSettings, evaluate_encoder

PIXEL_DIMS = 4096
"""Flattened images with more values than this are randomly projected to this many dimensions."""


class SparseRandomProjection(nn.Module):
    """``(B, d) -> (B, k)``: each output is a signed sum of ``m = ceil(sqrt(d))`` random inputs.

    The very sparse random projection of Li, Hastie & Church (2006), with the ``d / s = sqrt(d)``
    expected non-zeros of each row fixed to exactly ``m``, and the scale ``sqrt(d / (k m))`` that
    makes ``E ||P x||² = ||x||²``. Drawn from its own generator seeded with ``seed``: the global RNG
    is untouched and the same seed gives the same projection everywhere. ``m`` non-zeros per
    row instead of ``d`` make it cheap: 616 M weights become 1.6 M for 224 px RGB (``d = 150528``).
    """

    def __init__(self, in_features: int, out_features: int, seed: int = 0) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        nonzeros = math.ceil(math.sqrt(in_features))
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("indices", torch.randint(in_features, (out_features, nonzeros), generator=generator))
        signs = torch.randint(2, (out_features, nonzeros), generator=generator).float() * 2 - 1
        self.register_buffer("weights", signs * math.sqrt(in_features / (out_features * nonzeros)))

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(1)  # (B, d)
        # One bag per output coordinate: embedding_bag sums the rows ``indices[j]`` of ``flat.T``
        # (d, B), weighted by ``weights[j]``: a sparse (k, d) @ (d, B) product without a sparse format.
        out = F.embedding_bag(self.indices, flat.T.contiguous(), per_sample_weights=self.weights.to(flat.dtype),
                              mode="sum")  # (k, B)
        return out.T.contiguous()

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, {self.indices.shape[1]} non-zeros per output"


def pixel_encoder(num_values: int, max_dims: int = PIXEL_DIMS, seed: int = 0) -> Tuple[nn.Module, str, Optional[str]]:
    """The raw-pixel "encoder" for images of ``num_values`` values (C·H·W): ``(module, cache key, note)``.

    ``note`` is None when the pixels are used as they are (``num_values <= max_dims``), else it
    says what was done, e.g. ``"random projection 150528 -> 4096 dims"``.
    """
    if num_values <= max_dims:
        return nn.Flatten(), "pixels", None
    projection = SparseRandomProjection(num_values, max_dims, seed)
    note = f"random projection {num_values} -> {max_dims} dims"
    return nn.Sequential(nn.Flatten(), projection), f"pixels|sparse-rp{max_dims}|seed{seed}", note


def evaluate_pixels(
    train_set: ImageDataset,
    test_set: ImageDataset,
    protocols: Sequence[str] = PROTOCOLS,
    settings: Optional[EvalSettings] = None,
    cache: Optional[FeatureCache] = None,
    max_dims: int = PIXEL_DIMS,
) -> Dict[str, Any]:
    """:func:`~selfsup.evaluation.suite.evaluate_encoder`'s metrics of the raw pixels at the
    evaluation resolution, plus ``"note"`` when they were randomly projected (seeded by ``settings.seed``)."""
    settings = settings or EvalSettings()
    size = settings.image_size or train_set.info.image_size  # what eval_transform produces
    encoder, key, note = pixel_encoder(train_set.info.num_channels * size * size, max_dims, settings.seed)
    result: Dict[str, Any] = dict(evaluate_encoder(encoder, train_set, test_set, protocols, settings, cache, key))
    if note is not None:
        result["note"] = note
    return result
