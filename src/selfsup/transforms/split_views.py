"""Views split in two: geometry per image in DataLoader workers, colour batched on the training device.

For images of varying sizes (``folder:PATH``: ImageNet-like photos), the batched pipeline of
:mod:`selfsup.transforms.batched` cannot start from one uint8 batch. Here each view is made in
two halves that compose to exactly :class:`~selfsup.transforms.views.MultiViewTransform`:

* :class:`CropFlipViews`, run per image in the DataLoader workers, does the geometric part of every
  view with the very transforms views.py uses (``RandomResizedCrop(size, scale, antialias=True)``
  on uint8, then ``RandomHorizontalFlip``), so each view leaves the worker as a fixed-size uint8
  ``(C, S, S)`` crop: 150 KB for a 224-px colour view, whatever the photo's size, and a batch that
  collates into one tensor per view.
* :class:`PhotometricViews`, run on the batch's device, converts those crops to [0, 1] floats (what
  views.py's ``ToDtype(float32, scale=True)`` does next) and applies colour jitter, grayscale, blur,
  solarize and normalisation with batched.py's per-sample ops and random parameters.

The distribution of the views is therefore views.py's: the crop boxes and flips are drawn by the
same torchvision code, and batched.py's photometric ops and parameters are tested against
torchvision's (tests/transforms/test_batched_views.py, tests/transforms/test_folder_views.py).

Example:
    >>> crops = CropFlipViews(ViewConfig.simclr(image_size=224), info)      # in ViewDataset
    >>> [c.shape for c in crops(photo)]                                     # [(3, 224, 224)] * 2, uint8
    >>> colour = PhotometricViews(ViewConfig.simclr(image_size=224), info).to("cuda")
    >>> views = colour([batch.cuda() for batch in collated_crops])           # float32, normalised
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor
from torchvision.transforms import v2

from selfsup.data.base import DatasetInfo
from selfsup.transforms.batched import BatchedMultiViewTransform
from selfsup.transforms.config import ViewConfig


class CropFlipViews:
    """uint8 image ``(C, H, W)`` of any size -> one uint8 crop ``(C, S, S)`` per view (global, then local).

    Built from the first two operations of views.py's :func:`~selfsup.transforms.views.build_view`,
    in the same order and with the same parameters; random draws come from torch's global generator,
    which the DataLoader seeds per worker (and ``ViewDataset`` per sample, where it does).
    """

    def __init__(self, cfg: ViewConfig, info: DatasetInfo) -> None:
        cfg.validate()
        self.cfg, self.info = cfg, info
        self.global_size = cfg.image_size or info.image_size
        self.local_size = cfg.local_size or round(self.global_size * 96 / 224)
        self.views = [self._crop(self.global_size, cfg.crop_scale) for _ in range(cfg.num_global_views)]
        self.views += [self._crop(self.local_size, cfg.local_crop_scale)] * cfg.num_local_views

    def _crop(self, size: int, scale: tuple[float, float]) -> v2.Compose:
        ops: list[v2.Transform] = [v2.RandomResizedCrop(size, scale=scale, antialias=True)]
        if self.cfg.flip_prob > 0:
            ops.append(v2.RandomHorizontalFlip(self.cfg.flip_prob))
        return v2.Compose(ops)

    def __call__(self, image: Tensor) -> list[Tensor]:
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != self.info.num_channels:
            raise ValueError(f"expected a uint8 image ({self.info.num_channels}, H, W), "
                             f"got {image.dtype} {tuple(image.shape)}")
        return [view(image) for view in self.views]

    def __repr__(self) -> str:
        return f"CropFlipViews({self.cfg}, global_size={self.global_size}, local_size={self.local_size})"


class PhotometricViews(BatchedMultiViewTransform):
    """Colour half of the views: uint8 crops from :class:`CropFlipViews`, collated -> normalised float32 views.

    Takes the list of ``num_global_views + num_local_views`` uint8 tensors ``(B, C, S, S)`` that the
    DataLoader collates from :class:`CropFlipViews`' output and returns the float32 views in the same
    order, made by :meth:`BatchedMultiViewTransform.apply_photometric_` (views sharing a spec, such as
    SimCLR's two or DINO's local crops, run as one batch). Random parameters are drawn as
    :class:`BatchedMultiViewTransform` draws them (CPU generator by default: no host sync on CUDA).
    """

    def forward(self, crops: list[Tensor], generator: torch.Generator | None = None) -> list[Tensor]:  # type: ignore[override]
        if len(crops) != len(self.specs):
            raise ValueError(f"expected {len(self.specs)} uint8 crops (one per view), got {len(crops)}")
        views: list[Tensor] = []
        position = 0
        for spec, group in itertools.groupby(self.specs):
            n = len(list(group))
            batch = crops[position:position + n]
            position += n
            for crop in batch:
                if crop.dtype != torch.uint8 or crop.ndim != 4 or crop.shape[1:] != (self.info.num_channels,
                                                                                     spec.size, spec.size):
                    raise ValueError(f"expected uint8 crops (B, {self.info.num_channels}, {spec.size}, "
                                     f"{spec.size}), got {crop.dtype} {tuple(crop.shape)}")
            x = (torch.cat(batch) if n > 1 else batch[0]).float().mul_(1 / 255)  # ToDtype(float32, scale=True)
            params = self.sample_params(spec, len(x), spec.size, spec.size, generator)
            views += self.apply_photometric_(x, params, spec).chunk(n)
        return views
