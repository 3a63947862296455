"""Self-attention of the class token in the last block, one map per head (DINO, Caron et al. 2021,
Fig. 1 and Fig. 3): where each head of a self-supervised ViT looks, often at the object."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from selfsup.data import DatasetInfo
from selfsup.errors import ConfigError
from selfsup.viz.common import colorize, displayable, enlarge, save_cells


@torch.no_grad()
def cls_attention_maps(vit: nn.Module, images: Tensor) -> Tensor:
    """Attention of the CLS query to every patch in the last block: ``(B, heads, h, w)``, rows summing
    with the CLS key's share to 1. ``images`` are ``(B, C, H, W)``; ``vit`` needs ``get_last_attention``."""
    if not hasattr(vit, "get_last_attention"):
        raise ConfigError(f"attention maps need a ViT encoder (get_last_attention), got {type(vit).__name__}")
    was_training = vit.training
    vit.eval()
    try:
        attention = vit.get_last_attention(images)  # (B, heads, 1 + N, 1 + N)
    finally:
        vit.train(was_training)
    prefix = getattr(vit, "num_prefix_tokens", 1)
    cls_to_patches = attention[:, :, 0, prefix:]  # (B, heads, N)
    patch = vit.patch_embed.patch_size
    h, w = images.shape[-2] // patch[0], images.shape[-1] // patch[1]
    return cls_to_patches.reshape(*cls_to_patches.shape[:2], h, w)


def save_attention_maps(vit: nn.Module, images: Tensor, info: DatasetInfo, path: str | Path,
                        cell_size: int = 112, colormap: str = "inferno") -> Path:
    """PNG with one row per image: the image, then the CLS attention of each head (each map min-max scaled)."""
    maps = cls_attention_maps(vit, images)  # (B, heads, h, w)
    B, heads = maps.shape[:2]
    colored = colorize(maps.reshape(B * heads, *maps.shape[2:]), colormap)  # (B·heads, 3, h, w)
    colored = enlarge(colored, cell_size).reshape(B, heads, 3, cell_size, cell_size)
    originals = enlarge(displayable(images, info), cell_size)
    cells = []
    for b in range(B):
        cells.append(originals[b])
        cells.extend(colored[b])
    return save_cells(cells, 1 + heads, path)
