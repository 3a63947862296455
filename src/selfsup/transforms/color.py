"""CIE Lab colour space and the quantised ab targets of colorization pretext tasks.

Exact sRGB <-> CIE XYZ <-> CIE L*a*b* conversions (IEC 61966-2-1 sRGB transfer curve, D65
white point, CIE 1976 L*a*b*) as batched torch ops, and the pieces of Zhang, Isola & Efros,
"Colorful Image Colorization" (ECCV 2016) that turn ab values into classification targets
and back:

* :func:`ab_gamut_bins`: the ab grid cells (side 10) that sRGB colours reach, found by
  converting a dense sample of RGB colours (the paper's 313 "in-gamut" bins, Sec. 2.1).
* :func:`soft_encode_ab`: each ab value as a distribution over its 5 nearest bins, weighted
  by a Gaussian of sigma 5 (Sec. 2.1, "soft-encoding scheme").
* :func:`annealed_mean`: the point estimate of a predicted distribution, the mean of the
  distribution re-normalised at temperature T (Eq. 5; T = 0.38 in the paper).
* :func:`quantize_lightness` / :func:`lightness_bin_centers`: L in equal bins, for the
  ab -> L half of split-brain autoencoders (Zhang, Isola & Efros, CVPR 2017, Sec. 3).

Shapes: images are ``(B, 3, H, W)`` RGB in [0, 1]; Lab images ``(B, 3, H, W)`` with L in
[0, 100] and a, b roughly in [-110, 110].
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

#: linear sRGB -> XYZ for the D65 white point (IEC 61966-2-1, Annex F), rows X, Y, Z.
RGB_TO_XYZ = (
    (0.4124564, 0.3575761, 0.1804375),
    (0.2126729, 0.7151522, 0.0721750),
    (0.0193339, 0.1191920, 0.9503041),
)
#: XYZ of the D65 reference white, Y normalised to 1 (CIE 15: 2004).
D65_WHITE = (0.95047, 1.0, 1.08883)
_DELTA = 6.0 / 29.0  # CIE 1976: the cube-root segment of f(t) starts at t = delta^3

#: Zhang et al. 2016, Sec. 2.1: grid size 10 in ab, 5 nearest bins, Gaussian sigma 5, T = 0.38.
AB_GRID_SIZE = 10.0
SOFT_NEIGHBORS = 5
SOFT_SIGMA = 5.0
ANNEALED_TEMPERATURE = 0.38

L_SCALE, AB_SCALE = 50.0, 110.0  # network inputs: (L - 50) / 50 and ab / 110, both about [-1, 1]


# --- sRGB <-> Lab -------------------------------------------------------------------------------

def _srgb_to_linear(c: Tensor) -> Tensor:
    """The inverse sRGB transfer curve ("gamma expansion")."""
    return torch.where(c <= 0.04045, c / 12.92, ((c.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(c: Tensor) -> Tensor:
    """The sRGB transfer curve ("gamma compression")."""
    return torch.where(c <= 0.0031308, 12.92 * c, 1.055 * c.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)


def _lab_f(t: Tensor) -> Tensor:
    """CIE 1976 f(t): the cube root, with a linear segment near 0 so the slope stays finite."""
    return torch.where(t > _DELTA**3, t.clamp(min=_DELTA**3) ** (1 / 3), t / (3 * _DELTA**2) + 4 / 29)


def _lab_f_inverse(u: Tensor) -> Tensor:
    return torch.where(u > _DELTA, u**3, 3 * _DELTA**2 * (u - 4 / 29))


def _mix(rows: tuple, channels: Tensor) -> Tensor:
    """``rows`` (3 x 3) times the colour vector of every pixel of ``channels`` ``(B, 3, H, W)``.

    Written as multiply-adds rather than a matmul so that autocast (bf16/fp16 training) leaves it
    in the input's precision: L and ab must be exact to about 0.01 for the bins and the round trip.
    """
    c0, c1, c2 = channels.unbind(dim=1)
    return torch.stack([r[0] * c0 + r[1] * c1 + r[2] * c2 for r in rows], dim=1)


def _inverse(rows: tuple) -> tuple:
    return tuple(map(tuple, torch.linalg.inv(torch.tensor(rows, dtype=torch.float64)).tolist()))


XYZ_TO_RGB = _inverse(RGB_TO_XYZ)


def _white(like: Tensor) -> Tensor:
    return torch.tensor(D65_WHITE, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """sRGB in [0, 1] ``(B, 3, H, W)`` -> CIE Lab ``(B, 3, H, W)`` (D65): L in [0, 100].

    Example: pure red (1, 0, 0) -> (53.24, 80.09, 67.20); white -> (100, 0, 0).
    """
    xyz = _mix(RGB_TO_XYZ, _srgb_to_linear(rgb)) / _white(rgb)
    fx, fy, fz = _lab_f(xyz).unbind(dim=1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


def lab_to_rgb(lab: Tensor, clamp: bool = True) -> Tensor:
    """CIE Lab ``(B, 3, H, W)`` -> sRGB ``(B, 3, H, W)``, clamped to [0, 1] unless ``clamp=False``
    (Lab colours outside the sRGB gamut then give values outside [0, 1])."""
    lightness, a, b = lab.unbind(dim=1)
    fy = (lightness + 16) / 116
    xyz = _lab_f_inverse(torch.stack([fy + a / 500, fy, fy - b / 200], dim=1)) * _white(lab)
    rgb = _linear_to_srgb(_mix(XYZ_TO_RGB, xyz))
    return rgb.clamp(0.0, 1.0) if clamp else rgb


def rgb_to_lightness(rgb: Tensor) -> Tensor:
    """sRGB in [0, 1] ``(B, 3, H, W)`` -> L ``(B, 1, H, W)`` in [0, 100] (only Y is needed)."""
    luminance = _mix(RGB_TO_XYZ[1:2], _srgb_to_linear(rgb))
    return 116 * _lab_f(luminance) - 16


def normalized_lightness(rgb: Tensor) -> Tensor:
    """The network input of every colorization model: ``(L - 50) / 50``, ``(B, 1, H, W)`` in [-1, 1]."""
    return (rgb_to_lightness(rgb) - L_SCALE) / L_SCALE


def unnormalize(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Dataset-normalised images ``(B, C, H, W)`` -> pixel values in [0, 1] (``mean``/``std``: ``(C,)``)."""
    return (images * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)).clamp(0.0, 1.0)


