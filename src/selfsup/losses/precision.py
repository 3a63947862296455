"""Losses keep their own arithmetic in float32 under mixed precision (``trainer.precision=bf16-mixed``)."""

from __future__ import annotations

import torch
from torch import Tensor


def full_precision(x: Tensor) -> Tensor:
    """``x`` in float32 when it is in half precision, else unchanged (float64 stays float64).

    bf16 keeps about 3 significant digits: too few for softmaxes over many logits of size 1/τ,
    or for ``2 − 2·cos`` near 0.
    """
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


__all__ = ["full_precision"]
