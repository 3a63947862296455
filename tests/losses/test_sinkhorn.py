"""Sinkhorn-Knopp teacher targets (SwAV, Caron et al. 2020, Alg. 1; DINOv2) against the algorithm
written with explicit loops over prototypes and samples."""

import math

import torch

from selfsup.losses.sinkhorn import sinkhorn_knopp


def naive_sinkhorn(scores, temperature, iterations):
    """SwAV's Algorithm 1, element by element in float64: Q = exp(S/τ)ᵀ / total, then alternately
    rows (prototypes) to 1/K and columns (samples) to 1/N; the result's columns scaled by N."""
    n, k = len(scores), len(scores[0])
    q = [[math.exp(scores[i][j] / temperature) for i in range(n)] for j in range(k)]  # (K, N)
    total = sum(sum(row) for row in q)
    q = [[x / total for x in row] for row in q]
    for _ in range(iterations):
        for j in range(k):
            s = sum(q[j])
            q[j] = [x / s / k for x in q[j]]
        for i in range(n):
            s = sum(q[j][i] for j in range(k))
            for j in range(k):
                q[j][i] = q[j][i] / s / n
    return [[q[j][i] * n for j in range(k)] for i in range(n)]  # (N, K)


def test_sinkhorn_knopp_marginals():
    torch.manual_seed(0)
    logits = torch.randn(12, 5)
    q = sinkhorn_knopp(logits, temperature=0.5, iterations=3)
    assert q.shape == (12, 5) and (q >= 0).all()
    assert torch.allclose(q.sum(1), torch.ones(12), atol=1e-5)  # each sample: a distribution
    assert torch.allclose(q.sum(0), torch.full((5,), 12 / 5), rtol=0.1)  # prototypes ~ equally used
    converged = sinkhorn_knopp(logits, temperature=0.5, iterations=300)
    assert torch.allclose(converged.sum(0), torch.full((5,), 12 / 5), rtol=1e-4)
    assert torch.allclose(converged.sum(1), torch.ones(12), atol=1e-5)
    # exp(S/τ) up to scaling of rows and columns: adding a constant changes nothing.
    assert torch.allclose(sinkhorn_knopp(logits + 100.0, 0.5), q, atol=1e-6)
    # Unlike a plain softmax, a prototype that every sample prefers does not take all the mass.
    biased = logits.clone()
    biased[:, 0] += 5.0
    assert sinkhorn_knopp(biased, 0.5, iterations=50)[:, 0].sum() < 12 / 5 * 1.05


def test_sinkhorn_knopp_matches_swavs_algorithm_written_out():
    torch.manual_seed(1)
    logits = torch.randn(7, 4, dtype=torch.float64)
    for iterations in (1, 3, 10):
        expected = torch.tensor(naive_sinkhorn(logits.tolist(), 0.3, iterations), dtype=torch.float64)
        # The implementation works in float32 (teacher scores), hence the tolerance.
        torch.testing.assert_close(sinkhorn_knopp(logits, 0.3, iterations).double(), expected, rtol=1e-5, atol=1e-6)


def test_sinkhorn_knopp_is_equivariant_to_the_order_of_samples():
    torch.manual_seed(3)
    logits = torch.randn(9, 5)
    perm = torch.randperm(9)
    torch.testing.assert_close(sinkhorn_knopp(logits[perm], 0.5), sinkhorn_knopp(logits, 0.5)[perm])
