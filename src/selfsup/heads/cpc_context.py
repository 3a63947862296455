"""CPC's autoregressive context network over a grid of patch embeddings, and its predictors.

Contrastive Predictive Coding on images (van den Oord, Li, Vinyals 2018, Sec. 3.3; Hénaff et al.
2019, Sec. 3) summarises the patch embeddings ``z`` of the rows above and including row ``r`` into
a context ``c_r`` with a PixelCNN-style network, then predicts the embeddings ``k`` rows below
linearly, ``ẑ_{r+k} = W_k c_r`` (Eq. 3's log-bilinear score ``z^T W_k c``).

Causality comes from padding only at the top: a convolution whose kernel is ``kh`` rows high and
which is padded by ``kh − 1`` zero rows above and none below sees, at output row ``r``, the
input rows ``r − kh + 1 … r``. Stacked, the receptive field grows upwards only, so ``c`` at row
``r`` never depends on rows ``> r``: the predicted rows stay unseen. A whole row may be seen
(all columns), since predictions always target later rows.
"""

from __future__ import annotations

from typing import List

import torch.nn.functional as F
from torch import Tensor, nn


class RowCausalConv2d(nn.Conv2d):
    """A ``kernel_size × kernel_size`` convolution whose output row ``r`` sees input rows ``<= r`` only.

    Zero padding: ``kernel_size − 1`` rows on top, none at the bottom, ``kernel_size // 2``
    columns left and right (the width is preserved, columns are not causal).

    Shapes:
        ``(B, C_in, H, W) → (B, C_out, H, W)``
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        k = self.kernel_size[0]
        return super().forward(F.pad(x, (k // 2, k // 2, k - 1, 0)))


class CausalResidualBlock(nn.Module):
    """PixelCNN's residual block (van den Oord et al. 2016, "Pixel Recurrent Neural Networks",
    Fig. 5): ReLU → 1×1 (C → C/2) → ReLU → causal k×k (C/2 → C/2) → ReLU → 1×1 (C/2 → C), plus
    the input. No normalisation layer: batch or spatial statistics would mix rows, i.e. let the
    future leak into the context (why Hénaff et al. 2019 use layer normalisation, not BatchNorm).

    Shapes:
        ``(B, C, H, W) → (B, C, H, W)``
    """

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        hidden = max(1, channels // 2)
        self.layers = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(),
            RowCausalConv2d(hidden, hidden, kernel_size),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.layers(x)


class CPCContextNetwork(nn.Module):
    """The masked context network ``g_ar``: a 1×1 input projection then ``num_blocks`` causal
    residual blocks. The context at grid row ``r`` depends only on the patches of rows ``<= r``.

    Args:
        input_dim: patch-embedding size ``D``.
        context_dim: context size ``C``.
        num_blocks: residual blocks; each adds ``kernel_size − 1`` rows to the receptive field.
        kernel_size: odd side of the causal convolutions.

    Shapes:
        ``(B, Gh, Gw, D) → (B, Gh, Gw, C)`` (channels last, like the patch grid).
    """

    def __init__(self, input_dim: int, context_dim: int, num_blocks: int = 5, kernel_size: int = 3) -> None:
        super().__init__()
        if num_blocks < 0:
            raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
        self.input = nn.Conv2d(input_dim, context_dim, 1)
        self.blocks = nn.Sequential(*(CausalResidualBlock(context_dim, kernel_size) for _ in range(num_blocks)))
        self.output_dim = context_dim

    def forward(self, embeddings: Tensor) -> Tensor:
        if embeddings.dim() != 4:
            raise ValueError(f"expected a (B, Gh, Gw, D) patch grid, got {tuple(embeddings.shape)}")
        x = self.blocks(self.input(embeddings.permute(0, 3, 1, 2)))  # (B, C, Gh, Gw)
        return x.permute(0, 2, 3, 1)


class RowPredictors(nn.Module):
    """One linear map ``W_k`` per offset ``k = 1..max_steps`` (van den Oord et al. 2018, Eq. 3):
    ``ẑ_{r+k, j} = W_k c_{r, j}``, the prediction of the patch ``k`` rows below.

    Shapes:
        ``(B, Gh, Gw, C)`` → list over ``k = 1..min(max_steps, Gh − 1)`` of ``(B, Gh − k, Gw, D)``;
        entry ``k − 1`` at row ``r`` predicts the embedding at row ``r + k``.
    """

    def __init__(self, context_dim: int, embedding_dim: int, max_steps: int) -> None:
        super().__init__()
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.weights = nn.ModuleList(nn.Linear(context_dim, embedding_dim, bias=False) for _ in range(max_steps))

    def forward(self, context: Tensor) -> List[Tensor]:
        rows = context.shape[1]
        # Offsets that reach past the last row have nothing to predict on this grid.
        return [w(context[:, :rows - k]) for k, w in enumerate(self.weights[:rows - 1], start=1)]
