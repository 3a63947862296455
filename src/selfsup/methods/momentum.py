"""Momentum (EMA) encoders, shared by MoCo, BYOL, DINO and iBOT.

The target/key/teacher network is a frozen copy of the online one, moved towards it after each
optimizer step: θ_k ← m·θ_k + (1 − m)·θ_q (MoCo, He et al. 2019, Eq. 2). It never receives
gradients; methods call :func:`ema_update_` from ``on_step_end``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with ``requires_grad=False`` everywhere (the EMA target)."""
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``θ_target ← m·θ_target + (1 − m)·θ_online`` for parameters; buffers (BN statistics) are copied.

    Floating-point buffers follow the online network as in the reference implementations (the
    key encoder's BN statistics are its own running averages in MoCo's code, but those are only
    used in eval mode, where the online network's are the better estimate).
    """
    target_params = [p for p in target.parameters()]
    online_params = [p.detach() for p in online.parameters()]
    if len(target_params) != len(online_params):
        raise ValueError("target and online networks differ in structure")
    if target_params:
        torch._foreach_mul_(target_params, momentum)
        torch._foreach_add_(target_params, online_params, alpha=1.0 - momentum)
    for t, o in zip(target.buffers(), online.buffers()):
        t.copy_(o)
