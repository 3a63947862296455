"""Instance discrimination over a memory bank (Wu et al. 2018): NCE (Sec. 3.2) and the exact
non-parametric softmax (Sec. 3.1) against their formulas written with explicit loops."""

import math

import pytest
import torch
from torch import nn

from selfsup.losses.nce import InstanceSoftmaxLoss, NCELoss


def unit_rows(*shape, seed=0):
    return nn.functional.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_nce_loss_matches_the_paper_formula():
    f, v, noise = unit_rows(4, 5, seed=0), unit_rows(4, 5, seed=1), unit_rows(7, 5, seed=2)
    tau, n, z = 0.07, 1000, 350.0
    got = NCELoss(tau, n)(f, v, noise, torch.tensor(math.log(z)))
    m, p_n = 7, 1.0 / n
    total = 0.0
    for i in range(4):
        p_data = math.exp(float(f[i] @ v[i]) / tau) / z
        total -= math.log(p_data / (p_data + m * p_n))
        for j in range(m):
            p_noise = math.exp(float(f[i] @ noise[j]) / tau) / z
            total -= math.log(1 - p_noise / (p_noise + m * p_n))
    assert got.item() == pytest.approx(total / 4, rel=1e-5)


def test_nce_normaliser_is_the_monte_carlo_estimate():
    f, noise = unit_rows(3, 5, seed=0), unit_rows(6, 5, seed=1)
    tau, n = 0.1, 500
    expected = n * sum(math.exp(float(f[i] @ noise[j]) / tau) for i in range(3) for j in range(6)) / 18
    assert NCELoss(tau, n).estimate_log_normalizer(f, noise).item() == pytest.approx(math.log(expected), rel=1e-6)


def test_softmax_loss_matches_the_explicit_softmax():
    f, bank = unit_rows(3, 4, seed=0), unit_rows(9, 4, seed=1)
    indices = torch.tensor([2, 7, 0])
    tau = 0.07
    total = 0.0
    for row, i in enumerate(indices.tolist()):
        scores = [math.exp(float(f[row] @ bank[j]) / tau) for j in range(9)]
        total -= math.log(scores[i] / sum(scores))
    assert InstanceSoftmaxLoss(tau)(f, bank, indices).item() == pytest.approx(total / 3, rel=1e-5)


def test_softmax_positives_equal_a_bank_holding_them():
    loss = InstanceSoftmaxLoss(temperature=0.1)
    bank, positives, indices = unit_rows(20, 8, seed=1), unit_rows(4, 8, seed=2), torch.tensor([3, 7, 1, 12])
    query = unit_rows(4, 8, seed=3).requires_grad_()
    got = loss(query, bank, indices, positives=positives)
    (grad_got,) = torch.autograd.grad(got, query)
    expected = loss(query, bank.index_copy(0, indices, positives), indices)
    (grad_expected,) = torch.autograd.grad(expected, query)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(grad_got, grad_expected)
    assert torch.equal(bank, unit_rows(20, 8, seed=1))  # the bank itself is not written


def test_nce_in_float64_matches_the_posterior_formula_and_sends_no_gradient_to_the_bank():
    g = torch.Generator().manual_seed(4)
    f = nn.functional.normalize(torch.randn(3, 4, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    v = nn.functional.normalize(torch.randn(3, 4, generator=g, dtype=torch.float64), dim=1)
    noise = nn.functional.normalize(torch.randn(5, 4, generator=g, dtype=torch.float64), dim=1)
    tau, n, z = 0.1, 200, 80.0
    loss = NCELoss(tau, n)(f, v, noise, torch.tensor(math.log(z), dtype=torch.float64))
    expected, rows = 0.0, f.detach()
    for i in range(3):  # h(i, f) = P(i|f) / (P(i|f) + m·P_n), Eq. 6-7
        p = math.exp(float(rows[i] @ v[i]) / tau) / z
        expected -= math.log(p / (p + 5 / n))
        for j in range(5):
            p = math.exp(float(rows[i] @ noise[j]) / tau) / z
            expected -= math.log(1 - p / (p + 5 / n))
    assert loss.item() == pytest.approx(expected / 3, rel=1e-12)
    loss.backward()
    assert f.grad.abs().sum() > 0 and not v.requires_grad and not noise.requires_grad
