"""NT-Xent with memory negatives (SimCLR v2) against Eq. 1 of SimCLR written one anchor at a time."""

import torch
import torch.nn.functional as F

from selfsup.losses.ntxent import NTXentLoss
from selfsup.losses.ntxent_memory import NTXentMemoryLoss


def naive_ntxent_with_memory(z_a, z_b, memory, temperature):
    """Eq. 1 of SimCLR with the memory's keys as extra negatives, one anchor at a time."""
    views = [F.normalize(v, dim=0) for v in torch.cat([z_a, z_b])]
    bank = [F.normalize(m, dim=0) for m in memory] if memory is not None else []
    n = z_a.shape[0]
    losses = []
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        numerator = torch.exp(torch.dot(views[i], views[j]) / temperature)
        denominator = sum(torch.exp(torch.dot(views[i], views[k]) / temperature) for k in range(2 * n) if k != i)
        denominator = denominator + sum(torch.exp(torch.dot(views[i], m) / temperature) for m in bank)
        losses.append(-torch.log(numerator / denominator))
    return torch.stack(losses).mean()


def test_memory_loss_matches_naive_formula():
    torch.manual_seed(0)
    z_a, z_b = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    memory = torch.randn(5, 6, dtype=torch.float64)
    loss = NTXentMemoryLoss(0.3, gather_distributed=False)
    torch.testing.assert_close(loss(z_a, z_b, memory), naive_ntxent_with_memory(z_a, z_b, memory, 0.3))
    # Without memory it is SimCLR's NT-Xent.
    torch.testing.assert_close(loss(z_a, z_b), NTXentLoss(0.3, gather_distributed=False)(z_a, z_b))


def test_memory_keys_get_no_gradient():
    z_a, z_b = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    memory = torch.randn(6, 4, requires_grad=True)
    NTXentMemoryLoss(0.5)(z_a, z_b, memory).backward()
    assert memory.grad is None and z_a.grad.abs().sum() > 0


def test_memory_loss_is_invariant_to_the_order_of_images_and_memory():
    torch.manual_seed(2)
    z_a, z_b = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    memory = torch.randn(7, 4, dtype=torch.float64)
    loss = NTXentMemoryLoss(0.2, gather_distributed=False)
    rows, slots = torch.randperm(5), torch.randperm(7)
    torch.testing.assert_close(loss(z_a[rows], z_b[rows], memory[slots]), loss(z_a, z_b, memory))
