"""ResNet-18/34/50 backbones (He et al. 2016) built from torchvision's ``ResNet``.

Three changes to torchvision's network, none of which re-implements a block:

* ``small_stem``: a 3×3 stride-1 convolution and no max-pool, as in SimCLR's CIFAR-10
  experiments (Chen et al. 2020, appendix), so 32×32 (or 28×28) images are not downsampled 4×
  before the first stage. ``stem_stride=2`` makes that convolution stride 2: half the
  resolution, about 3× the throughput on 28×28 CPU training (``benchmarks/backbones.py``).
* ``width``: multiplies every stage's channel count, stem included (0.25 → 16/32/64/128 for
  ResNet-18), by scaling the ``planes`` torchvision passes to ``_make_layer``.
* ``in_channels``: 1 for grayscale data; the classifier ``fc`` is an ``Identity``.
"""

from __future__ import annotations

from typing import List, Type, Union

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from selfsup.backbones.base import BACKBONES, Backbone
from selfsup.errors import ConfigError


class ResNetBackbone(ResNet, Backbone):
    """torchvision's ResNet returning the global-average-pooled feature ``(B, feature_dim)``.

    Args:
        block: ``BasicBlock`` (ResNet-18/34) or ``Bottleneck`` (ResNet-50).
        layers: number of blocks per stage, e.g. ``[2, 2, 2, 2]``.
        in_channels: image channels ``C``.
        small_stem: 3×3 stem without max-pool (for ~32×32 images) instead of 7×7 stride 2 + max-pool.
        stem_stride: stride of the small stem, 1 (SimCLR's CIFAR stem) or 2.
        width: channel multiplier of every stage and the stem.
        zero_init_residual: zero the last BN γ of each residual branch so every block starts as
            the identity (Goyal et al. 2017, "Accurate, Large Minibatch SGD").

    ``feature_dim = round(512·width) · block.expansion``; input ``(B, C, H, W)``, output ``(B, feature_dim)``.
    """

    def __init__(
        self,
        block: Type[Union[BasicBlock, Bottleneck]],
        layers: List[int],
        in_channels: int = 3,
        small_stem: bool = False,
        width: float = 1.0,
        zero_init_residual: bool = False,
        stem_stride: int = 1,
    ) -> None:
        if not width > 0:
            raise ConfigError(f"width={width!r} must be > 0 (e.g. 0.25, 0.5, 1.0, 2.0)")
        if stem_stride not in (1, 2) or (stem_stride != 1 and not small_stem):
            raise ConfigError(f"stem_stride={stem_stride!r} must be 1, or 2 together with small_stem=true")
        # Read by _make_layer while ResNet.__init__ runs; plain floats may be set before Module.__init__.
        self.width = float(width)
        # num_classes=1: the classifier is discarded, don't allocate a 1000-way one.
        super().__init__(block, layers, num_classes=1, zero_init_residual=zero_init_residual)
        stem_width = self._scaled(64)
        if small_stem:
            self.conv1 = nn.Conv2d(in_channels, stem_width, kernel_size=3, stride=stem_stride, padding=1,
                                   bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, stem_width, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.fc = nn.Identity()
        self.feature_dim = self._scaled(512) * block.expansion

    def _scaled(self, channels: int) -> int:
        return max(1, round(channels * self.width))

    def _make_layer(
        self,
        block: Type[Union[BasicBlock, Bottleneck]],
        planes: int,
        blocks: int,
        stride: int = 1,
        dilate: bool = False,
    ) -> nn.Sequential:
        if planes == 64:
            # The first stage reads the stem, which __init__ rebuilds `_scaled(64)` channels wide.
            self.inplanes = self._scaled(64)
        return super()._make_layer(block, self._scaled(planes), blocks, stride, dilate)


@BACKBONES.register("resnet18")
def resnet18(in_channels: int = 3, small_stem: bool = False, width: float = 1.0,
             zero_init_residual: bool = False, stem_stride: int = 1) -> ResNetBackbone:
    """ResNet-18: feature_dim 512·width."""
    return ResNetBackbone(BasicBlock, [2, 2, 2, 2], in_channels, small_stem, width, zero_init_residual, stem_stride)


@BACKBONES.register("resnet34")
def resnet34(in_channels: int = 3, small_stem: bool = False, width: float = 1.0,
             zero_init_residual: bool = False, stem_stride: int = 1) -> ResNetBackbone:
    """ResNet-34: feature_dim 512·width."""
    return ResNetBackbone(BasicBlock, [3, 4, 6, 3], in_channels, small_stem, width, zero_init_residual, stem_stride)


@BACKBONES.register("resnet50")
def resnet50(in_channels: int = 3, small_stem: bool = False, width: float = 1.0,
             zero_init_residual: bool = False, stem_stride: int = 1) -> ResNetBackbone:
    """ResNet-50: feature_dim 2048·width."""
    return ResNetBackbone(Bottleneck, [3, 4, 6, 3], in_channels, small_stem, width, zero_init_residual, stem_stride)


@BACKBONES.register("resnet18-tiny")
def resnet18_tiny(in_channels: int = 3, small_stem: bool = True, width: float = 0.25,
                  zero_init_residual: bool = False, stem_stride: int = 2) -> ResNetBackbone:
    """ResNet-18 preset for the CPU demo on 28×28 images: 3×3 stride-2 stem, width 0.25 (feature_dim 128).

    The fastest candidate of ``benchmarks/backbones.py`` that keeps a 14×14 first stage on
    Fashion-MNIST: 1,350-2,000 images/s forward+backward on 2 CPU threads (batch 256), about 3×
    the stride-1 small stem (450-650/s), which would allow only ~2-3 SimCLR epochs in 10 minutes.
    """
    return ResNetBackbone(BasicBlock, [2, 2, 2, 2], in_channels, small_stem, width, zero_init_residual, stem_stride)
