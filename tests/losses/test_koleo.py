"""The KoLeo regulariser (Sablayrolles et al. 2019; DINOv2) against the nearest-neighbour formula."""

import math

import pytest
import torch

from selfsup.losses.koleo import koleo_loss


def naive_koleo(x):
    x = [v / v.norm() for v in x]
    total = 0.0
    for i, xi in enumerate(x):
        nearest = min(float((xi - xj).norm()) for j, xj in enumerate(x) if j != i)
        total += math.log(nearest + 1e-8)
    return -total / len(x)


def test_koleo_equals_the_nearest_neighbour_formula():
    torch.manual_seed(0)
    x = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    loss = koleo_loss(x)
    assert loss.item() == pytest.approx(naive_koleo(x.detach()), rel=1e-6)
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    spread = koleo_loss(torch.eye(4))  # orthogonal: every neighbour at distance sqrt(2)
    assert spread.item() == pytest.approx(-math.log(math.sqrt(2)), rel=1e-6)
    with pytest.raises(ValueError):
        koleo_loss(torch.randn(1, 3))


def test_koleo_descent_spreads_points_apart():
    torch.manual_seed(2)
    x = (torch.randn(6, 3, dtype=torch.float64) * 0.05 + torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    x.requires_grad_()
    optimizer = torch.optim.SGD([x], lr=0.05)
    before = naive_koleo(x.detach())
    for _ in range(50):
        loss = koleo_loss(x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert naive_koleo(x.detach()) < before - 0.5
    perm = torch.randperm(6)
    assert koleo_loss(x.detach()[perm]).item() == pytest.approx(koleo_loss(x.detach()).item(), rel=1e-12)