# --- Quantised ab space -------------------------------------------------------------------------

@lru_cache(maxsize=8)
def _gamut_bins(grid_size: float, steps: int) -> Tensor:
    levels = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    rgb = torch.cartesian_prod(levels, levels, levels).T.reshape(1, 3, -1, 1)  # every colour of the lattice
    ab = rgb_to_lab(rgb)[0, 1:, :, 0].T  # (steps^3, 2)
    cells = torch.unique(torch.round(ab / grid_size), dim=0)  # sorted rows: a, then b
    return (cells * grid_size).float()


def ab_gamut_bins(grid_size: float = AB_GRID_SIZE, steps: int = 64) -> Tensor:
    """Centres ``(Q, 2)`` of the ab grid cells (side ``grid_size``) that some sRGB colour falls in.

    Computed by converting every colour of a ``steps``³ RGB lattice to Lab; deterministic, sorted
    by (a, b). Grid 10 gives Q = 261 (cells whose square holds an sRGB colour); the paper's
    313 (Sec. 2.1) counts cells of its own, wider gamut estimate.
    """
    return _gamut_bins(float(grid_size), int(steps)).clone()


def nearest_bins(ab: Tensor, bins: Tensor, k: int = 1) -> tuple[Tensor, Tensor]:
    """Squared distances and indices ``(B, k, H, W)`` of the ``k`` bins nearest to each ab value.

    Args:
        ab: ``(B, 2, H, W)``; bins: ``(Q, 2)``.
    """
    flat = ab.permute(0, 2, 3, 1).reshape(-1, 2)  # (BHW, 2)
    dist = torch.cdist(flat, bins.to(flat.dtype)).square()  # (BHW, Q)
    values, index = dist.topk(k, dim=1, largest=False)
    b, _, h, w = ab.shape
    return (values.view(b, h, w, k).permute(0, 3, 1, 2), index.view(b, h, w, k).permute(0, 3, 1, 2))


