"""Thin helpers over ``torch.distributed`` so that every method also works in one CPU process.

Collectives only run when a process group is initialised (DDP under Lightning or torchrun);
otherwise each helper is the identity. Gathering uses ``torch.distributed.nn`` whose
``all_gather`` is differentiable: gradients flow back to the process that produced each row.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all processes along dim 0, keeping gradients.

    Args:
        x: ``(B, ...)`` the local rows.
    Returns:
        ``(world_size * B, ...)``, rows ordered by rank, so this process's rows start at
        ``rank() * B``.
    """
    if world_size() == 1:
        return x
    return torch.cat(dist_fn.all_gather(x), dim=0)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Like :func:`gather_with_grad` for tensors that need no gradient (queues, labels)."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)
