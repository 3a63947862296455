"""The up-convolutional decoder of context encoders (Pathak et al. 2016, Sec. 3.1)."""

from __future__ import annotations

import math
from typing import List, Tuple

import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.heads.mlp import hidden_block

SMALLEST_MAP = 4  # the paper's decoder starts from 4×4 maps (DCGAN-style)
NARROWEST = 32  # channel count below which the up-convolutions stop halving


def decoder_plan(image_size: int) -> Tuple[int, int]:
    """``(start, num_upsamplings)``: halve ``image_size`` while it stays even and > 4, so that
    ``start · 2^n == image_size`` exactly (28 -> 7 · 2², 32 -> 4 · 2³, 128 -> 4 · 2⁵). Sizes
    that do not halve to <= 8 (odd sizes) start at 4 and the output is resized at the end."""
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    start, steps = image_size, 0
    while start % 2 == 0 and start > SMALLEST_MAP:
        start, steps = start // 2, steps + 1
    if start > 2 * SMALLEST_MAP:
        steps = max(0, math.ceil(math.log2(image_size / SMALLEST_MAP)))
        start = SMALLEST_MAP
    return start, steps


class ConvDecoder(nn.Module):
    """Feature vector -> image: a fully connected layer to a small ``width × s × s`` map, then
    stride-2 up-convolutions (4×4 kernels, BatchNorm, ReLU), each halving the channels.

    The paper connects encoder and decoder by a channel-wise fully connected layer on the
    encoder's last spatial map, then decodes with five up-convolutions (Sec. 3.1). selfsup
    backbones return a pooled vector, so a plain fully connected layer makes the first map
    from it: the same information path (every output location sees the whole encoding).

    Args:
        input_dim: size ``D`` of the encoding.
        out_channels: image channels ``C``.
        image_size: output side ``H = W``.
        width: channels of the first map (the paper's decoder starts at 512).

    Shapes:
        ``(B, D) -> (B, C, image_size, image_size)``; the output is linear (images are normalised,
        not in [-1, 1], so no tanh).
    """

    def __init__(self, input_dim: int, out_channels: int, image_size: int, width: int = 512) -> None:
        super().__init__()
        self.image_size = image_size
        self.start, steps = decoder_plan(image_size)
        self.width = width
        self.project = nn.Sequential(*hidden_block(input_dim, width * self.start * self.start))
        layers: List[nn.Module] = []
        channels = width
        for _ in range(steps):
            narrower = max(NARROWEST, channels // 2)
            layers += [nn.ConvTranspose2d(channels, narrower, kernel_size=4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(narrower), nn.ReLU(inplace=True)]
            channels = narrower
        layers.append(nn.Conv2d(channels, out_channels, kernel_size=3, padding=1))
        self.upsample = nn.Sequential(*layers)

    def forward(self, encoding: Tensor) -> Tensor:
        x = self.project(encoding).view(-1, self.width, self.start, self.start)
        image = self.upsample(x)
        if image.shape[-1] != self.image_size:
            image = F.interpolate(image, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return image
