"""DINO's projection head (Caron et al. 2021, Sec. 3.1 and the appendix on the projection head).

An MLP of ``num_layers`` linear layers (hidden 2048, GELU, no BatchNorm by default) ending in a
bottleneck of 256, an L2 normalisation, then a weight-normalised linear layer without bias to
``K`` outputs ("prototypes"; K = 65536 in the paper). iBOT and DINOv2 use the same head for
[CLS] and patch tokens, so every layer acts on the last dimension: ``(..., D) → (..., K)``.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.heads.mlp import mlp_layers


class WeightNormalizedLinear(nn.Module):
    """``x ↦ x · (g ⊙ v / ‖v‖)ᵀ`` without bias: weight normalisation (Salimans & Kingma 2016).

    Each output unit ``k`` has a direction ``v_k`` and a length ``g_k``. DINO fixes ``g = 1``
    (``norm_last_layer``, the default) because a free length made training unstable with ViT-B
    (Caron et al. 2021, reference code); then the layer computes cosine similarities between the
    L2-normalised bottleneck and the K prototypes, so every logit lies in ``[-1, 1]``.

    Args:
        input_dim: ``D_in``.
        output_dim: ``K``.
        learn_norm: make ``g`` a learnable ``(K,)`` parameter (initialised to 1) instead of 1.

    Shapes:
        ``(..., D_in) → (..., K)``
    """

    def __init__(self, input_dim: int, output_dim: int, learn_norm: bool = False) -> None:
        super().__init__()
        self.direction = nn.Parameter(torch.empty(output_dim, input_dim))
        nn.init.trunc_normal_(self.direction, std=0.02)
        # 1-D, so the optimizer's bias/norm rule leaves it without weight decay.
        self.norm: Optional[nn.Parameter] = nn.Parameter(torch.ones(output_dim)) if learn_norm else None

    def weight(self) -> Tensor:
        """The effective ``(K, D_in)`` weight."""
        weight = F.normalize(self.direction, dim=1)
        return weight if self.norm is None else weight * self.norm.unsqueeze(1)

    def forward(self, x: Tensor) -> Tensor:
        # Same as F.linear(x, self.weight()) but scales the (..., K) outputs instead of building a
        # normalised (K, D_in) matrix: for K = 65536 that matrix's backward dominated a CPU step.
        scale = self.direction.norm(dim=1).clamp(min=1e-12).reciprocal()  # (K,)
        if self.norm is not None:
            scale = scale * self.norm
        return F.linear(x, self.direction) * scale


class DINOHead(nn.Module):
    """MLP → L2 normalisation → weight-normalised prototypes layer.

    Args:
        input_dim: backbone feature size ``D``.
        output_dim: number of prototypes ``K`` (65536 in DINO, 8192 in iBOT).
        hidden_dim: width of the hidden layers (2048).
        bottleneck_dim: size of the normalised bottleneck (256).
        num_layers: linear layers of the MLP, bottleneck included (3).
        batch_norm: BatchNorm after each hidden linear layer (off for ViTs; an option for ResNets).
        norm_last_layer: fix the prototype lengths to 1 (see :class:`WeightNormalizedLinear`).

    Shapes:
        ``(..., D) → (..., K)`` (``(B, D)`` for [CLS] tokens, ``(M, D)`` for patch tokens).
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        batch_norm: bool = False,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        # Hidden linear layers keep their bias even before a BatchNorm, as in DINO's reference code.
        self.mlp = nn.Sequential(*mlp_layers(input_dim, hidden_dim, bottleneck_dim, num_layers, batch_norm=batch_norm,
                                             activation=nn.GELU, hidden_bias=True))
        for module in self.mlp.modules():
            if isinstance(module, nn.Linear):  # DINO's init (the ViT convention)
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = WeightNormalizedLinear(bottleneck_dim, output_dim, learn_norm=not norm_last_layer)
        self.output_dim = output_dim

    def forward(self, x: Tensor) -> Tensor:
        z = self.mlp(x)
        # fp32 normalisation: a half-precision bottleneck with a tiny norm would overflow 1/‖z‖.
        z = F.normalize(z.float(), dim=-1).to(z.dtype)
        return self.last_layer(z)
