"""Split-Brain Autoencoders: Unsupervised Learning by Cross-Channel Prediction.

Zhang, Isola, Efros (CVPR 2017), https://arxiv.org/abs/1611.09842. The network is split into two
disjoint halves that see complementary channels of a Lab image and predict each other's: ``F1``
maps L to a distribution over quantised ab colours (as in colorization, Zhang et al. 2016), ``F2``
maps ab to a distribution over quantised L (50 bins). Both are classification problems, the
loss is the sum of the two cross-entropies (Sec. 3.2, "classification loss" for both directions),
and the representation is the concatenation of the two halves' features (Sec. 3.2, Fig. 2).

Implementation choices:

* The halves: the method receives one backbone (the L half, built for 1 input channel). The ab
  half is a deep copy of it with its first convolution replaced by a freshly initialised one for
  2 input channels (:func:`with_input_channels`); it starts from the L half's initial weights
  elsewhere but sees different inputs and targets, so the halves diverge from the first step.
  The paper splits each layer of one network in two, i.e. each half is half as wide: choose the
  backbone's ``width`` accordingly (the recipes use ``width: 0.5``, so the concatenated feature
  has the full network's size).
* Targets: ab as in colorization (grid 10 bins, soft encoding with 5 neighbours, σ = 5); L as
  hard labels of 50 equal bins over [0, 100]. Class rebalancing of the ab targets is available
  (``rebalance``) but off by default.
* Per-pixel prediction from pooled backbones: the same dense head and output grid (1/4 of the
  input side) as :mod:`selfsup.methods.colorization`.
* Inputs: ``(L - 50) / 50`` for ``F1`` and ``ab / 110`` for ``F2``, both about [-1, 1].
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.errors import ConfigError
from selfsup.heads.colorization import DenseFusionHead, dense_features, feature_channels, output_grid
from selfsup.losses.colorization import ClassRebalancing, soft_cross_entropy
from selfsup.methods.base import DataSpec, Method, MethodConfig, MethodOutput, Progress
from selfsup.methods.colorization import check_colour_config, colorize_images, rgb_statistics, stages_tuple
from selfsup.methods.registry import METHODS
from selfsup.transforms import ViewConfig
from selfsup.transforms.color import (
    AB_SCALE,
    L_SCALE,
    ab_gamut_bins,
    downsample,
    quantize_lightness,
    rgb_to_lab,
    soft_encode_ab,
    unnormalize,
)


def with_input_channels(backbone: nn.Module, channels: int) -> nn.Module:
    """A deep copy of ``backbone`` whose first convolution takes ``channels`` input channels.

    The first ``nn.Conv2d`` in module order is the input layer of every registered backbone
    (ResNet ``conv1``, ViT ``patch_embed.proj``); it is replaced by a new convolution of the same
    shape otherwise, initialised as torchvision initialises ResNet convolutions.
    """
    twin = copy.deepcopy(backbone)
    for name, module in twin.named_modules():
        if isinstance(module, nn.Conv2d):
            new = nn.Conv2d(channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                            module.dilation, module.groups, module.bias is not None)
            nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
            if new.bias is not None:
                nn.init.zeros_(new.bias)
            parent_name, _, attr = name.rpartition(".")
            setattr(twin.get_submodule(parent_name) if parent_name else twin, attr, new)
            return twin
    raise ConfigError(f"split-brain needs a convolutional input layer to split the channels; "
                      f"{type(backbone).__name__} has none")


class SplitBrainEncoder(nn.Module):
    """Normalised dataset RGB ``(B, 3, H, W)`` -> Lab -> ``[F1(L), F2(ab)]`` ``(B, D1 + D2)``."""

    mean: Tensor
    std: Tensor

    def __init__(self, lightness_net: nn.Module, ab_net: nn.Module, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.lightness_net = lightness_net
        self.ab_net = ab_net
        self.feature_dim = lightness_net.feature_dim + ab_net.feature_dim
        self.in_channels = 3  # RGB images
        self.register_buffer("mean", mean.clone(), persistent=False)
        self.register_buffer("std", std.clone(), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        if images.shape[1] != 3:
            raise ValueError(f"expected RGB images (B, 3, H, W), got {tuple(images.shape)}")
        lightness, ab = split_lab(rgb_to_lab(unnormalize(images, self.mean, self.std)))
        return torch.cat([self.lightness_net(lightness), self.ab_net(ab)], dim=1)


def split_lab(lab: Tensor) -> Tuple[Tensor, Tensor]:
    """Lab ``(B, 3, H, W)`` -> network inputs ``(L - 50) / 50`` ``(B, 1, H, W)`` and ``ab / 110`` ``(B, 2, H, W)``."""
    return (lab[:, :1] - L_SCALE) / L_SCALE, lab[:, 1:] / AB_SCALE


@dataclass
class SplitBrainConfig(MethodConfig):
    lightness_bins: int = 50
    """Number of equal L bins the ab -> L half classifies into (the paper uses 50)."""
    grid_size: float = 10.0
    """Side of the ab quantisation cells of the L -> ab half (as in colorization, Sec. 2.1 of Zhang et al. 2016)."""
    soft_neighbors: int = 5
    """Soft encoding of ab targets: nearest bins sharing the mass."""
    soft_sigma: float = 5.0
    """Soft encoding of ab targets: Gaussian σ."""
    rebalance: bool = False
    """Class-rebalance the ab targets as colorization does (off: plain cross-entropy)."""
    rebalance_mix: float = 0.5
    """λ of the rebalancing weights, when ``rebalance`` is on."""
    rebalance_sigma: float = 5.0
    """Smoothing σ of the rebalancing distribution, when ``rebalance`` is on."""
    temperature: float = 0.38
    """Annealed-mean T for :meth:`SplitBrain.colorize` (decoding only)."""
    output_stride: int = 4
    """Prediction grid: 1/4 of the input side."""
    head_hidden_dim: int = 256
    """Width of each half's per-pixel head."""
    feature_stages: Tuple[int, ...] = (4,)
    """ResNet stages each head reads."""

    def __post_init__(self) -> None:
        self.feature_stages = stages_tuple(self.feature_stages)
        check_colour_config(self)
        if self.lightness_bins < 2:
            raise ConfigError(f"lightness_bins={self.lightness_bins} must be >= 2 (the paper uses 50)")