def soft_encode_ab(ab: Tensor, bins: Tensor, neighbors: int = SOFT_NEIGHBORS, sigma: float = SOFT_SIGMA) -> Tensor:
    """Soft-encoded targets ``Z`` ``(B, Q, H, W)`` of ab values ``(B, 2, H, W)`` (Zhang et al. 2016, Sec. 2.1).

    The ``neighbors`` nearest bins of each pixel get weights ``exp(-d² / 2σ²)`` normalised to sum
    to 1; all other bins get 0.
    """
    dist, index = nearest_bins(ab, bins, neighbors)
    weights = torch.softmax(-dist / (2 * sigma**2), dim=1)  # = normalised Gaussian of the distances
    target = ab.new_zeros(ab.shape[0], len(bins), *ab.shape[2:])
    return target.scatter_(1, index, weights)


def annealed_mean(logits: Tensor, centers: Tensor, temperature: float = ANNEALED_TEMPERATURE) -> Tensor:
    """The point estimate ``H(Z) = E[f_T(Z)]`` of Zhang et al. 2016, Eq. 5.

    ``f_T(z) ∝ exp(log z / T)`` re-sharpens the predicted distribution ``z = softmax(logits)``: for
    probabilities from logits that is ``softmax(logits / T)``. T = 1 gives the mean, T -> 0 the
    mode, T = 0.38 the paper's vivid but spatially consistent compromise.

    Args:
        logits: ``(B, Q, H, W)`` unnormalised scores over ``Q`` bins.
        centers: ``(Q, C)`` the bins' values (ab: C = 2; lightness: C = 1).
    Returns:
        ``(B, C, H, W)``.
    """
    probs = torch.softmax(logits.float() / temperature, dim=1)
    return torch.einsum("bqhw,qc->bchw", probs, centers.to(probs))


# --- Quantised lightness (split-brain ab -> L) --------------------------------------------------

def lightness_bin_centers(num_bins: int) -> Tensor:
    """Centres ``(num_bins, 1)`` of ``num_bins`` equal bins covering L in [0, 100]."""
    width = 100.0 / num_bins
    return (torch.arange(num_bins, dtype=torch.float32) * width + width / 2).unsqueeze(1)


def quantize_lightness(lightness: Tensor, num_bins: int) -> Tensor:
    """Bin index ``(B, H, W)`` (int64) of L values ``(B, 1, H, W)`` in [0, 100]."""
    index = torch.floor(lightness[:, 0] * (num_bins / 100.0)).long()
    return index.clamp_(0, num_bins - 1)


def downsample(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Area-average ``(B, C, H, W)`` to ``size``: the coarse targets of an output-stride prediction."""
    return x if tuple(x.shape[-2:]) == tuple(size) else F.adaptive_avg_pool2d(x, size)


__all__ = [
    "ANNEALED_TEMPERATURE", "AB_GRID_SIZE", "AB_SCALE", "L_SCALE", "SOFT_NEIGHBORS", "SOFT_SIGMA",
    "ab_gamut_bins", "annealed_mean", "downsample", "lab_to_rgb", "lightness_bin_centers", "nearest_bins",
    "normalized_lightness", "quantize_lightness", "rgb_to_lab", "rgb_to_lightness", "soft_encode_ab",
    "unnormalize",
]
