"""SimSiam's symmetric negative cosine with stop-gradient (Chen & He 2021, Eq. 1-4) written per row."""

import pytest
import torch

from selfsup.losses.negative_cosine import SymmetricNegativeCosineLoss, negative_cosine


def cosine(u: torch.Tensor, v: torch.Tensor) -> float:
    return float(torch.dot(u, v) / (u.norm() * v.norm()))


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_simsiam_loss_matches_eq4():
    p_a, p_b, z_a, z_b = (rand(6, 5, seed=s) for s in range(4))
    expected = 0.5 * -sum(cosine(p_a[i], z_b[i]) for i in range(6)) / 6
    expected += 0.5 * -sum(cosine(p_b[i], z_a[i]) for i in range(6)) / 6
    assert SymmetricNegativeCosineLoss()(p_a, p_b, z_a, z_b).item() == pytest.approx(expected, rel=1e-12)
    assert SymmetricNegativeCosineLoss()(z_a, z_b, z_b, z_a).item() == pytest.approx(-1.0)


def test_simsiam_loss_stops_gradients_at_z():
    p_a, p_b = rand(4, 3, seed=0).requires_grad_(), rand(4, 3, seed=1).requires_grad_()
    z_a, z_b = rand(4, 3, seed=2).requires_grad_(), rand(4, 3, seed=3).requires_grad_()
    SymmetricNegativeCosineLoss()(p_a, p_b, z_a, z_b).backward()
    assert p_a.grad.abs().sum() > 0 and p_b.grad.abs().sum() > 0
    assert z_a.grad is None and z_b.grad is None


def test_negative_cosine_is_scale_and_permutation_invariant():
    p, z = rand(5, 3, seed=7), rand(5, 3, seed=8)
    perm = torch.randperm(5, generator=torch.Generator().manual_seed(1))
    assert negative_cosine(3.0 * p, 0.5 * z).item() == pytest.approx(negative_cosine(p, z).item(), rel=1e-12)
    assert negative_cosine(p[perm], z[perm]).item() == pytest.approx(negative_cosine(p, z).item(), rel=1e-12)
