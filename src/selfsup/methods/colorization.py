"""Colorful Image Colorization.

Zhang, Isola, Efros (ECCV 2016), https://arxiv.org/abs/1603.08511. The network sees only the
lightness L of a CIE Lab image and predicts, per pixel, a distribution over ``Q`` quantised ab
colours (Sec. 2.1: grid size 10, the bins reachable by sRGB colours). The target is the soft
encoding of the true ab value (5 nearest bins, Gaussian σ = 5); the loss is the cross-entropy with
class rebalancing (Eq. 2-4, λ = 0.5, σ = 5 smoothing) so rare saturated colours are not washed
out. Colours are decoded with the annealed mean of the distribution (Eq. 5, T = 0.38). The
representation kept is the backbone's, run on L (Sec. 3.2 uses the colorization network itself).

Implementation choices (documented because the paper's network differs from a ResNet):

* Prediction grid: the paper predicts at 1/4 of the input resolution (56x56 for 224x224 inputs)
  from dilated deep layers. Backbones here are pooled ResNets/ViTs, so
  :func:`~selfsup.heads.colorization.dense_features` reads their last stage's feature map
  (``feature_stages``) and :class:`~selfsup.heads.colorization.DenseFusionHead` upsamples it to the
  ``output_stride`` grid; targets are the area-averaged ab values on that grid.
* Class rebalancing: the bin distribution accumulates over all pixels seen in training
  (:class:`~selfsup.losses.colorization.ClassRebalancing`, updated in ``on_step_end``) instead of
  a separate pass over ImageNet; weights are 1 until the first update.
* Inputs: views are un-normalised with the dataset's mean/std back to RGB in [0, 1], converted to
  Lab; the network input is ``(L - 50) / 50``. :meth:`Colorization.encoder` does the same to
  normalised dataset images, so kNN / linear evaluation and export see the L-only network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

import torch
from torch import Tensor, nn

from selfsup.errors import ConfigError
from selfsup.heads.colorization import DenseFusionHead, dense_features, feature_channels, output_grid
from selfsup.losses.colorization import ClassRebalancing, soft_cross_entropy
from selfsup.methods.base import DataSpec, Method, MethodConfig, MethodOutput, Progress
from selfsup.methods.registry import METHODS
from selfsup.transforms import ViewConfig
from selfsup.transforms.color import (
    L_SCALE,
    ab_gamut_bins,
    annealed_mean,
    downsample,
    lab_to_rgb,
    normalized_lightness,
    rgb_to_lab,
    soft_encode_ab,
    unnormalize,
)


def rgb_statistics(method: str, data: Optional[DataSpec], frames: int = 1) -> Tuple[Tensor, Tensor]:
    """The per-channel mean and std ``(3,)`` that normalised the RGB views of one frame.

    Raises the one-line ConfigError of the colour methods for data that is not ``frames`` stacked
    RGB images. Without ``data`` (plain training loops, unit tests) views are taken as RGB in [0, 1].
    """
    if data is None:
        return torch.zeros(3), torch.ones(3)
    info = data.info
    if info.num_channels != 3 * frames:
        if frames == 1:
            raise ConfigError(f"{method} needs colour images; {info.name} has {info.num_channels} channel"
                              f"{'s' if info.num_channels != 1 else ''}; use cifar10, stl10 or folder:PATH with "
                              f"colour images")
        raise ConfigError(f"{method} needs pairs of colour video frames ({3 * frames} channels); {info.name} has "
                          f"{info.num_channels}; use frames:PATH with one sub-folder of colour frames per video")
    return torch.tensor(info.mean[:3], dtype=torch.float32), torch.tensor(info.std[:3], dtype=torch.float32)


def stages_tuple(stages: Any) -> Tuple[int, ...]:
    """YAML gives lists; configs keep tuples."""
    return tuple(int(s) for s in stages) if isinstance(stages, (list, tuple)) else (int(stages),)


class LightnessEncoder(nn.Module):
    """Normalised dataset RGB images ``(B, 3, H, W)`` -> L channel -> ``backbone`` -> ``(B, D)``.

    The evaluation encoder of the colour methods whose backbone sees L only.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, backbone: nn.Module, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = backbone.feature_dim
        self.in_channels = 3  # RGB, whatever the training data stacked (video: 2 frames)
        # Not persistent: the state dict of the encoder is the backbone's alone.
        self.register_buffer("mean", mean.clone(), persistent=False)
        self.register_buffer("std", std.clone(), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        if images.shape[1] != 3:
            raise ValueError(f"expected RGB images (B, 3, H, W), got {tuple(images.shape)}")
        return self.backbone(normalized_lightness(unnormalize(images, self.mean, self.std)))


@dataclass
class ColorizationConfig(MethodConfig):
    grid_size: float = 10.0
    """Side of the ab quantisation cells (Sec. 2.1: 10, giving the paper's 313 in-gamut bins)."""
    soft_neighbors: int = 5
    """Soft encoding: number of nearest bins that share each pixel's target mass (Sec. 2.1)."""
    soft_sigma: float = 5.0
    """Soft encoding: σ of the Gaussian over the distance to those bins (Sec. 2.1)."""
    rebalance: bool = True
    """Weight each pixel by the rarity of its colour (Eq. 2-4)."""
    rebalance_mix: float = 0.5
    """λ: weight of the uniform distribution mixed into the empirical one (Eq. 4)."""
    rebalance_sigma: float = 5.0
    """σ of the Gaussian smoothing of the empirical ab distribution (Eq. 4)."""
    temperature: float = 0.38
    """T of the annealed mean used to decode colours (Eq. 5); only affects :meth:`colorize`."""
    output_stride: int = 4
    """Prediction grid: 1/4 of the input side, as the paper's 56x56 outputs for 224x224 inputs."""
    head_hidden_dim: int = 256
    """Width of the per-pixel head (the paper's conv8 is 256 wide)."""
    feature_stages: Tuple[int, ...] = (4,)
    """ResNet stages the head reads (4 = the last, so colour must come from the deepest features)."""

    def __post_init__(self) -> None:
        self.feature_stages = stages_tuple(self.feature_stages)
        check_colour_config(self)


def check_colour_config(cfg: Any) -> None:
    """One-line ConfigErrors for the hyper-parameters the colour methods share."""
    if cfg.grid_size <= 0 or cfg.soft_sigma <= 0 or cfg.soft_neighbors < 1:
        raise ConfigError(f"grid_size={cfg.grid_size}, soft_sigma={cfg.soft_sigma} must be > 0 and "
                          f"soft_neighbors={cfg.soft_neighbors} >= 1")
    if not 0.0 < cfg.rebalance_mix <= 1.0:
        raise ConfigError(f"rebalance_mix={cfg.rebalance_mix} must be in (0, 1] (the paper's λ = 0.5)")
    if cfg.output_stride < 1:
        raise ConfigError(f"output_stride={cfg.output_stride} must be a positive number of pixels")
    if getattr(cfg, "temperature", 1.0) <= 0:
        raise ConfigError(f"temperature={cfg.temperature} must be > 0 (the paper's annealed mean uses 0.38)")


@METHODS.register("colorization")
class Colorization(Method):
    """L -> per-pixel distribution over quantised ab colours, rebalanced soft cross-entropy."""

    Config = ColorizationConfig
    config: ColorizationConfig
    num_views = 1

    ab_bins: Tensor
    mean: Tensor
    std: Tensor

    def __init__(
        self, backbone: nn.Module, config: Optional[ColorizationConfig] = None, data: Optional[DataSpec] = None
    ) -> None:
        super().__init__(backbone, config, data)
        cfg = self.config
        mean, std = rgb_statistics("colorization", data)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        bins = ab_gamut_bins(cfg.grid_size)
        if cfg.soft_neighbors > len(bins):
            raise ConfigError(f"soft_neighbors={cfg.soft_neighbors} exceeds the {len(bins)} ab bins")
        self.register_buffer("ab_bins", bins, persistent=False)  # deterministic: recomputed, not stored
        self.head = DenseFusionHead(feature_channels(backbone, cfg.feature_stages), cfg.head_hidden_dim, len(bins))
        self.rebalancing = ClassRebalancing(bins, cfg.rebalance_mix, cfg.rebalance_sigma)

    @classmethod
    def backbone_in_channels(cls, data_channels: int, config: MethodConfig) -> int:
        return 1  # the L channel

    @classmethod
    def default_views(cls, **overrides: Any) -> ViewConfig:
        # Crops and flips only: colour jitter or grayscale would corrupt the targets.
        return ViewConfig.crop_flip(**overrides)

    def encoder(self) -> nn.Module:
        return LightnessEncoder(self.backbone, self.mean, self.std)

    def predict_logits(self, lightness: Tensor) -> Tuple[Tensor, Tensor]:
        """Pooled features ``(B, D)`` and ab-bin logits ``(B, Q, H/s, W/s)`` of network inputs
        ``(L - 50) / 50`` ``(B, 1, H, W)`` (``s`` = output_stride)."""
        pooled, maps = dense_features(self.backbone, lightness, self.config.feature_stages)
        grid = output_grid(lightness.shape[-2], lightness.shape[-1], self.config.output_stride)
        return pooled, self.head(maps, grid)

    def forward(self, views: List[Tensor], indices: Optional[Tensor] = None) -> MethodOutput:
        self.check_views(views)
        cfg = self.config
        with torch.no_grad():
            lab = rgb_to_lab(unnormalize(views[0].float(), self.mean, self.std))
            lightness = (lab[:, :1] - L_SCALE) / L_SCALE
        pooled, logits = self.predict_logits(lightness)  # (B, D), (B, Q, h, w)
        with torch.no_grad():
            ab = downsample(lab[:, 1:], tuple(logits.shape[-2:]))
            target = soft_encode_ab(ab, self.ab_bins, cfg.soft_neighbors, cfg.soft_sigma)  # (B, Q, h, w)
            nearest = target.argmax(dim=1)  # q*, the bin whose weight v(Z) the pixel gets (Eq. 3)
            weights = self.rebalancing.weights()[nearest] if cfg.rebalance else None
        loss = soft_cross_entropy(logits, target, weights)
        with torch.no_grad():
            histogram = torch.bincount(nearest.flatten(), minlength=len(self.ab_bins))
            logs = {"ab_top1": (logits.argmax(dim=1) == nearest).float().mean()}
        return MethodOutput(loss=loss, logs=logs, features=pooled.detach(), extras={"ab_histogram": histogram})

    @torch.no_grad()
    def on_step_end(self, output: MethodOutput, progress: Progress) -> None:
        if self.config.rebalance:
            self.rebalancing.update_(output.extras["ab_histogram"])

    @torch.no_grad()
    def colorize(self, rgb: Tensor, temperature: Optional[float] = None,
                 size: Optional[Tuple[int, int]] = None) -> Tensor:
        """Colour images ``(B, 3, H, W)`` in [0, 1] (or grey ``(B, 1, H, W)``) from their lightness alone:
        see :func:`colorize_images`."""
        return colorize_images(lambda x: self.predict_logits(x)[1], self.ab_bins, rgb,
                               self.config.temperature if temperature is None else temperature, size)


def colorize_images(predict_logits: Callable[[Tensor], Tensor], ab_bins: Tensor, rgb: Tensor,
                    temperature: float = 0.38, size: Optional[Tuple[int, int]] = None) -> Tensor:
    """Colourise ``rgb`` ``(B, 3 or 1, H, W)`` in [0, 1] with an L -> ab-bins network.

    ``predict_logits`` maps ``(L - 50) / 50`` ``(B, 1, h, w)`` (the input's L, resized to ``size``
    if given) to ab-bin logits ``(B, Q, h', w')``; their annealed mean (Zhang et al. 2016, Eq. 5)
    is upsampled bilinearly to ``H x W`` and joined with the input's own full-resolution L.
    Returns RGB ``(B, 3, H, W)`` in [0, 1].
    """
    rgb = rgb.float()
    rgb = rgb.expand(-1, 3, -1, -1) if rgb.shape[1] == 1 else rgb
    lightness = rgb_to_lab(rgb)[:, :1]
    net_input = (lightness - L_SCALE) / L_SCALE
    if size is not None and tuple(size) != tuple(net_input.shape[-2:]):
        net_input = nn.functional.interpolate(net_input, size=size, mode="bilinear", antialias=True,
                                              align_corners=False)
    ab = annealed_mean(predict_logits(net_input), ab_bins, temperature)
    ab = nn.functional.interpolate(ab, size=rgb.shape[-2:], mode="bilinear", align_corners=False)
    return lab_to_rgb(torch.cat([lightness, ab], dim=1))

__all__ = ["Colorization", "ColorizationConfig", "LightnessEncoder", "colorize_images", "rgb_statistics"]
