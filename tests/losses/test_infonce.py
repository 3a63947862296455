"""MoCo's InfoNCE (He et al. 2019, Eq. 1) and MoCo v3's symmetric in-batch form (Chen, Xie, He 2021,
Alg. 1) against the formulas written one query at a time."""

import math

import pytest
import torch
from torch import nn

from selfsup.losses.infonce import QueueInfoNCELoss, SymmetricInfoNCELoss, in_batch_infonce


def test_queue_infonce_matches_the_naive_formula():
    g = torch.Generator().manual_seed(0)
    q, k, queue = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g), torch.randn(11, 7, generator=g)
    tau = 0.07
    loss, logits = QueueInfoNCELoss(tau)(q, k, queue)

    def unit(v):
        return v / math.sqrt(sum(x * x for x in v.tolist()))

    total = 0.0
    for i in range(5):
        qi = unit(q[i])
        positive = math.exp(float(qi @ unit(k[i])) / tau)
        negatives = sum(math.exp(float(qi @ unit(n)) / tau) for n in queue)
        total += -math.log(positive / (positive + negatives))
    assert loss.item() == pytest.approx(total / 5, rel=1e-5)
    assert logits.shape == (5, 12)


def test_in_batch_infonce_is_symmetric_and_scaled_by_two_tau():
    g = torch.Generator().manual_seed(0)
    q1, q2, k1, k2 = (torch.randn(4, 6, generator=g) for _ in range(4))
    tau = 0.2

    def ctr(q, k):  # Alg. 1 of MoCo v3, one query at a time
        q, k = nn.functional.normalize(q, dim=1), nn.functional.normalize(k, dim=1)
        terms = []
        for i in range(len(q)):
            scores = [math.exp(float(q[i] @ k[j]) / tau) for j in range(len(k))]
            terms.append(-math.log(scores[i] / sum(scores)))
        return sum(terms) / len(terms) * 2 * tau

    expected = ctr(q1, k2) + ctr(q2, k1)
    assert SymmetricInfoNCELoss(tau)(q1, q2, k1, k2).item() == pytest.approx(expected, rel=1e-5)
    assert in_batch_infonce(q1, k2, tau).item() == pytest.approx(ctr(q1, k2), rel=1e-5)


def test_losses_reject_bad_shapes_and_temperatures():
    with pytest.raises(ValueError, match="temperature"):
        QueueInfoNCELoss(0.0)
    with pytest.raises(ValueError, match="negatives"):
        QueueInfoNCELoss()(torch.randn(2, 3), torch.randn(2, 3), torch.randn(4, 5))


def test_queue_infonce_in_float64_matches_an_explicit_softmax_and_ignores_the_queue_order():
    g = torch.Generator().manual_seed(3)
    q, k, queue = (torch.randn(n, 5, generator=g, dtype=torch.float64) for n in (4, 4, 9))
    tau = 0.2

    def unit(v):
        return v / v.norm()

    expected = 0.0
    for i in range(4):
        logits = [float(unit(q[i]) @ unit(k[i])) / tau] + [float(unit(q[i]) @ unit(n)) / tau for n in queue]
        expected -= logits[0] - math.log(sum(math.exp(x) for x in logits))
    loss, _ = QueueInfoNCELoss(tau)(q, k, queue)
    assert loss.item() == pytest.approx(expected / 4, rel=1e-12)
    shuffled, _ = QueueInfoNCELoss(tau)(q, k, queue[torch.randperm(9, generator=g)])
    assert shuffled.item() == pytest.approx(loss.item(), rel=1e-12)
