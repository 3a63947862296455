"""MLP projection heads (SimCLR, Chen et al. 2020, Sec. 2.1 and 4.2)."""

from __future__ import annotations

from torch import Tensor, nn

from selfsup.heads.mlp import mlp_layers


class ProjectionHead(nn.Module):
    """``num_layers`` linear layers; every hidden layer is Linear → BatchNorm → ReLU.

    SimCLR v1 uses 2 layers, SimCLR v2 3 (Chen et al. 2020b, Sec. 2); the representation used
    downstream is taken *before* this head, which the paper shows is much better (Fig. 8).

    Args:
        input_dim: backbone feature size.
        hidden_dim: width of the hidden layers.
        output_dim: size of the projection ``z``.
        num_layers: number of linear layers (>= 1).
        batch_norm: BatchNorm after hidden layers (turn off for BN-free equivalence tests).
        last_batch_norm: affine-free BatchNorm on the output, as in SimCLR's reference code.

    Shapes:
        ``(B, input_dim) → (B, output_dim)``
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int = 2048,
        output_dim: int = 128,
        num_layers: int = 2,
        batch_norm: bool = True,
        last_batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.layers = nn.Sequential(*mlp_layers(input_dim, hidden_dim, output_dim, num_layers, batch_norm=batch_norm,
                                                last_batch_norm=last_batch_norm))
        self.output_dim = output_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
