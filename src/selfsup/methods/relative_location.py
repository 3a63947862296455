"""Context prediction: Unsupervised Visual Representation Learning by Context Prediction.

Doersch, Gupta, Efros (ICCV 2015), https://arxiv.org/abs/1505.05192.
A 3×3 grid of patches is laid over the image; the centre patch and one of its 8 neighbours go
through the same encoder, and a classifier on the two concatenated features says where the
neighbour lies (Sec. 3, Fig. 3). Shortcuts the paper closes (Sec. 3.1): a gap between patches
(no continuous edges or textures across borders), random jitter of each patch (no aligned
lines), and colour dropping or projection (no chromatic-aberration cue to the position in the
frame). The encoder kept is the shared patch encoder, applied for evaluation to the image's 3×3
grid of patches and averaged (``encoder="patches"``, the default: the network never sees a whole
image), or to whole images (``encoder="whole"``).

Small images (Fashion-MNIST's 28×28) are first resized to a larger ``canvas_size``: the paper's
patches are 96 px, and a 3×3 grid of 6 px patches would be read by a stride-16 ResNet as a few
pixels. Resizing adds no information, it only gives each patch a usable receptive field.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.errors import ConfigError
from selfsup.heads.classifier import PatchSetClassifier
from selfsup.methods.base import DataSpec, Method, MethodConfig, MethodOutput
from selfsup.methods.registry import METHODS
from selfsup.transforms import ViewConfig
from selfsup.transforms.pretext import (NEIGHBOUR_OFFSETS, centred_tiles, drop_colour_channels, normalize_tiles,
                                        project_out_green_magenta, resize_canvas, sample_patch_pairs)

#: The paper's patch, gap and maximal jitter in pixels (Sec. 3.1), the ratios used when unset.
PAPER_PATCH, PAPER_GAP, PAPER_JITTER = 96, 48, 7
CHROMATIC_GUARDS = ("drop", "project", "none")
ENCODERS = ("patches", "whole")


@dataclass
class RelativeLocationConfig(MethodConfig):
    canvas_size: Optional[int] = None
    """Side the view is resized to (bilinear) before the grid is cut; None keeps the view's size."""
    patch_size: Optional[int] = None
    """Patch side in canvas pixels (paper: 96); None scales the paper's 96:48:7 patch:gap:jitter
    ratios so that the grid fills the canvas."""
    gap: Optional[int] = None
    """Pixels between neighbouring grid cells (paper: 48 = half a patch)."""
    jitter: Optional[int] = None
    """Each patch moves by up to ±jitter pixels per axis (paper: 7)."""
    chromatic_guard: str = "drop"
    """'drop': keep one random colour channel, the others become noise (paper's colour dropping);
    'project': remove the green-magenta component (paper's projection); 'none'. No-ops on gray images."""
    patch_dim: int = 4096
    """Shared per-patch fully connected layer (the paper's fc6: 4096)."""
    classifier_hidden_dim: int = 4096
    """Hidden width after concatenation (the paper's fc7: 4096)."""
    encoder: str = "patches"
    """What evaluation measures: 'patches' (the mean feature of the 3×3 grid's centred patches,
    BatchNorm running statistics from patches) or 'whole' (the backbone on whole images).
    Measured on Fashion-MNIST (2 epochs, the CPU recipe): kNN 73.0 % with 'patches' (a random
    network read the same way: 68.0 %), 69.4 % with 'whole' (random: 68.5 %)."""
    bn_stats_from_whole_images: bool = True
    """With ``encoder='whole'``: BatchNorm running statistics (what evaluation normalises with)
    from whole views, not from patches: the patch pass leaves them alone and a no-grad whole-view
    pass updates them. The gradients are unchanged. Measured on Fashion-MNIST (same weights, kNN on 10k/2k images):
    53.5 % with patch statistics, 60.5 % with whole-image statistics."""

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ConfigError(f"unknown relative-location encoder '{self.encoder}'; valid: {', '.join(ENCODERS)}")
        if self.chromatic_guard not in CHROMATIC_GUARDS:
            raise ConfigError(f"unknown chromatic_guard '{self.chromatic_guard}'; valid choices: "
                              f"{', '.join(CHROMATIC_GUARDS)}")
        for name in ("canvas_size", "patch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name}={value} must be a positive number of pixels or null")
        for name in ("gap", "jitter"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"{name}={value} must be >= 0 pixels or null")
        if self.patch_dim < 1 or self.classifier_hidden_dim < 1:
            raise ConfigError(f"patch_dim={self.patch_dim} and classifier_hidden_dim={self.classifier_hidden_dim} "
                              "must be >= 1")

    def grid(self, canvas: int) -> Tuple[int, int, int]:
        """``(patch_size, gap, jitter)`` on a canvas of side ``canvas``; unset values keep the
        paper's proportions, scaled so that the jittered grid just fits."""
        scale = canvas / (3 * PAPER_PATCH + 2 * PAPER_GAP + 2 * PAPER_JITTER)
        patch = self.patch_size if self.patch_size is not None else max(1, int(PAPER_PATCH * scale))
        gap = self.gap if self.gap is not None else int(PAPER_GAP * scale)
        jitter = self.jitter if self.jitter is not None else int(PAPER_JITTER * scale)
        return patch, gap, jitter


