"""The pretraining augmentation pipeline: several random views of one image."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from selfsup.data.base import DatasetInfo
from selfsup.transforms.config import ViewConfig

SOLARIZE_THRESHOLD = 0.5  # pixels >= 0.5 are inverted (BYOL, Grill et al. 2020, App. B)


def blur_kernel_size(crop_size: int, frac: float = 0.1) -> int:
    """Odd Gaussian-blur kernel side of about ``frac`` of the crop side, at least 3 (SimCLR App. A)."""
    k = max(3, round(frac * crop_size))
    return k + 1 - k % 2


def build_view(cfg: ViewConfig, info: DatasetInfo, size: int, scale: tuple[float, float],
               blur_prob: float, solarize_prob: float) -> v2.Compose:
    """One view's pipeline: uint8 ``(C, H, W)`` -> normalised float32 ``(C, size, size)``.

    Crop and flip run on uint8 (fewer bytes to resample); the photometric ops run on float in
    [0, 1], which measured ~10% faster than on uint8 (torchvision converts uint8 to float inside
    each of them anyway) and avoids rounding between them. Operations with probability 0 are left
    out rather than applied with p=0.
    """
    ops: list[v2.Transform] = [v2.RandomResizedCrop(size, scale=scale, antialias=True)]
    if cfg.flip_prob > 0:
        ops.append(v2.RandomHorizontalFlip(cfg.flip_prob))
    ops.append(v2.ToDtype(torch.float32, scale=True))
    color = info.num_channels == 3
    brightness, contrast, saturation, hue = cfg.jitter
    # Saturation, hue and grayscale conversion mean nothing for one-channel images.
    jitter = v2.ColorJitter(brightness, contrast, saturation, hue) if color else v2.ColorJitter(brightness, contrast)
    if cfg.jitter_prob > 0 and any(cfg.jitter if color else (brightness, contrast)):
        ops.append(v2.RandomApply([jitter], p=cfg.jitter_prob))
    if color and cfg.grayscale_prob > 0:
        ops.append(v2.RandomGrayscale(cfg.grayscale_prob))
    if blur_prob > 0:
        blur = v2.GaussianBlur(blur_kernel_size(size, cfg.blur_kernel_frac), sigma=cfg.blur_sigma)
        ops.append(v2.RandomApply([blur], p=blur_prob))
    if solarize_prob > 0:
        ops.append(v2.RandomSolarize(SOLARIZE_THRESHOLD, p=solarize_prob))
    ops.append(v2.Normalize(info.mean, info.std))
    return v2.Compose(ops)


class MultiViewTransform:
    """Maps a uint8 image ``(C, H, W)`` to a list of normalised float32 views.

    The list holds ``num_global_views`` views ``(C, S, S)`` (view ``i`` uses ``blur_prob[i]`` and
    ``solarize_prob[i]``), then ``num_local_views`` views ``(C, s, s)``. Random draws come from
    torch's global generator, so ``torch.manual_seed`` makes the views reproducible.

    Example:
        >>> t = MultiViewTransform(ViewConfig.simclr(), info)   # info.image_size == 32
        >>> [v.shape for v in t(image)]                         # [(3, 32, 32), (3, 32, 32)]
    """

    def __init__(self, cfg: ViewConfig, info: DatasetInfo) -> None:
        cfg.validate()
        self.cfg, self.info = cfg, info
        self.global_size = cfg.image_size or info.image_size
        self.local_size = cfg.local_size or round(self.global_size * 96 / 224)
        # Built once: composing v2 pipelines per call costs more than applying them to 28x28 images.
        self.views = [build_view(cfg, info, self.global_size, cfg.crop_scale, blur, solarize)
                      for blur, solarize in zip(cfg.blur_prob, cfg.solarize_prob)]
        local = build_view(cfg, info, self.local_size, cfg.local_crop_scale,
                           cfg.local_blur_prob, cfg.local_solarize_prob)
        self.views += [local] * cfg.num_local_views  # stateless, so one pipeline serves all local crops

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [view(image) for view in self.views]

    def __repr__(self) -> str:
        return f"MultiViewTransform({self.cfg}, global_size={self.global_size}, local_size={self.local_size})"
