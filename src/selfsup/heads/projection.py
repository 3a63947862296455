"""MLP projection heads (SimCLR, Chen et al. 2020, Sec. 2.1 and 4.2)."""

from __future__ import annotations

from typing import List

from torch import Tensor, nn


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
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: List[nn.Module] = []
        dim = input_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            dim = hidden_dim
        layers.append(nn.Linear(dim, output_dim, bias=not last_batch_norm))
        if last_batch_norm:
            layers.append(nn.BatchNorm1d(output_dim, affine=False))
        self.layers = nn.Sequential(*layers)
        self.output_dim = output_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
