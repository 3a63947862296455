"""Barlow Twins (Zbontar et al. 2021, Eq. 1-2) against the cross-correlation written as a double loop."""

import math

import pytest
import torch
from torch import nn

from selfsup.losses.barlow_twins import BarlowTwinsLoss, cross_correlation, standardize
from selfsup.losses.vicreg import VICRegLoss


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def naive_barlow_twins(z_a, z_b, lam, eps=1e-5):
    """Eq. 1-2 with an explicit double loop over (i, j) of the cross-correlation matrix."""
    n, d = z_a.shape

    def standardised(z, b, i):
        m = sum(float(z[k, i]) for k in range(n)) / n
        var = sum((float(z[k, i]) - m) ** 2 for k in range(n)) / n  # BatchNorm: biased variance
        return (float(z[b, i]) - m) / math.sqrt(var + eps)

    loss = 0.0
    corr = [[0.0] * d for _ in range(d)]
    for i in range(d):
        for j in range(d):
            corr[i][j] = sum(standardised(z_a, b, i) * standardised(z_b, b, j) for b in range(n)) / n
            loss += (1 - corr[i][j]) ** 2 if i == j else lam * corr[i][j] ** 2
    return loss, corr


@pytest.mark.parametrize("lam", [5e-3, 0.5])
def test_barlow_twins_matches_the_double_loop(lam):
    z_a, z_b = rand(6, 4, seed=0) * 2 + 1, rand(6, 4, seed=1)
    expected, corr = naive_barlow_twins(z_a, z_b, lam)
    torch.testing.assert_close(cross_correlation(z_a, z_b), torch.tensor(corr, dtype=torch.float64))
    terms = BarlowTwinsLoss(lam)(z_a, z_b)
    assert terms.loss.dim() == 0 and terms.loss.dtype == torch.float64
    assert terms.loss.item() == pytest.approx(expected, rel=1e-10)


def test_barlow_twins_standardisation_is_affine_free_batchnorm():
    z = rand(8, 5, seed=4) * 3 + 2
    bn = nn.BatchNorm1d(5, affine=False).double().train()
    torch.testing.assert_close(standardize(z)[0], bn(z))
    # Identical views: C is the correlation matrix, diagonal 1 (up to ε), so on-diagonal ≈ 0.
    torch.testing.assert_close(cross_correlation(z, z, eps=0.0), torch.corrcoef(z.T))
    assert BarlowTwinsLoss()(z, z).on_diagonal.item() < 1e-8


def test_barlow_twins_and_vicreg_need_the_whole_batch():
    """Why the DDP test (test_noncontrastive_ddp.py) can fail: per-half statistics differ."""
    z_a, z_b = rand(8, 4, seed=5), rand(8, 4, seed=6)
    for loss in (lambda a, b: BarlowTwinsLoss()(a, b).loss, lambda a, b: VICRegLoss()(a, b).loss):
        halves = sum(loss(z_a[i:i + 4], z_b[i:i + 4]).item() for i in (0, 4)) / 2
        assert abs(halves - loss(z_a, z_b).item()) > 1e-3


def test_barlow_twins_is_invariant_to_the_order_of_the_batch():
    z_a, z_b = rand(7, 3, seed=9), rand(7, 3, seed=10)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(2))
    assert BarlowTwinsLoss()(z_a[perm], z_b[perm]).loss.item() == pytest.approx(
        BarlowTwinsLoss()(z_a, z_b).loss.item(), rel=1e-10)
