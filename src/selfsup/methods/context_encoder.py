"""Context Encoders: Feature Learning by Inpainting.

Pathak, Krähenbühl, Donahue, Darrell, Efros (CVPR 2016), https://arxiv.org/abs/1604.07379.
A region of each view is removed (filled with the mean, 0 after normalisation); the backbone
encodes what is left and an up-convolutional decoder paints the whole image back (Sec. 3.1).
The loss is an L2 reconstruction over the removed region only (Eq. 1), with the predicted
region a few pixels larger than the hole and that overlap band weighted 10× (Sec. 3.3), plus
an optional adversarial term from a small discriminator (Eq. 2-3; the paper's joint loss uses
λ_adv = 0.001, λ_rec = 1 - λ_adv). Regions: the central square, or random blocks (Sec. 3.3).

With one optimizer for everything, the discriminator learns from detached fakes (no gradient
reaches the generator through its loss), and the generator's adversarial term is computed with
detached discriminator parameters (``torch.func.functional_call``), so it moves only the
backbone and decoder, never the discriminator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from selfsup.errors import ConfigError
from selfsup.heads.decoder import ConvDecoder
from selfsup.heads.discriminator import ConvDiscriminator
from selfsup.losses.reconstruction import MaskedReconstructionLoss
from selfsup.methods.base import DataSpec, Method, MethodConfig, MethodOutput
from selfsup.methods.registry import METHODS
from selfsup.transforms import ViewConfig
from selfsup.transforms.pretext import centre_region_mask, erode_mask, fill_holes, random_rectangles_mask

MASKS = ("center", "random")
DEFAULT_IMAGE_SIZE = 32  # decoder output side when neither the config nor the data says


@dataclass
class ContextEncoderConfig(MethodConfig):
    mask: str = "center"
    """'center': the central square; 'random': a union of random rectangles covering <= 1/4."""
    mask_fraction: float = 0.5
    """Side of the central region relative to the image (paper: 64 of 128)."""
    mask_rectangles: int = 4
    """Rectangles in a 'random' mask."""
    overlap_fraction: float = 0.03125
    """Width of the predicted-but-visible band, relative to the image side (paper: 4 of 128 px)."""
    overlap_weight: float = 10.0
    """Loss weight of that band relative to the hole (paper: 10)."""
    image_size: Optional[int] = None
    """Decoder output side; None uses the dataset's native size. Set it to views.image_size
    when the views are resized (outputs of another size are resized, which is slower)."""
    decoder_width: int = 512
    """Channels of the decoder's first map, halved by every up-convolution (paper: 512)."""
    adversarial_weight: float = 0.0
    """λ_adv of the joint loss (paper: 0.001); 0 turns the discriminator off."""
    discriminator_width: int = 64
    """Channels of the discriminator's first layer (DCGAN: 64)."""

    def __post_init__(self) -> None:
        if self.mask not in MASKS:
            raise ConfigError(f"unknown mask '{self.mask}'; valid choices: {', '.join(MASKS)}")
        if not 0.0 < self.mask_fraction < 1.0:
            raise ConfigError(f"mask_fraction={self.mask_fraction} must be in (0, 1)")
        if self.mask_rectangles < 1:
            raise ConfigError(f"mask_rectangles={self.mask_rectangles} must be >= 1")
        if not 0.0 <= self.overlap_fraction < 0.5:
            raise ConfigError(f"overlap_fraction={self.overlap_fraction} must be in [0, 0.5)")
        if self.overlap_weight < 0:
            raise ConfigError(f"overlap_weight={self.overlap_weight} must be >= 0")
        if not 0.0 <= self.adversarial_weight < 1.0:
            raise ConfigError(f"adversarial_weight={self.adversarial_weight} must be in [0, 1) (paper: 0.001)")
        for name in ("decoder_width", "discriminator_width"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.image_size is not None and self.image_size < 1:
            raise ConfigError(f"image_size={self.image_size} must be a positive number of pixels or null")


def _input_channels(backbone: nn.Module) -> int:
    """Image channels the backbone reads: those of its first convolution (3 if it has none)."""
    first = next((m for m in backbone.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else 3


@METHODS.register("context-encoder")
class ContextEncoder(Method):
    """Inpaint a masked region from its context; encoder = the backbone."""

    Config = ContextEncoderConfig
    config: ContextEncoderConfig
    num_views = 1

    def __init__(self, backbone: nn.Module, config: Optional[ContextEncoderConfig] = None,
                 data: Optional[DataSpec] = None) -> None:
        super().__init__(backbone, config, data)
        cfg = self.config
        channels = data.info.num_channels if data is not None else _input_channels(backbone)
        size = cfg.image_size or (data.info.image_size if data is not None else DEFAULT_IMAGE_SIZE)
        self.decoder = ConvDecoder(backbone.feature_dim, channels, size, width=cfg.decoder_width)
        self.reconstruction = MaskedReconstructionLoss()
        self.discriminator: Optional[ConvDiscriminator] = None
        if cfg.adversarial_weight > 0:
            self.discriminator = ConvDiscriminator(channels, size, width=cfg.discriminator_width)

    @classmethod
    def default_views(cls, **overrides: Any) -> ViewConfig:
        return ViewConfig.crop_flip(**overrides)

    def masks(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        """``region`` (predicted, in the loss) and ``hole`` (filled in the input), both
        ``(B, 1, H, W)`` bool; the hole is the region eroded by the overlap band."""
        cfg = self.config
        batch, _, height, width = images.shape
        if cfg.mask == "center":
            region = centre_region_mask(batch, height, width, cfg.mask_fraction, device=images.device)
        else:
            region = random_rectangles_mask(batch, height, width, cfg.mask_rectangles, device=images.device)
        overlap = round(cfg.overlap_fraction * min(height, width))
        return region, erode_mask(region, overlap)

    def loss_weights(self, region: Tensor, hole: Tensor) -> Tensor:
        """``(B, 1, H, W)`` weights: 1 in the hole, ``overlap_weight`` in the band, 0 in the context."""
        band = (region & ~hole).float()
        return hole.float() + self.config.overlap_weight * band

    def forward(self, views: List[Tensor], indices: Optional[Tensor] = None) -> MethodOutput:
        self.check_views(views)
        images = views[0]
        region, hole = self.masks(images)
        inputs = fill_holes(images, hole)
        h = self.backbone(inputs)  # (B, D)
        prediction = self.decoder(h)  # (B, C, H', W')
        if prediction.shape[-2:] != images.shape[-2:]:
            prediction = F.interpolate(prediction, size=images.shape[-2:], mode="bilinear", align_corners=False)
        rec_loss = self.reconstruction(prediction, images, self.loss_weights(region, hole))
        logs = {"rec_loss": rec_loss.detach()}
        loss = rec_loss
        if self.discriminator is not None:
            adv_loss, disc_loss = self.adversarial_losses(images, prediction, region)
            weight = self.config.adversarial_weight
            # Eq. 3: L = λ_rec·L_rec + λ_adv·L_adv for the generator; the discriminator's own
            # objective is added at full weight — it shares no parameters with the generator.
            loss = (1.0 - weight) * rec_loss + weight * adv_loss + disc_loss
            logs.update(adv_loss=adv_loss.detach(), disc_loss=disc_loss.detach())
        return MethodOutput(loss=loss, logs=logs, features=h.detach())

    def adversarial_losses(self, images: Tensor, prediction: Tensor, region: Tensor) -> Tuple[Tensor, Tensor]:
        """``(generator term, discriminator loss)`` of Eq. 2 (non-saturating generator term).

        The discriminator judges whole images: the real view, and the view with the predicted
        region pasted in (what the generator makes of the context).
        """
        assert self.discriminator is not None
        fake = torch.where(region, prediction, images)
        real_logits = self.discriminator(images)
        fake_logits = self.discriminator(fake.detach())  # D's loss must not train the generator
        disc_loss = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                     + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        # The generator's term through a frozen copy of D's parameters: no gradient into D.
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        judged = functional_call(self.discriminator, frozen, (fake,))
        adv_loss = F.binary_cross_entropy_with_logits(judged, torch.ones_like(judged))
        return adv_loss, disc_loss
