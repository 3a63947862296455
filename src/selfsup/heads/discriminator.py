"""A small convolutional discriminator for the adversarial loss of context encoders."""

from __future__ import annotations

import math
from typing import List

from torch import Tensor, nn


class ConvDiscriminator(nn.Module):
    """Image -> one real/fake logit: stride-2 4×4 convolutions with LeakyReLU(0.2) until the map is
    at most 4×4 (DCGAN's discriminator, which Pathak et al. 2016 use, Sec. 3.2), global average
    pooling and a linear layer, so any input size works.

    No BatchNorm: the context encoder evaluates this network twice per step, once as the
    discriminator and once, through frozen (detached) parameters, as the generator's critic;
    without running statistics both passes are the same function and neither mutates state.

    Args:
        in_channels: image channels ``C``.
        image_size: expected side, sets the number of downsampling layers (>= 1).
        width: channels of the first layer; doubled per layer up to ``8 · width``.

    Shapes:
        ``(B, C, H, W) -> (B,)`` logits.
    """

    def __init__(self, in_channels: int, image_size: int, width: int = 64) -> None:
        super().__init__()
        num_layers = max(1, math.ceil(math.log2(max(1, image_size) / 4)))
        layers: List[nn.Module] = []
        channels = in_channels
        for i in range(num_layers):
            wider = width * min(8, 2 ** i)
            layers += [nn.Conv2d(channels, wider, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            channels = wider
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.logit = nn.Linear(channels, 1)

    def forward(self, images: Tensor) -> Tensor:
        return self.logit(self.features(images)).squeeze(1)
