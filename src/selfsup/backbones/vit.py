"""Vision Transformer backbones (Dosovitskiy et al. 2021) built on timm's ``VisionTransformer``.

What the self-supervised methods need on top of timm's model:

* ``forward(x)``: the CLS token after the final LayerNorm, ``(B, D)`` (DINO, MoCo v3).
* ``forward_tokens(x, mask)``: CLS and patch tokens; masked patches have their embedding
  replaced by a learned ``mask_token`` before the position embedding is added, as in iBOT
  (Zhou et al. 2022) and BEiT (Bao et al. 2022), so a masked token still knows where it is.
* ``get_last_attention(x)``: the last block's attention probabilities, for DINO's
  attention-map pictures (Caron et al. 2021, Fig. 1).

``dynamic_img_size`` is on, so a model built for one image size also runs at another
(the position embedding is interpolated), e.g. DINO's 96-pixel local crops.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Set

import torch
from timm.models import checkpoint_seq
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from selfsup.backbones.base import BACKBONES, Backbone
from selfsup.errors import ConfigError


class TokenFeatures(NamedTuple):
    """Output tokens of a ViT after the final LayerNorm."""

    cls: Tensor
    """``(B, D)`` class token."""
    patches: Tensor
    """``(B, N, D)`` patch tokens, N = (H/patch)·(W/patch), row-major."""


class VisionTransformerBackbone(VisionTransformer, Backbone):
    """timm's ViT with a class token, no classifier, and an iBOT-style mask token.

    Args:
        embed_dim: token size ``D`` (= ``feature_dim``).
        num_heads: attention heads.
        depth: transformer blocks.
        in_channels: image channels ``C``.
        patch_size: side of the square patches; must divide ``image_size``.
        image_size: side of the images the position embedding is built for.
        drop_path_rate: stochastic-depth rate of the last block (Huang et al. 2016), linearly
            increasing from 0 over depth as in timm/DeiT.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        depth: int = 12,
        in_channels: int = 3,
        patch_size: int = 16,
        image_size: int = 224,
        drop_path_rate: float = 0.0,
    ) -> None:
        if patch_size < 1 or image_size < 1 or image_size % patch_size:
            raise ConfigError(
                f"patch_size={patch_size} must divide image_size={image_size} "
                f"(e.g. patch_size 16 or 8 for 224, 4 or 8 for 32)"
            )
        if not 0.0 <= drop_path_rate < 1.0:
            raise ConfigError(f"drop_path_rate={drop_path_rate} must be in [0, 1) (DINO uses 0.1)")
        super().__init__(
            img_size=image_size,
            patch_size=patch_size,
            in_chans=in_channels,
            num_classes=0,
            global_pool="token",
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            drop_path_rate=drop_path_rate,
            dynamic_img_size=True,
        )
        self.feature_dim = embed_dim
        # (D,) learned embedding of a masked patch; iBOT initialises it to zeros.
        self.mask_token = nn.Parameter(torch.zeros(embed_dim))

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        """Token-like parameters excluded from weight decay (timm's convention, plus the mask token)."""
        return super().no_weight_decay() | {"mask_token"}

    def forward_tokens(self, x: Tensor, mask: Optional[Tensor] = None) -> TokenFeatures:
        """CLS and patch tokens after the final LayerNorm.

        Args:
            x: images ``(B, C, H, W)``.
            mask: optional bool ``(B, N)``; True replaces that patch's embedding by ``mask_token``.

        Returns:
            :class:`TokenFeatures` with ``cls (B, D)`` and ``patches (B, N, D)``.
        """
        return vit_forward_tokens(self, x, mask, self.mask_token)

    def forward(self, x: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` → CLS token ``(B, D)``."""
        return self.forward_tokens(x).cls

    def get_last_attention(self, x: Tensor) -> Tensor:
        """Attention probabilities of the last block, ``(B, heads, 1 + N, 1 + N)``; row 0 is the CLS query."""
        return vit_last_attention(self, x)


# The token functions take any timm ``VisionTransformer``, so ``timm:vit_*`` backbones
# (selfsup.backbones.timm) give iBOT/DINOv2 the same patch tokens and masks as the built-in ViTs.
def vit_embed(vit: VisionTransformer, x: Tensor, mask: Optional[Tensor] = None,
              mask_token: Optional[Tensor] = None) -> Tensor:
    """Images ``(B, C, H, W)`` → tokens ``(B, T, D)`` with position embeddings, ready for the blocks."""
    x = vit.patch_embed(x)  # (B, h, w, D) with dynamic_img_size (flattening deferred), else (B, N, D)
    if mask is not None:
        B, num_patches = x.shape[0], x.shape[1:-1].numel()
        if mask.shape != (B, num_patches):
            raise ValueError(f"mask must have shape {(B, num_patches)} (batch, patches), got {tuple(mask.shape)}")
        # Replace the patch embedding before the position embedding is added (iBOT, BEiT).
        x = torch.where(mask.view(*x.shape[:-1], 1), mask_token.to(x.dtype), x)
    x = vit._pos_embed(x)  # prepends CLS (and register tokens), adds (interpolated) position embedding
    x = vit.patch_drop(x)
    return vit.norm_pre(x)


def vit_forward_tokens(vit: VisionTransformer, x: Tensor, mask: Optional[Tensor] = None,
                       mask_token: Optional[Tensor] = None) -> TokenFeatures:
    """The pooled token (timm's ``forward_head``: the CLS token for ``global_pool='token'``) and
    the patch tokens after the final norm; ``mask (B, N)`` replaces patches by ``mask_token``."""
    x = vit_embed(vit, x, mask, mask_token)
    if vit.grad_checkpointing and not torch.jit.is_scripting():
        x = checkpoint_seq(vit.blocks, x)
    else:
        x = vit.blocks(x)
    x = vit.norm(x)  # (B, prefix + N, D)
    return TokenFeatures(cls=vit.forward_head(x), patches=x[:, vit.num_prefix_tokens:])


def vit_last_attention(vit: VisionTransformer, x: Tensor) -> Tensor:
    """Attention probabilities of the last block, ``(B, heads, T, T)``; row 0 is the CLS query.

    timm's attention calls fused ``scaled_dot_product_attention``, which never materialises
    the probabilities, so the last block's softmax(q·kᵀ/√d) is recomputed here from its own
    projections (no extra parameters, nothing changes for ordinary forwards).
    """
    x = vit_embed(vit, x)
    for block in vit.blocks[:-1]:
        x = block(x)
    last = vit.blocks[-1]
    attn = last.attn
    y = last.norm1(x)
    B, T, _ = y.shape
    qkv = attn.qkv(y).reshape(B, T, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, _ = qkv.unbind(0)  # (B, heads, T, head_dim) each
    q, k = attn.q_norm(q), attn.k_norm(k)
    return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


def _vit(embed_dim: int, num_heads: int, in_channels: int, patch_size: int, image_size: int,
         drop_path_rate: float, depth: int) -> VisionTransformerBackbone:
    if depth < 1:
        raise ConfigError(f"depth={depth} must be a positive number of blocks (12 in the papers; 4-6 on a CPU)")
    return VisionTransformerBackbone(embed_dim, num_heads, depth, in_channels, patch_size, image_size, drop_path_rate)


@BACKBONES.register("vit-tiny")
def vit_tiny(in_channels: int = 3, patch_size: int = 16, image_size: int = 224,
             drop_path_rate: float = 0.0, depth: int = 12) -> VisionTransformerBackbone:
    """ViT-Tiny (DeiT): D=192, 12 blocks, 3 heads."""
    return _vit(192, 3, in_channels, patch_size, image_size, drop_path_rate, depth)


@BACKBONES.register("vit-small")
def vit_small(in_channels: int = 3, patch_size: int = 16, image_size: int = 224,
              drop_path_rate: float = 0.0, depth: int = 12) -> VisionTransformerBackbone:
    """ViT-Small (DeiT, DINO's ViT-S): D=384, 12 blocks, 6 heads."""
    return _vit(384, 6, in_channels, patch_size, image_size, drop_path_rate, depth)


@BACKBONES.register("vit-base")
def vit_base(in_channels: int = 3, patch_size: int = 16, image_size: int = 224,
             drop_path_rate: float = 0.0, depth: int = 12) -> VisionTransformerBackbone:
    """ViT-Base: D=768, 12 blocks, 12 heads."""
    return _vit(768, 12, in_channels, patch_size, image_size, drop_path_rate, depth)
