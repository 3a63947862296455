"""Sinkhorn-Knopp normalisation of the teacher's outputs (DINOv2, Oquab et al. 2023, Sec. 4).

DINOv2 replaces DINO/iBOT's centering with SwAV's batch normalisation of the teacher scores
(Caron et al. 2020, Sec. 3.1 and Alg. 1): find ``Q = diag(u) · exp(S / τ) · diag(w)`` whose rows
(samples) are distributions and whose columns (prototypes) share the batch equally. Three
alternating row/column normalisations are enough in practice. Every prototype then receives
the same total mass ``N / K``, which rules out collapse onto few prototypes.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from selfsup.distributed import is_distributed, world_size


@torch.no_grad()
def sinkhorn_knopp(logits: Tensor, temperature: float | Tensor, iterations: int = 3) -> Tensor:
    """Teacher targets by Sinkhorn-Knopp over the samples of all processes.

    Args:
        logits: ``(N, K)`` teacher scores of this process's samples.
        temperature: τ_t of ``exp(S / τ)``.
        iterations: alternating normalisations (3 in SwAV and DINOv2).

    Returns:
        ``(N, K)`` float32 assignments: each row sums to 1; each column sums to about
        ``N_total / K`` of the global batch (exactly, in the limit of many iterations).
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    distributed = is_distributed() and world_size() > 1
    scores = logits.float() / temperature
    # Subtracting the global maximum changes nothing after normalisation but keeps exp finite.
    peak = scores.max()
    if distributed:
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    q = torch.exp(scores - peak).t()  # (K, N): prototypes × samples, SwAV's notation
    num_prototypes = q.shape[0]
    num_samples = torch.full((), float(q.shape[1]), device=q.device)  # a fill, not a blocking copy
    total = q.sum()
    if distributed:
        dist.all_reduce(num_samples)
        dist.all_reduce(total)
    q /= total
    for _ in range(iterations):
        # Each prototype (row) gets mass 1/K of the global batch …
        per_prototype = q.sum(dim=1, keepdim=True)
        if distributed:
            dist.all_reduce(per_prototype)
        q /= per_prototype * num_prototypes
        # … and each sample (column) mass 1/N.
        q /= q.sum(dim=0, keepdim=True) * num_samples
    return (q * num_samples).t()  # rows: one distribution per sample
