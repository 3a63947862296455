"""One schedule module, bit for bit the formulas it replaced.

Each ``old_*`` function below is the formula as it was written at its call site before issue 17
gathered them in :mod:`selfsup.schedules` (copied verbatim); every call site must now get exactly
the same float on a grid of inputs, so no learning rate, momentum or weight decay moved.
"""

from __future__ import annotations

import math

import pytest

from selfsup.schedules import cosine, cosine_at_step, warmup_cosine

GRID = [i / 997 for i in range(998)] + [0.1, 0.3, 0.5, 1 / 3, 2 / 3, 0.999999]


def old_cosine_momentum(base, progress, final=1.0):  # methods/momentum.py (BYOL, DINO, MoCo v3, weight decay)
    return final - (final - base) * (math.cos(math.pi * min(1.0, max(0.0, progress))) + 1) / 2


def old_warmup_cosine(step, total_steps, warmup_steps, min_ratio=0.0):  # engine/optim.py
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def old_protocol_lr(lr, step, total_steps):  # evaluation/linear.py, dense.py, finetune.py, distill.py
    return 0.5 * lr * (1.0 + math.cos(math.pi * step / total_steps))


@pytest.mark.parametrize("base,final", [(0.996, 1.0), (0.99, 1.0), (0.992, 1.0), (0.04, 0.4), (0.9, 0.999), (0.05, 0.05)])
def test_cosine_is_the_momentum_and_weight_decay_formula_bit_for_bit(base, final):
    for p in GRID + [-0.5, 1.5]:
        assert cosine(base, final, p) == old_cosine_momentum(base, p, final=final), p


@pytest.mark.parametrize("total,warmup,min_ratio", [(100, 10, 0.0), (37, 0, 0.0), (1000, 100, 0.001 / 0.3),
                                                    (4, 1, 0.01), (5, 4, 0.5)])
def test_warmup_cosine_is_the_old_learning_rate_factor_bit_for_bit(total, warmup, min_ratio):
    for step in range(total + 3):
        assert warmup_cosine(step, total, warmup, min_ratio) == old_warmup_cosine(step, total, warmup, min_ratio)


@pytest.mark.parametrize("lr", [0.1, 0.3, 1e-3, 0.05, 30.0, 0.017])
def test_cosine_at_step_is_the_protocols_decay_bit_for_bit(lr):
    for total in (1, 7, 100, 391):
        for step in range(total + 1):
            assert cosine_at_step(lr, 0.0, step, total) == old_protocol_lr(lr, step, total), (step, total)


def test_cosine_runs_from_start_to_end_and_stays_there():
    assert cosine(0.996, 1.0, 0.0) == pytest.approx(0.996)
    assert cosine(0.996, 1.0, 0.5) == pytest.approx(0.998)
    assert cosine(0.996, 1.0, 1.0) == pytest.approx(1.0)
    assert cosine(0.04, 0.4, 2.0) == 0.4 and cosine(0.04, 0.4, -1.0) == pytest.approx(0.04)
    values = [cosine(1.0, 0.0, p) for p in GRID[:998]]
    assert all(a >= b for a, b in zip(values, values[1:]))
