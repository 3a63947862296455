"""Jigsaw puzzles: Unsupervised Learning of Visual Representations by Solving Jigsaw Puzzles.

Noroozi & Favaro (ECCV 2016), https://arxiv.org/abs/1603.09246.
Each view is cut into a 3×3 grid of tiles (a random tile inside every cell, so tiles are
separated by random gaps), the tiles are shuffled by a permutation drawn from a fixed set, and
a context-free network — the shared backbone on each tile, a shared fully connected layer,
then a classifier on the 9 concatenated tile features — predicts the permutation's index
(Sec. 3, Fig. 3). The set is chosen greedily for large Hamming distances between its
permutations (Sec. 3.3), so neighbouring classes are not near-identical puzzles. Each tile is
normalised by its own mean and std so low-level statistics are no shortcut (Sec. 3.2).

As in relative location, small images may first be resized to a larger ``canvas_size`` so that
each tile has a receptive field the backbone can use.

What evaluation measures (``encoder``): by default the mean feature of an image's 9 tiles, cut
and normalised as in training but without randomness (each tile centred in its cell) — the
tile network never sees a whole image, so patch-based methods are evaluated on the average of
their patch representations (Kolesnikov, Zhai, Beyer 2019, Sec. 3). ``encoder="whole"`` feeds
whole images to the backbone instead. Measured on Fashion-MNIST (2 epochs, canvas 48): whole
images gave kNN 65.9 %, under the 68.5 % of a random network; the tile encoder 74.9 % (random
tile encoder: 64.9 %).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.errors import ConfigError
from selfsup.heads.classifier import PatchSetClassifier
from selfsup.methods.base import DataSpec, Method, MethodConfig, MethodOutput
from selfsup.methods.registry import METHODS
from selfsup.methods.relative_location import TileGridEncoder, frozen_running_stats, whole_image_features
from selfsup.transforms import ViewConfig
from selfsup.transforms.pretext import greedy_permutation_set, normalize_tiles, resize_canvas, sample_jigsaw_tiles

GRID = 3  # 3×3 tiles, as in the paper
ENCODERS = ("tiles", "whole")
PAPER_CELL, PAPER_TILE = 75, 64  # a 64×64 tile inside each 75×75 cell of a 225×225 crop (Sec. 3.2)


@dataclass
class JigsawConfig(MethodConfig):
    num_permutations: int = 100
    """Size of the permutation set = number of classes (paper: 1000 is best, Table 3; 100 is cheaper)."""
    permutation_seed: int = 0
    """Seed of the greedy selection: the same seed gives the same set (it is also saved as a buffer)."""
    canvas_size: Optional[int] = None
    """Side the view is resized to (bilinear) before tiling; None keeps the view's size."""
    tile_size: Optional[int] = None
    """Tile side in canvas pixels; None is the paper's 64/75 of a grid cell."""
    tile_dim: int = 512
    """Shared per-tile fully connected layer (the paper's fc6: 512)."""
    classifier_hidden_dim: int = 4096
    """Hidden width after concatenating the 9 tiles (the paper's fc7: 4096)."""
    encoder: str = "tiles"
    """What evaluation measures: 'tiles' (mean feature of the 9 centred tiles; BatchNorm running
    statistics from tiles, as trained) or 'whole' (the backbone on whole images)."""
    bn_stats_from_whole_images: bool = True
    """With ``encoder='whole'``: BatchNorm running statistics (what evaluation normalises with)
    from whole views, not from the per-tile-normalised tiles: the tile pass leaves them alone and
    a no-grad whole-view pass updates them (as in relative-location). The gradients are unchanged."""

    def __post_init__(self) -> None:
        if self.num_permutations < 2:
            raise ConfigError(f"num_permutations={self.num_permutations} must be >= 2 (it is the number of classes)")
        if self.encoder not in ENCODERS:
            raise ConfigError(f"unknown jigsaw encoder '{self.encoder}'; valid: {', '.join(ENCODERS)}")
        for name in ("canvas_size", "tile_size", "tile_dim", "classifier_hidden_dim"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name}={value} must be a positive integer" +
                                  (" or null" if name in ("canvas_size", "tile_size") else ""))

    def tile(self, canvas: int) -> int:
        """Tile side on a canvas of side ``canvas``."""
        if self.tile_size is not None:
            return self.tile_size
        return max(1, (canvas // GRID) * PAPER_TILE // PAPER_CELL)


@METHODS.register("jigsaw")
class Jigsaw(Method):
    """Classify which permutation of the set shuffled the 9 tiles of each view."""

    Config = JigsawConfig
    config: JigsawConfig
    num_views = 1

    def __init__(self, backbone: nn.Module, config: Optional[JigsawConfig] = None,
                 data: Optional[DataSpec] = None) -> None:
        super().__init__(backbone, config, data)
        cfg = self.config
        permutations, _ = greedy_permutation_set(cfg.num_permutations, GRID * GRID, seed=cfg.permutation_seed)
        # A buffer: checkpoints carry the exact set the classifier's outputs refer to.
        self.register_buffer("permutations", permutations)  # (N, 9) int64
        self.classifier = PatchSetClassifier(backbone.feature_dim, num_patches=GRID * GRID, patch_dim=cfg.tile_dim,
                                             hidden_dim=cfg.classifier_hidden_dim, num_classes=cfg.num_permutations)

    @classmethod
    def default_views(cls, **overrides: Any) -> ViewConfig:
        return ViewConfig.crop_flip(**overrides)

    def encoder(self) -> nn.Module:
        if self.config.encoder == "whole":
            return self.backbone
        return TileGridEncoder(self.backbone, self.config.canvas_size, self.config.tile, normalize=True)

    def forward(self, views: List[Tensor], indices: Optional[Tensor] = None) -> MethodOutput:
        self.check_views(views)
        canvas = resize_canvas(views[0], self.config.canvas_size)
        puzzle = sample_jigsaw_tiles(canvas, self.permutations, self.config.tile(min(canvas.shape[-2:])))
        tiles = normalize_tiles(puzzle.tiles)  # (B, 9, C, S, S)
        batch, num_tiles = tiles.shape[:2]
        whole = self.config.encoder == "whole"
        whole_image_stats = whole and self.config.bn_stats_from_whole_images and self.training
        with frozen_running_stats(self.backbone) if whole_image_stats else nullcontext():
            h = self.backbone(tiles.flatten(0, 1))  # (9B, D): one pass over every tile of the batch
        logits = self.classifier(h.view(batch, num_tiles, -1))  # (B, N)
        loss = F.cross_entropy(logits, puzzle.labels)
        with torch.no_grad():
            accuracy = (logits.argmax(dim=1) == puzzle.labels).float().mean()
        if whole:
            features = whole_image_features(self.backbone, views[0], whole_image_stats)
        else:  # the online probe sees what evaluation will: the mean of the (shuffled) tiles' features
            features = h.detach().view(batch, num_tiles, -1).mean(dim=1)
        return MethodOutput(loss=loss, logs={"jigsaw_acc": accuracy}, features=features)
