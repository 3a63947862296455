"""CPC's InfoNCE over a patch grid (van den Oord et al. 2018, Eq. 4) against explicit loops."""

import math

import torch

from selfsup.losses.cpc import CPCInfoNCELoss, cpc_infonce_terms


def naive_cpc_loss(predictions, embeddings, candidates=None):
    """Explicit loops over offsets, images, rows and columns; each query scores its positive and
    every candidate patch except the positive itself (Eq. 4)."""
    batch, rows, cols, _ = embeddings.shape
    flat = [(b, r, c) for b in range(batch) for r in range(rows) for c in range(cols)]
    if candidates is None:
        candidates = list(range(len(flat)))
    per_offset = []
    for k, prediction in enumerate(predictions, start=1):
        losses = []
        for b in range(batch):
            for r in range(rows - k):
                for c in range(cols):
                    q = prediction[b, r, c]
                    target = (b, r + k, c)
                    positive = torch.dot(q, embeddings[target])
                    scores = [positive] + [torch.dot(q, embeddings[flat[i]]) for i in candidates
                                           if flat[i] != target]
                    losses.append(-(positive - torch.logsumexp(torch.stack(scores), dim=0)))
        per_offset.append(torch.stack(losses).mean())
    return torch.stack(per_offset)


def test_infonce_matches_naive_loop_with_all_patches_as_negatives():
    torch.manual_seed(0)
    z = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    predictions = [torch.randn(2, 4 - k, 3, 5, dtype=torch.float64) for k in (1, 2, 3)]
    terms = cpc_infonce_terms(predictions, z)
    torch.testing.assert_close(terms, naive_cpc_loss(predictions, z))
    torch.testing.assert_close(CPCInfoNCELoss()(predictions, z), naive_cpc_loss(predictions, z).mean())


def test_infonce_with_sampled_negatives_matches_naive_loop():
    torch.manual_seed(1)
    z = torch.randn(3, 3, 2, 4, dtype=torch.float64)
    predictions = [torch.randn(3, 3 - k, 2, 4, dtype=torch.float64) for k in (1, 2)]
    loss = CPCInfoNCELoss(num_negatives=7)(predictions, z, generator=torch.Generator().manual_seed(5))
    candidates = torch.randperm(18, generator=torch.Generator().manual_seed(5))[:7].tolist()
    torch.testing.assert_close(loss, naive_cpc_loss(predictions, z, candidates).mean())


def test_infonce_is_log_of_candidates_when_scores_are_equal():
    z = torch.zeros(2, 3, 3, 4)
    predictions = [torch.zeros(2, 2, 3, 4)]
    # 18 patches: the positive and 17 negatives, all scoring 0 → log(18).
    assert math.isclose(CPCInfoNCELoss()(predictions, z).item(), math.log(18), rel_tol=1e-6)


def test_infonce_gradients_reach_predictions_and_embeddings():
    z = torch.randn(2, 3, 3, 4, requires_grad=True)
    predictions = [torch.randn(2, 2, 3, 4, requires_grad=True)]
    CPCInfoNCELoss()(predictions, z).backward()
    assert predictions[0].grad.abs().sum() > 0 and z.grad.abs().sum() > 0
