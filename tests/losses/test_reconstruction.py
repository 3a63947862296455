"""The masked reconstruction loss of context encoders (Pathak et al. 2016, Eq. 1) against a pixel loop."""

import itertools

import pytest
import torch

from selfsup.losses.reconstruction import MaskedReconstructionLoss


def test_reconstruction_loss_matches_a_naive_weighted_mean_and_ignores_the_context():
    prediction = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.randn(2, 3, 4, 4)
    weights = torch.zeros(2, 1, 4, 4)
    weights[:, :, 1:3, 1:3] = 1.0
    weights[0, 0, 0, 1] = 10.0
    loss = MaskedReconstructionLoss()(prediction, target, weights)
    total, norm = 0.0, 0.0
    for b, c, y, x in itertools.product(range(2), range(3), range(4), range(4)):
        w = float(weights[b, 0, y, x])
        total += w * float(prediction[b, c, y, x].detach() - target[b, c, y, x]) ** 2
        norm += w
    assert loss.item() == pytest.approx(total / norm, rel=1e-5)
    loss.backward()
    assert (prediction.grad * (weights == 0)).abs().sum() == 0  # context pixels get no gradient
    assert prediction.grad[:, :, 1:3, 1:3].abs().sum() > 0


def test_reconstruction_loss_in_float64_descends_to_the_target_inside_the_hole():
    torch.manual_seed(1)
    target = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    weights = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    weights[..., 1, :] = 1.0
    prediction = torch.zeros_like(target, requires_grad=True)
    optimizer = torch.optim.SGD([prediction], lr=1.0)
    for _ in range(100):
        loss = MaskedReconstructionLoss()(prediction, target, weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 1e-6
    torch.testing.assert_close(prediction.detach()[..., 1, :], target[..., 1, :])
    assert prediction.detach()[..., 0, :].abs().sum() == 0  # the context never moved
    assert MaskedReconstructionLoss()(prediction, target, torch.zeros_like(weights)).item() == 0.0
