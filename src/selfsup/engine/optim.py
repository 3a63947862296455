"""Optimizers and per-step learning-rate schedules."""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Tuple

import torch
from timm.optim import Lars
from torch import nn

from selfsup.config import OptimConfig
from selfsup.schedules import warmup_cosine


def scaled_lr(cfg: OptimConfig, global_batch_size: int) -> float:
    """The paper's learning-rate scaling rule (SimCLR App. B.1: lr = 0.3 × B/256 with LARS)."""
    ratio = global_batch_size / 256
    if cfg.lr_scaling == "linear":
        return cfg.lr * ratio
    if cfg.lr_scaling == "sqrt":
        return cfg.lr * math.sqrt(ratio)
    return cfg.lr


def split_decay_groups(
    named_parameters: Iterable[Tuple[str, nn.Parameter]], exclude_bias_and_norm: bool
) -> Tuple[List[nn.Parameter], List[nn.Parameter]]:
    """(decayed, not decayed). Biases and normalisation weights — every 0-/1-D tensor — get no
    weight decay and, under LARS, no trust-ratio adaptation (SimCLR App. B.1; BYOL App. C)."""
    decay, no_decay = [], []
    for _, param in named_parameters:
        if not param.requires_grad:
            continue
        (no_decay if exclude_bias_and_norm and param.ndim <= 1 else decay).append(param)
    return decay, no_decay


def build_optimizer(
    cfg: OptimConfig, groups: List[Dict], global_batch_size: int
) -> torch.optim.Optimizer:
    """Create the optimizer for param ``groups`` (dicts with ``params`` and optional ``lr`` /
    ``weight_decay``; a group without ``lr`` gets the scaled base learning rate).

    Every group remembers its peak rate in ``initial_lr`` so the schedule can scale it per step.
    """
    base_lr = scaled_lr(cfg, global_batch_size)
    for group in groups:
        group.setdefault("lr", base_lr)
        group.setdefault("weight_decay", cfg.weight_decay)
        group["initial_lr"] = group["lr"]
    groups = [g for g in groups if g["params"]]
    if cfg.name == "lars":
        return Lars(groups, lr=base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                    trust_coeff=cfg.trust_coefficient)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=base_lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step warm-up + cosine, applied to every group relative to its own peak rate; a group
    marked ``constant_lr`` keeps its peak rate throughout (SimSiam's predictor, Sec. 4.2)."""
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
    warmup_steps = min(warmup_steps, max(0, total_steps - 1))
    scheduled = [g["initial_lr"] for g in optimizer.param_groups if not g.get("constant_lr")]
    peak = max(scheduled, default=0.0)
    min_ratio = cfg.min_lr / peak if peak > 0 else 0.0

    def cosine(step: int) -> float:
        return warmup_cosine(step, total_steps, warmup_steps, min_ratio)

    def constant(step: int) -> float:
        return 1.0

    factors = [constant if g.get("constant_lr") else cosine for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