@contextmanager
def frozen_running_stats(module: nn.Module) -> Iterator[None]:
    """Inside this block the BatchNorm layers of ``module`` normalise with batch statistics as
    usual (train mode) but leave their running statistics unchanged (momentum 0)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


def whole_image_features(backbone: nn.Module, images: Tensor, update_running_stats: bool) -> Tensor:
    """Detached ``(B, D)`` backbone features of whole images, for the online probe.

    Patch-based methods never show the backbone a whole image while training, but evaluation
    does. With ``update_running_stats`` this pass runs in the backbone's current mode, so in
    training its BatchNorm running statistics follow whole images (pair it with
    :func:`frozen_running_stats` around the patch pass); without, it runs in eval mode and
    changes nothing.
    """
    modes = {m: m.training for m in backbone.modules()}
    if not update_running_stats:
        backbone.eval()
    try:
        with torch.no_grad():
            return backbone(images).detach()
    finally:
        for module, training in modes.items():
            module.train(training)


class TileGridEncoder(nn.Module):
    """Whole images → the mean backbone feature of their 3×3 grid of tiles, cut from the canvas
    as the patch tasks cut them, without randomness (each tile centred in its grid cell).

    Patch-based networks never see a whole image while training, so they are evaluated on the
    average representation of an image's patches (Kolesnikov, Zhai, Beyer 2019, Sec. 3). It owns
    no parameters besides the backbone, so its state dict is the backbone's (under ``backbone.``)
    and evaluation can rebuild it around any backbone (the random-init floor too).

    Args:
        canvas_size: side the image is resized to first (None: as it is).
        tile_size: canvas side → tile side, the method's own rule.
        normalize: normalise each tile by its own mean and std (jigsaw's tiles are).

    Shapes: ``(B, C, H, W) → (B, D)``.
    """

    def __init__(self, backbone: nn.Module, canvas_size: Optional[int], tile_size: Callable[[int], int],
                 normalize: bool = False, grid: int = 3) -> None:
        super().__init__()
        self.backbone = backbone
        self.canvas_size, self.tile_size, self.normalize, self.grid = canvas_size, tile_size, normalize, grid
        self.feature_dim = backbone.feature_dim

    def tiles(self, images: Tensor) -> Tensor:
        """``(B, C, H, W) → (B, grid², C, S, S)``."""
        canvas = resize_canvas(images, self.canvas_size)
        tiles = centred_tiles(canvas, self.grid, self.tile_size(min(canvas.shape[-2:])))
        return normalize_tiles(tiles) if self.normalize else tiles

    def forward(self, images: Tensor) -> Tensor:
        tiles = self.tiles(images)
        h = self.backbone(tiles.flatten(0, 1))  # (B·grid², D)
        return h.view(tiles.shape[0], tiles.shape[1], -1).mean(dim=1)


@METHODS.register("relative-location")
class RelativeLocation(Method):
    """Predict which of the 8 neighbours of the centre patch a second patch is."""

    Config = RelativeLocationConfig
    config: RelativeLocationConfig
    num_views = 1

    def __init__(self, backbone: nn.Module, config: Optional[RelativeLocationConfig] = None,
                 data: Optional[DataSpec] = None) -> None:
        super().__init__(backbone, config, data)
        cfg = self.config
        self.classifier = PatchSetClassifier(backbone.feature_dim, num_patches=2, patch_dim=cfg.patch_dim,
                                             hidden_dim=cfg.classifier_hidden_dim, num_classes=len(NEIGHBOUR_OFFSETS))

    @classmethod
    def default_views(cls, **overrides: Any) -> ViewConfig:
        return ViewConfig.crop_flip(**overrides)

    def encoder(self) -> nn.Module:
        if self.config.encoder == "whole":
            return self.backbone
        return TileGridEncoder(self.backbone, self.config.canvas_size, lambda side: self.config.grid(side)[0])

    def guard_colours(self, patches: Tensor) -> Tensor:
        if self.config.chromatic_guard == "drop":
            return drop_colour_channels(patches)
        if self.config.chromatic_guard == "project":
            return project_out_green_magenta(patches)
        return patches

    def forward(self, views: List[Tensor], indices: Optional[Tensor] = None) -> MethodOutput:
        self.check_views(views)
        canvas = resize_canvas(views[0], self.config.canvas_size)
        patch, gap, jitter = self.config.grid(min(canvas.shape[-2:]))
        pairs = sample_patch_pairs(canvas, patch, gap, jitter)
        batch = canvas.shape[0]
        # Colour guards act per patch (each patch keeps its own random channel).
        patches = self.guard_colours(torch.cat([pairs.centre, pairs.neighbour]))  # (2B, C, P, P)
        whole = self.config.encoder == "whole"
        whole_image_stats = whole and self.config.bn_stats_from_whole_images and self.training
        with frozen_running_stats(self.backbone) if whole_image_stats else nullcontext():
            h = self.backbone(patches)  # (2B, D)
        logits = self.classifier(torch.stack([h[:batch], h[batch:]], dim=1))  # (B, 8)
        loss = F.cross_entropy(logits, pairs.labels)
        with torch.no_grad():
            accuracy = (logits.argmax(dim=1) == pairs.labels).float().mean()
        # The online probe sees what evaluation will: whole images, or the mean of the two patches' features.
        features = whole_image_features(self.backbone, views[0], whole_image_stats) if whole \
            else h.detach().view(2, batch, -1).mean(dim=0)
        return MethodOutput(loss=loss, logs={"location_acc": accuracy}, features=features)
