"""The pretraining views of a whole uint8 batch at once, with tensor ops on the batch's device.

:class:`BatchedMultiViewTransform` draws the views of
:class:`~selfsup.transforms.views.MultiViewTransform` with the same distribution, but with a few
dozen batched ops per view instead of ~15 torchvision calls per image, whose fixed overhead is
nearly all the cost on 28x28/32x32 images. Every random parameter is drawn per sample.

The ops below take ``(B, C, H, W)`` floats in [0, 1] and one parameter per sample, follow the
formulas of ``torchvision.transforms.v2.functional``, and are public so the tests can compare them
with torchvision one image at a time. The photometric ones work in place (trailing underscore).

Example:
    >>> t = BatchedMultiViewTransform(ViewConfig.simclr(), info).to(device)    # info.image_size == 32
    >>> views = t(images.to(device), generator=torch.Generator().manual_seed(0))  # uint8 (B, 3, 32, 32)
    >>> [tuple(v.shape) for v in views]                                          # [(B, 3, 32, 32)] * 2
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.data.base import DatasetInfo
from selfsup.transforms.config import ViewConfig
from selfsup.transforms.views import SOLARIZE_THRESHOLD, blur_kernel_size

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, written as torchvision's rgb_to_grayscale does
LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))  # RandomResizedCrop's default aspect-ratio range
CROP_ATTEMPTS = 10  # RandomResizedCrop tries 10 boxes before falling back to a central crop
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)  # ColorJitter's operations; columns of ViewParams.factors
IDENTITY = (1.0, 1.0, 1.0, 0.0)  # jitter factors that change nothing
NUM_UNIFORMS = 2 * CROP_ATTEMPTS + 16  # uniform draws per sample and view (see sample_params)


def _on(t: Tensor, x: Tensor) -> Tensor:
    """A (small) parameter tensor on ``x``'s device; ``non_blocking`` spares a CUDA stream sync."""
    return t.to(x.device, non_blocking=True)


def _per_sample(values: Tensor, x: Tensor) -> Tensor:
    """``(B,)`` -> ``(B, 1, 1, 1)`` with ``x``'s device and dtype, to broadcast over images."""
    return _on(values, x).to(x.dtype).view(-1, 1, 1, 1)


