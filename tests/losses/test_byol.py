"""BYOL's symmetrised regression loss (Grill et al. 2020, Eq. 2) against ``2 − 2·cos`` written per row."""

import pytest
import torch

from selfsup.losses.byol import BYOLLoss, normalized_mse


def cosine(u: torch.Tensor, v: torch.Tensor) -> float:
    return float(torch.dot(u, v) / (u.norm() * v.norm()))


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_byol_loss_is_symmetrised_two_minus_two_cosine():
    q_a, q_b, t_a, t_b = (rand(5, 7, seed=s) for s in range(4))
    expected = sum(2 - 2 * cosine(q_a[i], t_b[i]) for i in range(5)) / 5
    expected += sum(2 - 2 * cosine(q_b[i], t_a[i]) for i in range(5)) / 5
    loss = BYOLLoss()(q_a, q_b, t_a, t_b)
    assert loss.dim() == 0 and loss.dtype == torch.float64
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    # ‖q/‖q‖ − z/‖z‖‖² is the same quantity (Eq. 2).
    direct = (q_a / q_a.norm(dim=1, keepdim=True) - t_b / t_b.norm(dim=1, keepdim=True)).pow(2).sum(1)
    torch.testing.assert_close(normalized_mse(q_a, t_b), direct)


def test_byol_loss_sends_no_gradient_to_targets():
    q_a, q_b = rand(4, 3, seed=0).requires_grad_(), rand(4, 3, seed=1).requires_grad_()
    t_a, t_b = rand(4, 3, seed=2).requires_grad_(), rand(4, 3, seed=3).requires_grad_()
    BYOLLoss()(q_a, q_b, t_a, t_b).backward()
    assert q_a.grad.abs().sum() > 0 and q_b.grad.abs().sum() > 0
    assert t_a.grad is None and t_b.grad is None


def test_byol_loss_is_permutation_invariant_and_descends_to_zero_on_a_toy_problem():
    q_a, q_b, t_a, t_b = (rand(6, 4, seed=s) for s in range(10, 14))
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    assert BYOLLoss()(q_a[perm], q_b[perm], t_a[perm], t_b[perm]).item() == pytest.approx(
        BYOLLoss()(q_a, q_b, t_a, t_b).item(), rel=1e-12)
    pred_a, pred_b = q_a.clone().requires_grad_(), q_b.clone().requires_grad_()
    optimizer = torch.optim.SGD([pred_a, pred_b], lr=0.5)
    losses = []
    for _ in range(200):
        loss = BYOLLoss()(pred_a, pred_b, t_a, t_b)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 1e-3 < losses[0]
