"""Schedules of a value over training: the half-cosine of SGDR and its linear warm-up.

One formula serves the learning rate (SGDR, Loshchilov & Hutter 2017, without restarts), the
momentum of EMA targets (BYOL, Grill et al. 2020, Sec. 3.2; DINO's teacher) and DINO's weight
decay (Caron et al. 2021, App. B). This module imports nothing of selfsup, so every layer
(methods, evaluation, engine, applications) may use it.

The arithmetic is written once, in one order, so that every caller gets the same float for the
same inputs: ``end + (start − end)·½·(1 + cos(π·p))``.
"""

from __future__ import annotations

import math


def cosine(start: float, end: float, progress: float) -> float:
    """``end + (start − end)·½·(1 + cos(π·p))``: ``start`` at ``p = 0``, ``end`` at ``p = 1``.

    ``progress`` is clamped to ``[0, 1]``, so the value stays at ``end`` after the schedule.
    """
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))


def cosine_at_step(start: float, end: float, step: int, total_steps: int) -> float:
    """:func:`cosine` at ``step`` of ``total_steps``, with the angle computed as ``π·step / total_steps``
    (the per-step decay of the evaluation protocols; no clamping: callers stay below ``total_steps``)."""
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak value at ``step``: linear warm-up from 0, then half a cosine down
    to ``min_ratio`` at ``total_steps`` (SGDR, Loshchilov & Hutter 2017, without restarts)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    return cosine(1.0, min_ratio, (step - warmup_steps) / decay_steps)


__all__ = ["cosine", "cosine_at_step", "warmup_cosine"]
