"""VICReg (Bardes, Ponce, LeCun 2022, Eq. 1-6) against its terms written with explicit loops."""

import math

import pytest
import torch

from selfsup.losses.vicreg import VICRegLoss, covariance_term, variance_term


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def naive_vicreg(z_a, z_b, lam=25.0, mu=25.0, nu=1.0, gamma=1.0, eps=1e-4, variance_reduction="sum"):
    """Eq. 6 written out; ``variance_reduction="mean"`` halves the two hinges' sum as the authors'
    released code does (``std_loss = mean(relu(1 - std_x)) / 2 + mean(relu(1 - std_y)) / 2``)."""
    n, d = z_a.shape

    def mean(z, j):
        return sum(float(z[i, j]) for i in range(n)) / n

    def cov(z, j, k):
        mj, mk = mean(z, j), mean(z, k)
        return sum((float(z[i, j]) - mj) * (float(z[i, k]) - mk) for i in range(n)) / (n - 1)

    def v(z):  # Eq. 1-2
        return sum(max(0.0, gamma - math.sqrt(cov(z, j, j) + eps)) for j in range(d)) / d

    def c(z):  # Eq. 3-4
        return sum(cov(z, j, k) ** 2 for j in range(d) for k in range(d) if j != k) / d

    s = sum(float(z_a[i, j] - z_b[i, j]) ** 2 for i in range(n) for j in range(d)) / (n * d)
    variance = v(z_a) + v(z_b)
    if variance_reduction == "mean":
        variance = v(z_a) / 2 + v(z_b) / 2
    return lam * s + mu * variance + nu * (c(z_a) + c(z_b)), s, variance, c(z_a) + c(z_b)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("scale", [0.3, 3.0])  # below and above γ = 1: hinge active / inactive
def test_vicreg_terms_match_the_paper(scale, reduction):
    z_a, z_b = rand(7, 5, seed=0) * scale, rand(7, 5, seed=1) * scale
    total, s, v, c = naive_vicreg(z_a, z_b, variance_reduction=reduction)
    terms = VICRegLoss(variance_reduction=reduction)(z_a, z_b)
    assert terms.loss.dim() == 0 and terms.loss.dtype == torch.float64
    assert terms.invariance.item() == pytest.approx(s, rel=1e-10)
    assert terms.variance.item() == pytest.approx(v, rel=1e-10, abs=1e-12)
    assert terms.covariance.item() == pytest.approx(c, rel=1e-10)
    assert terms.loss.item() == pytest.approx(total, rel=1e-10)
    weighted = VICRegLoss(2.0, 3.0, 0.5, variance_reduction=reduction)(z_a, z_b).loss.item()
    assert weighted == pytest.approx(naive_vicreg(z_a, z_b, 2.0, 3.0, 0.5, variance_reduction=reduction)[0], rel=1e-10)
    if scale > 1:
        assert v == 0.0


def test_vicreg_defaults_to_the_released_codes_variance_weight():
    """The default halves Eq. 6's variance sum (the code behind the paper's numbers); "sum" keeps
    Eq. 6 as printed; anything else is refused."""
    z_a, z_b = rand(7, 5, seed=0) * 0.3, rand(7, 5, seed=1) * 0.3
    mean, summed = VICRegLoss()(z_a, z_b), VICRegLoss(variance_reduction="sum")(z_a, z_b)
    assert mean.variance.item() > 0
    assert summed.variance.item() == pytest.approx(2 * mean.variance.item(), rel=1e-12)
    with pytest.raises(ValueError, match="variance_reduction"):
        VICRegLoss(variance_reduction="median")


def test_vicreg_variance_and_covariance_vanish_for_whitened_embeddings():
    # Orthogonal columns with norm sqrt(n-1): unit variance, zero covariance.
    q, _ = torch.linalg.qr(rand(16, 4, seed=3) - rand(16, 4, seed=3).mean(0))
    z = q - q.mean(0)
    z = z / z.std(dim=0) * 1.5
    assert variance_term(z).item() == 0.0
    assert covariance_term(z).item() < 1e-12