def _apply_rows_(x: Tensor, rows: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """``x[rows] = fn(x[rows])`` in place, so an op drawn with probability p costs p of the batch.

    ``rows`` comes from ``nonzero()`` on the parameters' device: on the CPU that needs no host sync.
    """
    if len(rows):
        rows = _on(rows, x)
        x.index_copy_(0, rows, fn(x.index_select(0, rows)))
    return x


# --- Geometry: RandomResizedCrop + RandomHorizontalFlip in one resampling -----------------------

def resample_matrix(start: Tensor, length: Tensor, in_size: int, out_size: int,
                    flips: Tensor | None = None) -> Tensor:
    """Per-sample 1-D resampling weights ``(B, out_size, in_size)`` of the window ``[start, start + length)``.

    The weights of ``F.interpolate(mode="bilinear", align_corners=False, antialias=True)`` on the
    cropped window: output pixel ``o`` is centred at ``start + (o + 0.5) * length / out_size`` and
    takes a triangle filter of half-width ``max(1, length / out_size)`` over the window's pixels,
    normalised to sum 1. When upsampling (half-width 1) this is plain bilinear interpolation with the
    window's edge pixels repeated, which is also what ``antialias=False`` computes. Where ``flips``,
    the output is mirrored (its pixel ``o`` takes the centre of ``out_size - 1 - o``).

    Args:
        start, length: ``(B,)`` window offset and length in input pixels (whole numbers).
        flips: ``(B,)`` bool or None.
    """
    start, length = start.float().unsqueeze(1), length.float().unsqueeze(1)  # (B, 1)
    scale = length / out_size
    position = torch.arange(out_size, device=start.device) + 0.5  # (out,)
    if flips is not None:
        position = torch.where(flips.unsqueeze(1), out_size - position, position)  # (B, out)
    centre = start + scale * position  # (B, out)
    pixel = torch.arange(in_size, device=start.device) + 0.5  # pixel centres (in,)
    inside = (pixel >= start) & (pixel < start + length)  # (B, in): only the window's pixels count
    weights = (pixel - centre.unsqueeze(2)).mul_(1 / scale.clamp(min=1.0).unsqueeze(2))  # (B, out, in)
    weights = weights.abs_().neg_().add_(1).clamp_(min=0).mul_(inside.unsqueeze(1))
    return weights.div_(weights.sum(dim=2, keepdim=True))


def resized_crop(x: Tensor, boxes: Tensor, flips: Tensor, size: int, gain: float = 1.0) -> Tensor:
    """Crop ``boxes`` out of ``x``, resize them to ``size`` x ``size`` and mirror them where ``flips``.

    Equals torchvision's ``resized_crop(x[b], *boxes[b], [size, size], antialias=True)``, then
    ``horizontal_flip`` where ``flips[b]``. Bilinear resampling is separable, so each crop is
    ``R_y @ x @ R_x^T`` with the ``(size, H)`` and ``(size, W)`` matrices of :func:`resample_matrix`:
    two batched matmuls. The work is ``O(C size H W)`` per image rather than grid_sample's
    ``O(C size^2)``, cheap for the <=96-pixel images this is for (and for any size on a GPU); in
    exchange, downscaled crops are antialiased as views.py's are, where grid_sample would alias.

    Args:
        x: ``(B, C, H, W)`` float images.
        boxes: ``(N, 4)`` ``(top, left, height, width)`` in pixels, ``N`` a multiple of ``B``: crop
            ``n`` is taken from image ``n % B`` (several views of one batch in one call).
        flips: ``(N,)`` bool, mirror left-right.
        gain: folded into the weights: ``1 / 255`` maps 0..255 values to [0, 1] for free.
    Returns:
        A new ``(N, C, size, size)`` tensor.
    """
    b, c, h, w = x.shape
    n = len(boxes)
    boxes = _on(boxes, x)
    rows = resample_matrix(boxes[:, 0], boxes[:, 2], h, size)  # (N, S, H)
    cols = resample_matrix(boxes[:, 1], boxes[:, 3], w, size, _on(flips, x)).mul_(gain)  # (N, S, W)
    # Contiguous operands and plain bmm: broadcasting matmul measured 3x slower on the CPU.
    cols = cols.transpose(1, 2).contiguous()  # (N, W, S)
    out = x.new_empty(n, c * h, size)
    for start in range(0, n, b):  # each copy of the batch straight from x, without repeating x
        torch.bmm(x.reshape(b, c * h, w), cols[start:start + b], out=out[start:start + b])  # (B, C*H, S)
    rows = rows.repeat_interleave(c, dim=0) if c > 1 else rows  # (N*C, S, H)
    return torch.bmm(rows, out.view(n * c, h, size)).view(n, c, size, size)


# --- Photometric ops: in place on (B, C, H, W) floats in [0, 1], one parameter per sample --------
# On the CPU, fresh multi-megabyte tensors cost page faults that can exceed the arithmetic, so
# these work in place (trailing underscore, as in torch) on the view that the pipeline owns.

def rgb_to_grayscale(x: Tensor, out: Tensor | None = None) -> Tensor:
    """``(B, 3, H, W)`` -> luma ``(B, 1, H, W)`` (into ``out`` if given), summed in torchvision's order."""
    r, g, b = x.unbind(dim=1)
    gray = torch.mul(r, GRAY_WEIGHTS[0], out=None if out is None else out[:, 0])
    return gray.add_(g, alpha=GRAY_WEIGHTS[1]).add_(b, alpha=GRAY_WEIGHTS[2]).unsqueeze(1)


def _blend_(x: Tensor, other: Tensor | None, factors: Tensor) -> Tensor:
    """torchvision's ``_blend`` for floats in place: ``f * x + (1 - f) * other``, clamped to [0, 1].

    ``other`` (broadcast to ``x``; None means black) is overwritten.
    """
    f = _per_sample(factors, x)
    if other is None:
        x.mul_(f)
    else:  # one pass over x: elementwise ops may write over an input they read
        torch.addcmul(other.mul_(1 - f), x, f, out=x)
    return x.clamp_(0.0, 1.0)


def adjust_brightness_(x: Tensor, factors: Tensor) -> Tensor:
    """Blend with black (``factors`` ``(B,)``; 1 changes nothing)."""
    return _blend_(x, None, factors)


def adjust_contrast_(x: Tensor, factors: Tensor) -> Tensor:
    """Blend with the mean of the image's grayscale version, one value per image."""
    gray = rgb_to_grayscale(x) if x.shape[1] == 3 else x
    return _blend_(x, gray.mean(dim=(1, 2, 3), keepdim=True), factors)


def adjust_saturation_(x: Tensor, factors: Tensor) -> Tensor:
    """Blend with the grayscale image; one-channel images stay as they are, as in torchvision."""
    return x if x.shape[1] == 1 else _blend_(x, rgb_to_grayscale(x), factors)


def adjust_hue_(x: Tensor, factors: Tensor) -> Tensor:
    """Rotate the hue by ``factors`` ``(B,)`` turns in [-0.5, 0.5]; one-channel images stay as they are.

    torchvision converts RGB -> HSV -> RGB. A hue rotation keeps each pixel's largest and smallest
    channel, so only the hue is computed, as ``h6 = 6 * hue`` in [0, 6) by Pillow's rule (red wins
    ties, then green), and each channel comes back as ``max - chroma * w`` with ``w`` the channel's
    distance-to-hue ramp ``clamp(d - 1, 0, 1)``, ``d`` the circular distance from ``h6`` to the
    channel's own hue (R 0, G 2, B 4): the closed form of HSV -> RGB. Selections are ``lerp`` with
    0/1 weights because ``torch.where`` is ~10x slower on the CPU.
    """
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(dim=1)
    maxc = torch.maximum(r, g)
    maxc = torch.maximum(maxc, b, out=maxc)  # (B, H, W)
    minc = torch.minimum(r, g)
    chroma = torch.sub(maxc, torch.minimum(minc, b, out=minc), out=minc)
    is_r = torch.sub(r, maxc).sign_().add_(1)  # 1 where red is the largest channel, else 0
    is_g = torch.sub(g, maxc).sign_().add_(1)
    sector = torch.sub(r, g).add_(chroma, alpha=4)  # 6 * hue * chroma when blue is largest
    sector.lerp_(torch.sub(b, r).add_(chroma, alpha=2), is_g).lerp_(torch.sub(g, b), is_r)
    h6 = sector.mul_(chroma.clamp(min=1e-30).reciprocal_())  # grey pixels: every difference is 0: hue 0
    h6.add_(6 * _per_sample(factors, x)[:, 0])  # rotate
    h6.sub_(torch.div(h6, 6.0).floor_().mul_(6.0))  # wrap into [0, 6)
    hues = _on(torch.tensor([0.0, 2.0, 4.0], dtype=x.dtype), x).view(1, 3, 1, 1)  # no blocking copy on CUDA
    ramp = (h6.unsqueeze(1) - hues).abs_().sub_(3).abs_()  # 3 - circular distance, (B, 3, H, W)
    ramp.neg_().add_(2).clamp_(0.0, 1.0)
    return torch.addcmul(maxc.unsqueeze(1), chroma.unsqueeze(1), ramp, value=-1.0, out=x)


def color_jitter_(x: Tensor, factors: Tensor, order: Tensor) -> Tensor:
    """ColorJitter with a per-sample order: in slot ``k``, sample ``b`` runs operation ``order[b, k]``.

    Brightness, contrast and saturation are all ``blend(x, reference, factor)`` with the references
    black, the grayscale mean and the grayscale image, so a slot runs all three as one blend with a
    per-sample reference (factor 1 where the slot holds hue), then rotates the hue of the samples
    whose slot holds it.

    Args:
        x: ``(B, C, H, W)``, changed in place.
        factors: ``(B, 4)`` brightness, contrast, saturation, hue; :data:`IDENTITY` leaves a sample alone.
        order: ``(B, 4)`` one permutation of BRIGHTNESS, CONTRAST, SATURATION, HUE per sample.
    """
    gray_buffer = x.new_empty(x.shape[0], 1, *x.shape[2:]) if x.shape[1] == 3 else None  # reused by the slots
    for slot in range(4):
        op = order[:, slot]
        blend = torch.where(op == HUE, torch.ones_like(factors[:, 0]), factors.gather(1, op.unsqueeze(1))[:, 0])
        changes = blend != 1
        if changes.any():  # parameters live on the CPU by default: no host sync
            contrast, saturation = (op == CONTRAST) & changes, (op == SATURATION) & changes
            reference = None
            if contrast.any() or saturation.any():
                gray = x if gray_buffer is None else rgb_to_grayscale(x, out=gray_buffer)
                reference = gray.mean(dim=(1, 2, 3), keepdim=True).mul_(_per_sample(contrast, x))
                if x.shape[1] == 3 and saturation.any():  # gray is the buffer here, not x
                    reference = gray.mul_(_per_sample(saturation, x)).add_(reference)
            _blend_(x, reference, blend)
        rotate = ((op == HUE) & (factors[:, HUE] != 0)).nonzero()[:, 0]
        if x.shape[1] == 3:
            _apply_rows_(x, rotate, lambda y: adjust_hue_(y, factors[rotate, HUE]))
    return x


def gaussian_kernels(kernel_size: int, sigmas: Tensor) -> Tensor:
    """``(B, kernel_size)`` normalised 1-D Gaussians, as torchvision's ``_get_gaussian_kernel1d``."""
    half = (kernel_size - 1) / 2
    offsets = torch.linspace(-half, half, kernel_size, device=sigmas.device, dtype=sigmas.dtype)
    return torch.softmax(-0.5 * (offsets / sigmas.unsqueeze(1)) ** 2, dim=1)


def gaussian_blur_(x: Tensor, kernel_size: int, sigmas: Tensor) -> Tensor:
    """Blur sample ``b`` with a Gaussian of std ``sigmas[b]``: torchvision's ``gaussian_blur`` (reflect padding).

    A separable depthwise convolution with a kernel per sample, written as ``kernel_size``
    multiply-adds of shifted views per direction: mkldnn's grouped convolution with ``groups = B * C``
    on the ``(1, B * C, H, W)`` view measured 3-5x slower on the CPU for 3-tap kernels.
    """
    b, c, h, w = x.shape
    kernels = _on(gaussian_kernels(kernel_size, sigmas.float()), x).to(x.dtype)  # (B, k)
    tap = [kernels[:, t].view(b, 1, 1, 1) for t in range(kernel_size)]
    p = kernel_size // 2
    padded = F.pad(x.reshape(b * c, 1, h, w), (p, p, p, p), mode="reflect").view(b, c, h + 2 * p, w + 2 * p)
    rows = padded[..., :w] * tap[0]  # (B, C, H + 2p, W)
    for t in range(1, kernel_size):
        rows.addcmul_(padded[..., t:t + w], tap[t])
    torch.mul(rows[..., :h, :], tap[0], out=x)
    for t in range(1, kernel_size):
        x.addcmul_(rows[..., t:t + h, :], tap[t])
    return x


def solarize_(x: Tensor) -> Tensor:
    """Invert the pixels >= 0.5 (BYOL, Grill et al. 2020, App. B; torchvision's ``solarize``).

    On [0, 1] with threshold 0.5 that is exactly ``min(x, 1 - x)``, two fast ops instead of a ``where``.
    """
    if SOLARIZE_THRESHOLD != 0.5:
        return x.copy_(torch.where(x >= SOLARIZE_THRESHOLD, 1.0 - x, x))
    return torch.minimum(x, 1.0 - x, out=x)


# --- Random parameters -------------------------------------------------------------------------

class ViewSpec(NamedTuple):
    """What distinguishes one view's pipeline from another's."""

    size: int  # output side
    scale: tuple[float, float]  # crop area fraction
    blur_prob: float
    solarize_prob: float


class ViewParams(NamedTuple):
    """One view's random parameters for ``B`` samples, on the generator's device."""

    boxes: Tensor  # (B, 4) float: top, left, height, width of the crop, in input pixels
    flips: Tensor  # (B,) bool
    factors: Tensor  # (B, 4) ColorJitter factors; IDENTITY where jitter is not applied
    order: Tensor  # (B, 4) long: ColorJitter's operation in each slot
    grayscale: Tensor  # (B,) bool
    sigmas: Tensor  # (B,) blur std; 0 where no blur is applied
    solarize: Tensor  # (B,) bool


def sample_boxes(u: Tensor, height: int, width: int, scale: tuple[float, float]) -> Tensor:
    """RandomResizedCrop's boxes ``(B, 4)`` (top, left, height, width) from uniforms ``u`` ``(B, 2 * 10 + 2)``.

    torchvision's rule for all samples at once: ``CROP_ATTEMPTS`` candidates with area fraction
    ~ U(scale) and log aspect ratio ~ U(log 3/4, log 4/3); the first that fits is placed uniformly,
    and if none fits, the central crop of the closest allowed aspect ratio.
    """
    n = CROP_ATTEMPTS
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[:, :n])  # (B, n)
    ratio = torch.exp(LOG_RATIO[0] + (LOG_RATIO[1] - LOG_RATIO[0]) * u[:, n:2 * n])
    w = torch.round(torch.sqrt(area * ratio))  # torch.round, like Python's round, rounds half to even
    h = torch.round(torch.sqrt(area / ratio))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.float().argmax(dim=1, keepdim=True)  # argmax returns the first maximum
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    top = torch.minimum(torch.floor(u[:, 2 * n] * (height - h + 1)), height - h)  # randint(0, height - h + 1)
    left = torch.minimum(torch.floor(u[:, 2 * n + 1] * (width - w + 1)), width - w)
    fh, fw = height, width  # the fallback: the whole image, cut to the closest allowed aspect ratio
    if width / height < 3 / 4:
        fh = round(width / (3 / 4))
    elif width / height > 4 / 3:
        fw = round(height * 4 / 3)
    fallback = torch.tensor([(height - fh) // 2, (width - fw) // 2, fh, fw], dtype=u.dtype, device=u.device)
    return torch.where(fits.any(dim=1, keepdim=True), torch.stack([top, left, h, w], dim=1), fallback)


class BatchedMultiViewTransform(nn.Module):
    """Maps a uint8 batch ``(B, C, H, W)`` to its normalised float32 views, on the batch's device.

    The list holds ``num_global_views`` tensors ``(B, C, S, S)`` (view ``i`` uses ``blur_prob[i]`` and
    ``solarize_prob[i]``), then ``num_local_views`` tensors ``(B, C, s, s)``: what
    :class:`~selfsup.transforms.views.MultiViewTransform` gives per image, in the same order of
    operations (crop + flip, colour jitter, grayscale, blur, solarize, normalise) and with the same
    per-sample distribution of every random parameter (per-sample jitter order included).

    Random parameters are drawn on ``generator``'s device, by default the CPU's global generator
    (``torch.manual_seed`` reproduces the views), and moved to the batch's device. CPU parameters
    keep a CUDA pipeline free of host syncs; a CUDA generator works but syncs a few times per view.
    Views that share a spec (SimCLR's two views, DINO's local crops) are computed as one batch.

    The outputs differ from views.py's per image by floating-point rounding only: views.py resizes
    uint8 pixels and rounds them back to uint8 (<= 0.5/255) before the float ops.

    Example:
        >>> t = BatchedMultiViewTransform(ViewConfig.dino(), info)   # info.image_size == 32
        >>> [tuple(v.shape) for v in t(images)]                      # [(B, 3, 32, 32)] * 2 + [(B, 3, 14, 14)] * 8
    """

    mean: Tensor
    std: Tensor

    def __init__(self, cfg: ViewConfig, info: DatasetInfo) -> None:
        super().__init__()
        cfg.validate()
        self.cfg, self.info = cfg, info
        self.global_size = cfg.image_size or info.image_size
        self.local_size = cfg.local_size or round(self.global_size * 96 / 224)
        self.specs = [ViewSpec(self.global_size, cfg.crop_scale, blur, solarize)
                      for blur, solarize in zip(cfg.blur_prob, cfg.solarize_prob)]
        local = ViewSpec(self.local_size, cfg.local_crop_scale, cfg.local_blur_prob, cfg.local_solarize_prob)
        self.specs += [local] * cfg.num_local_views
        self.color = info.num_channels == 3
        b, c, s, h = cfg.jitter
        # ColorJitter's ranges; saturation and hue mean nothing for one channel (views.py drops them).
        self.jitter_ranges = [(max(0.0, 1 - b), 1 + b), (max(0.0, 1 - c), 1 + c),
                              (max(0.0, 1 - s), 1 + s) if self.color else (1.0, 1.0),
                              (-h, h) if self.color else (0.0, 0.0)]
        self.jitter = cfg.jitter_prob > 0 and any(lo != hi for lo, hi in self.jitter_ranges)
        self.register_buffer("mean", torch.tensor(info.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(info.std).view(1, -1, 1, 1), persistent=False)

    def sample_params(self, spec: ViewSpec, batch: int, height: int, width: int,
                      generator: torch.Generator | None = None) -> ViewParams:
        """A view's random parameters for ``batch`` images of ``height x width``, from one ``torch.rand`` call.

        Each parameter is an independent function of its own uniform, with the probabilities and
        ranges of views.py's transforms (``RandomApply``'s ``rand < p``, ``uniform_(lo, hi)``).
        """
        device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand(batch, NUM_UNIFORMS, generator=generator, device=device)
        n = 2 * CROP_ATTEMPTS + 2  # the crop's columns
        cfg = self.cfg
        lo = torch.tensor([r[0] for r in self.jitter_ranges], device=device)
        hi = torch.tensor([r[1] for r in self.jitter_ranges], device=device)
        jittered = u[:, n + 1:n + 2] < cfg.jitter_prob
        sigma = cfg.blur_sigma[0] + (cfg.blur_sigma[1] - cfg.blur_sigma[0]) * u[:, n + 11]
        return ViewParams(
            boxes=sample_boxes(u[:, :n], height, width, spec.scale),
            flips=u[:, n] < cfg.flip_prob,
            factors=torch.where(jittered, lo + (hi - lo) * u[:, n + 2:n + 6], torch.tensor(IDENTITY, device=device)),
            order=u[:, n + 6:n + 10].argsort(dim=1),  # a uniformly random permutation per sample
            grayscale=(u[:, n + 10] < cfg.grayscale_prob) & self.color,
            sigmas=torch.where(u[:, n + 12] < spec.blur_prob, sigma, torch.zeros_like(sigma)),
            solarize=u[:, n + 13] < spec.solarize_prob)

    def apply_view(self, x: Tensor, params: ViewParams, spec: ViewSpec, gain: float = 1.0) -> Tensor:
        """Views of float images ``x`` ``(B, C, H, W)`` (``x * gain`` in [0, 1]) -> ``(N, C, size, size)``.

        ``params`` holds ``N`` samples, ``N`` a multiple of ``B``; sample ``n`` is a view of image ``n % B``.
        """
        x = resized_crop(x, params.boxes, params.flips, spec.size, gain)  # new: changed in place below
        return self.apply_photometric_(x, params, spec)

    def apply_photometric_(self, x: Tensor, params: ViewParams, spec: ViewSpec) -> Tensor:
        """The colour part of a view, in place on crops ``x`` ``(N, C, size, size)`` in [0, 1]: jitter,
        grayscale, blur, solarize, normalise (``params``' boxes and flips are not read)."""
        if self.jitter:
            color_jitter_(x, params.factors, params.order)  # parameters stay put: see _apply_rows_
        _apply_rows_(x, params.grayscale.nonzero()[:, 0], lambda y: rgb_to_grayscale(y).expand_as(y))
        blurred = params.sigmas.nonzero()[:, 0]
        kernel_size = blur_kernel_size(spec.size, self.cfg.blur_kernel_frac)
        _apply_rows_(x, blurred, lambda y: gaussian_blur_(y, kernel_size, params.sigmas[blurred]))
        _apply_rows_(x, params.solarize.nonzero()[:, 0], solarize_)
        std = self.std.to(x.device)  # (x - mean) / std in one pass, as x / std - mean / std
        return torch.addcmul(self.mean.to(x.device) / -std, x, 1 / std, out=x)

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        """uint8 ``(B, C, H, W)`` -> ``num_global_views`` x ``(B, C, S, S)``, ``num_local_views`` x ``(B, C, s, s)``."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != self.info.num_channels:
            raise ValueError(f"expected uint8 images (B, {self.info.num_channels}, H, W), "
                             f"got {images.dtype} {tuple(images.shape)}")
        b, _, h, w = images.shape
        x = images.float()  # 0..255; the crop's weights carry the 1/255
        views: list[Tensor] = []
        for spec, group in itertools.groupby(self.specs):
            n = len(list(group))  # consecutive views with one spec run as one batch of n * B
            params = self.sample_params(spec, n * b, h, w, generator)
            views += self.apply_view(x, params, spec, 1 / 255).chunk(n)
        return views

    def extra_repr(self) -> str:
        return f"{self.cfg}, global_size={self.global_size}, local_size={self.local_size}"
