"""The one builder of the heads' multi-layer perceptrons.

Every MLP head of the package is the same stack: hidden layers ``Linear → [BatchNorm] → activation``
and a last ``Linear`` (optionally followed by an affine-free BatchNorm). SimCLR's projector
(Chen et al. 2020, Sec. 2.1), BYOL's/SimSiam's/MoCo v3's projectors and predictors, DINO's MLP
(Caron et al. 2021, Sec. 3.1), the pretext classifiers' fully connected layers (Doersch et al.
2015; Noroozi & Favaro 2016) and the context encoder's first layer differ only in these choices.

The modules are returned in a flat list in forward order, so an ``nn.Sequential`` of them numbers
its layers exactly as the hand-written stacks did (checkpoints keep their keys), and they are
created in that order (the random initialisation draws the same numbers).
"""

from __future__ import annotations

from typing import Callable, List, Optional

from torch import nn


def hidden_block(input_dim: int, output_dim: int, batch_norm: bool = True,
                 activation: Callable[[], nn.Module] = lambda: nn.ReLU(inplace=True),
                 bias: Optional[bool] = None) -> List[nn.Module]:
    """``Linear → [BatchNorm1d] → activation``; the linear layer has no bias before a BatchNorm
    (it would be cancelled by the mean subtraction) unless ``bias`` says otherwise."""
    layers: List[nn.Module] = [nn.Linear(input_dim, output_dim, bias=not batch_norm if bias is None else bias)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(output_dim))
    layers.append(activation())
    return layers


def mlp_layers(
    input_dim: int,
    hidden_dim: int,
    output_dim: int,
    num_layers: int,
    batch_norm: bool = True,
    activation: Callable[[], nn.Module] = lambda: nn.ReLU(inplace=True),
    hidden_bias: Optional[bool] = None,
    last_batch_norm: bool = False,
) -> List[nn.Module]:
    """``num_layers`` linear layers: ``num_layers − 1`` :func:`hidden_block` of width ``hidden_dim``,
    then ``Linear(·, output_dim)`` (without bias and followed by an affine-free BatchNorm when
    ``last_batch_norm``, as in SimCLR's reference code).

    Raises:
        ValueError: ``num_layers < 1``.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    layers: List[nn.Module] = []
    dim = input_dim
    for _ in range(num_layers - 1):
        layers += hidden_block(dim, hidden_dim, batch_norm, activation, hidden_bias)
        dim = hidden_dim
    layers.append(nn.Linear(dim, output_dim, bias=not last_batch_norm))
    if last_batch_norm:
        layers.append(nn.BatchNorm1d(output_dim, affine=False))
    return layers


__all__ = ["hidden_block", "mlp_layers"]
