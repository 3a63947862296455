"""The colorization loss (Zhang, Isola, Efros 2016): soft cross-entropy (Eq. 2) and class-rebalancing
weights (Eq. 3-4) against explicit loops."""

import torch

from selfsup.losses.colorization import ClassRebalancing, soft_cross_entropy
from selfsup.transforms.color import ab_gamut_bins


def test_rebalancing_weights_have_expectation_one_and_follow_eq_4():
    bins = ab_gamut_bins()
    rebalancing = ClassRebalancing(bins, mix=0.5, sigma=5.0)
    assert torch.allclose(rebalancing.weights(), torch.ones(len(bins)))  # nothing seen yet
    histogram = torch.zeros(len(bins), dtype=torch.int64)
    grey = int(((bins - 0) ** 2).sum(1).argmin())
    histogram[grey] = 1000
    histogram[:50] += torch.arange(50)
    rebalancing.update_(histogram)
    p = rebalancing.distribution()
    w = rebalancing.weights()
    assert torch.isclose(p.sum(), torch.tensor(1.0), atol=1e-5)
    assert torch.isclose((p * w).sum(), torch.tensor(1.0), atol=1e-5)
    # Naive Eq. 4: smooth the histogram with a Gaussian kernel per bin, mix with uniform, invert.
    empirical = histogram.double() / histogram.sum()
    smoothed = torch.zeros(len(bins), dtype=torch.float64)
    for r in range(len(bins)):
        kernel = torch.exp(-((bins.double() - bins[r].double()) ** 2).sum(1) / (2 * 25.0))
        smoothed += empirical[r] * kernel / kernel.sum()
    naive = 1 / (0.5 * smoothed + 0.5 / len(bins))
    naive = naive / (smoothed * naive).sum()
    assert torch.allclose(w.double(), naive, rtol=1e-4)
    assert w[grey] < 1 < w.max()  # the common colour is down-weighted, rare ones up


def test_soft_cross_entropy_matches_naive_loops():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 3, 2)
    target = torch.softmax(torch.randn(2, 5, 3, 2), dim=1)
    weights = torch.rand(2, 3, 2)
    total = 0.0
    for b in range(2):
        for h in range(3):
            for w in range(2):
                log_p = torch.log_softmax(logits[b, :, h, w], dim=0)
                total += -weights[b, h, w] * (target[b, :, h, w] * log_p).sum()
    assert torch.isclose(soft_cross_entropy(logits, target, weights), total / 12, atol=1e-6)


def test_soft_cross_entropy_in_float64_is_the_formula_and_is_minimised_by_the_target():
    torch.manual_seed(1)
    target = torch.softmax(torch.randn(1, 4, 2, 2, dtype=torch.float64), dim=1)
    logits = torch.randn(1, 4, 2, 2, dtype=torch.float64)
    expected = 0.0
    for h in range(2):
        for w in range(2):
            z = sum(torch.exp(logits[0, q, h, w]) for q in range(4))
            expected -= sum(target[0, q, h, w] * torch.log(torch.exp(logits[0, q, h, w]) / z) for q in range(4))
    assert torch.isclose(soft_cross_entropy(logits, target).double(), expected / 4, rtol=1e-6)
    # Gibbs: the cross-entropy is smallest when the prediction is the target itself.
    assert soft_cross_entropy(target.log(), target) < soft_cross_entropy(logits, target)