@METHODS.register("split-brain")
class SplitBrain(Method):
    """Two half networks: L -> ab bins and ab -> L bins; features concatenated."""

    Config = SplitBrainConfig
    config: SplitBrainConfig
    num_views = 1

    ab_bins: Tensor
    mean: Tensor
    std: Tensor

    def __init__(
        self, backbone: nn.Module, config: Optional[SplitBrainConfig] = None, data: Optional[DataSpec] = None
    ) -> None:
        super().__init__(backbone, config, data)
        cfg = self.config
        mean, std = rgb_statistics("split-brain", data)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        bins = ab_gamut_bins(cfg.grid_size)
        self.register_buffer("ab_bins", bins, persistent=False)
        # F1 = self.backbone (L, 1 channel); F2 = its twin for the 2 ab channels.
        self.ab_backbone = with_input_channels(backbone, 2)
        channels = feature_channels(backbone, cfg.feature_stages)
        self.ab_head = DenseFusionHead(channels, cfg.head_hidden_dim, len(bins))  # F1: L -> ab
        self.lightness_head = DenseFusionHead(channels, cfg.head_hidden_dim, cfg.lightness_bins)  # F2: ab -> L
        self.rebalancing = ClassRebalancing(bins, cfg.rebalance_mix, cfg.rebalance_sigma) if cfg.rebalance else None

    @classmethod
    def backbone_in_channels(cls, data_channels: int, config: MethodConfig) -> int:
        return 1  # the backbone given is the L half; the ab half is built from it

    @classmethod
    def default_views(cls, **overrides: Any) -> ViewConfig:
        return ViewConfig.crop_flip(**overrides)

    def encoder(self) -> nn.Module:
        return SplitBrainEncoder(self.backbone, self.ab_backbone, self.mean, self.std)

    def forward(self, views: List[Tensor], indices: Optional[Tensor] = None) -> MethodOutput:
        self.check_views(views)
        cfg = self.config
        with torch.no_grad():
            lab = rgb_to_lab(unnormalize(views[0].float(), self.mean, self.std))
            lightness_in, ab_in = split_lab(lab)
        grid = output_grid(lab.shape[-2], lab.shape[-1], cfg.output_stride)
        pooled_l, maps_l = dense_features(self.backbone, lightness_in, cfg.feature_stages)
        pooled_ab, maps_ab = dense_features(self.ab_backbone, ab_in, cfg.feature_stages)
        ab_logits = self.ab_head(maps_l, grid)  # (B, Q, h, w)
        lightness_logits = self.lightness_head(maps_ab, grid)  # (B, 50, h, w)
        with torch.no_grad():
            coarse = downsample(lab, grid)
            ab_target = soft_encode_ab(coarse[:, 1:], self.ab_bins, cfg.soft_neighbors, cfg.soft_sigma)
            nearest = ab_target.argmax(dim=1)
            weights = self.rebalancing.weights()[nearest] if self.rebalancing is not None else None
            lightness_target = quantize_lightness(coarse[:, :1], cfg.lightness_bins)  # (B, h, w)
        ab_loss = soft_cross_entropy(ab_logits, ab_target, weights)
        lightness_loss = F.cross_entropy(lightness_logits.float(), lightness_target)
        with torch.no_grad():
            logs = {
                "ab_loss": ab_loss.detach(), "lightness_loss": lightness_loss.detach(),
                "ab_top1": (ab_logits.argmax(dim=1) == nearest).float().mean(),
                "lightness_top1": (lightness_logits.argmax(dim=1) == lightness_target).float().mean(),
            }
            histogram = torch.bincount(nearest.flatten(), minlength=len(self.ab_bins))
        features = torch.cat([pooled_l, pooled_ab], dim=1).detach()
        return MethodOutput(loss=ab_loss + lightness_loss, logs=logs, features=features,
                            extras={"ab_histogram": histogram})

    @torch.no_grad()
    def on_step_end(self, output: MethodOutput, progress: Progress) -> None:
        if self.rebalancing is not None:
            self.rebalancing.update_(output.extras["ab_histogram"])

    def predict_ab_logits(self, lightness: Tensor) -> Tensor:
        """F1's ab-bin logits ``(B, Q, H/s, W/s)`` for inputs ``(L - 50) / 50`` ``(B, 1, H, W)``."""
        _, maps = dense_features(self.backbone, lightness, self.config.feature_stages)
        return self.ab_head(maps, output_grid(lightness.shape[-2], lightness.shape[-1], self.config.output_stride))

    @torch.no_grad()
    def colorize(self, rgb: Tensor, temperature: Optional[float] = None,
                 size: Optional[Tuple[int, int]] = None) -> Tensor:
        """Colour images ``(B, 3 or 1, H, W)`` in [0, 1] from their lightness with the L -> ab half
        (see :func:`~selfsup.methods.colorization.colorize_images`)."""
        return colorize_images(self.predict_ab_logits, self.ab_bins, rgb,
                               self.config.temperature if temperature is None else temperature, size)

__all__ = ["SplitBrain", "SplitBrainConfig", "SplitBrainEncoder", "with_input_channels"]
