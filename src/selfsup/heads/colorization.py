"""Per-pixel heads for the colour pretext tasks, and the feature maps they read.

Backbones return one pooled vector; colorization (Zhang et al. 2016), split-brain autoencoders
(Zhang et al. 2017) and video colorization (Vondrick et al. 2018) predict per pixel, so they need
the backbone's spatial feature maps. :func:`dense_features` gets them without changing the
backbone: it runs a ResNet's stages one by one (the same modules, in the order torchvision's
``ResNet.forward`` runs them, so the pooled vector it also returns equals ``backbone(x)``) or
reshapes a ViT's patch tokens into their grid.

:class:`DenseFusionHead` turns one or more such maps into a per-pixel prediction at a chosen
output resolution: each map is projected by a 1x1 convolution, upsampled bilinearly to the output
grid and summed (a hypercolumn when several stages are used, Hariharan et al. 2015), then a 3x3 and
a 1x1 convolution predict the outputs: Zhang et al.'s ``conv8`` (upsampling + 3x3 convolutions)
followed by the 1x1 classifier over ab bins.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import ResNet

from selfsup.errors import ConfigError

RESNET_STAGES = (1, 2, 3, 4)


def _check_stages(backbone: nn.Module, stages: Sequence[int]) -> None:
    if not isinstance(backbone, ResNet) and not hasattr(backbone, "forward_tokens"):
        raise ConfigError(f"per-pixel colour tasks need a ResNet or ViT backbone (feature maps), got "
                          f"{type(backbone).__name__}; use e.g. --backbone resnet18")
    if not stages or any(s not in RESNET_STAGES for s in stages):
        raise ConfigError(f"feature_stages={tuple(stages)} must be a non-empty subset of {RESNET_STAGES} "
                          "(ResNet stages layer1..layer4)")


def feature_channels(backbone: nn.Module, stages: Sequence[int]) -> List[int]:
    """Channels of the maps :func:`dense_features` returns: one per stage (ResNet) or ``[D]`` (ViT)."""
    _check_stages(backbone, stages)
    if not isinstance(backbone, ResNet):
        return [backbone.feature_dim]
    # The last BatchNorm of a stage's last block normalises that stage's output (BasicBlock: bn2,
    # Bottleneck: bn3); the downsample branch only exists in the first block.
    return [[m for m in getattr(backbone, f"layer{s}")[-1].modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features
            for s in stages]


def dense_features(backbone: nn.Module, x: Tensor, stages: Sequence[int] = (4,)) -> Tuple[Tensor, List[Tensor]]:
    """The pooled representation ``(B, D)`` and feature maps ``[(B, C_s, H_s, W_s)]`` of ``x``.

    ResNet: the outputs of ``layer{s}`` for each ``s`` in ``stages``, and the global average pool
    of ``layer4`` (what ``backbone(x)`` returns). ViT: ``stages`` is ignored; the patch tokens as a
    ``(B, D, H/p, W/p)`` grid, and the CLS token.
    """
    _check_stages(backbone, stages)
    if not isinstance(backbone, ResNet):
        tokens = backbone.forward_tokens(x)
        patch = backbone.patch_embed.patch_size
        grid = (x.shape[-2] // patch[0], x.shape[-1] // patch[1])
        patches = tokens.patches.transpose(1, 2).reshape(x.shape[0], -1, *grid)
        return tokens.cls, [patches]
    h = backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(x))))
    maps = {}
    for s in RESNET_STAGES:
        h = getattr(backbone, f"layer{s}")(h)
        maps[s] = h
    pooled = backbone.fc(backbone.avgpool(h).flatten(1))
    return pooled, [maps[s] for s in stages]


class DenseFusionHead(nn.Module):
    """Feature maps -> per-pixel outputs ``(B, out_channels, h, w)`` on an ``(h, w)`` grid.

    Args:
        in_channels: channels of each input map (:func:`feature_channels`).
        hidden_dim: width of the fused map (Zhang et al.'s conv8 has 256).
        out_channels: outputs per pixel (``Q`` bins, or an embedding size).
    """

    def __init__(self, in_channels: Sequence[int], hidden_dim: int, out_channels: int) -> None:
        super().__init__()
        self.projections = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, hidden_dim, 1, bias=False), nn.BatchNorm2d(hidden_dim)) for c in in_channels
        )
        self.refine = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_dim, out_channels, 1),
        )

    def forward(self, maps: Sequence[Tensor], size: Tuple[int, int]) -> Tensor:
        fused = None
        for projection, feature in zip(self.projections, maps):
            h = projection(feature)
            if tuple(h.shape[-2:]) != tuple(size):
                h = F.interpolate(h, size=size, mode="bilinear", align_corners=False)
            fused = h if fused is None else fused + h
        return self.refine(fused)


def output_grid(height: int, width: int, stride: int) -> Tuple[int, int]:
    """The prediction grid of an ``height x width`` input at output stride ``stride`` (at least 1x1)."""
    return max(1, height // stride), max(1, width // stride)


__all__ = ["DenseFusionHead", "dense_features", "feature_channels", "output_grid"]
