"""NT-Xent against the paper's formula written out as loops (Chen et al. 2020, Eq. 1 and Alg. 1)."""

import math

import pytest
import torch

from selfsup.losses import NTXentLoss


def naive_ntxent(z_a: torch.Tensor, z_b: torch.Tensor, tau: float) -> float:
    """Algorithm 1 of SimCLR: views 2k-1 and 2k of image k are positives; loop over all pairs."""
    z = []
    for a, b in zip(z_a, z_b):
        z += [a, b]
    n2 = len(z)

    def sim(u, v):
        return float(torch.dot(u, v) / (u.norm() * v.norm()))

    def ell(i, j):
        denom = sum(math.exp(sim(z[i], z[k]) / tau) for k in range(n2) if k != i)
        return -math.log(math.exp(sim(z[i], z[j]) / tau) / denom)

    total = 0.0
    for k in range(n2 // 2):
        total += ell(2 * k, 2 * k + 1) + ell(2 * k + 1, 2 * k)
    return total / n2


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_ntxent_matches_naive_reference(tau):
    torch.manual_seed(0)
    z_a, z_b = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    assert NTXentLoss(tau)(z_a, z_b).item() == pytest.approx(naive_ntxent(z_a, z_b, tau), rel=1e-9)


def test_ntxent_is_symmetric_and_permutation_invariant():
    torch.manual_seed(1)
    z_a, z_b = torch.randn(8, 4), torch.randn(8, 4)
    loss = NTXentLoss(0.5)
    perm = torch.randperm(8)
    assert loss(z_a, z_b).item() == pytest.approx(loss(z_b, z_a).item(), rel=1e-6)
    assert loss(z_a, z_b).item() == pytest.approx(loss(z_a[perm], z_b[perm]).item(), rel=1e-6)


def test_ntxent_low_when_views_agree_and_differ_from_others():
    eye = torch.eye(8)
    aligned = NTXentLoss(0.1)(eye, eye).item()
    shuffled = NTXentLoss(0.1)(eye, eye.roll(1, dims=0)).item()
    assert aligned < 0.01 < shuffled


def test_ntxent_gradients_reach_both_views():
    z_a = torch.randn(4, 3, requires_grad=True)
    z_b = torch.randn(4, 3, requires_grad=True)
    NTXentLoss(0.5)(z_a, z_b).backward()
    assert z_a.grad.abs().sum() > 0 and z_b.grad.abs().sum() > 0


def test_ntxent_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="equal shape"):
        NTXentLoss()(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(0.0)
