"""DINO's self-distillation loss and teacher centering (Caron et al. 2021, Sec. 3.1, Eq. 2-4).

The teacher's output on each global view ``i`` is centred and sharpened into a distribution
``P_t = softmax((g_t(x_i) − c) / τ_t)``; the student's output on every view ``v`` gives
``P_s = softmax(g_s(x_v) / τ_s)``. The loss is the cross-entropy ``H(P_t, P_s) = −Σ_k P_t log P_s``
summed over all pairs with ``v ≠ i`` (Eq. 3; a view is never its own target), here averaged
over pairs and images as in the reference implementation. Centering (an EMA of the teacher's
batch mean, Eq. 4) and sharpening (a low τ_t) pull in opposite directions so that neither
collapse — one dimension dominating, or a uniform output — can happen.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.distributed import is_distributed, world_size
from selfsup.losses.precision import full_precision


def dino_cross_entropy(
    student_logits: Sequence[Tensor], teacher_probs: Sequence[Tensor], student_temperature: float
) -> Tensor:
    """Mean over pairs ``(i, v)``, ``v ≠ i``, of ``mean_b −Σ_k P_t^i[b, k] log softmax(s^v[b] / τ_s)_k``.

    Args:
        student_logits: one ``(B, K)`` tensor per student view, global views first, so that
            view ``i < len(teacher_probs)`` is the same crop as the teacher's view ``i``.
        teacher_probs: one ``(B, K)`` distribution per global view (centred, sharpened, detached).
        student_temperature: τ_s (0.1).

    Returns:
        Scalar loss.
    """
    if not teacher_probs or len(student_logits) < 2:
        raise ValueError("dino_cross_entropy needs >= 1 teacher view and >= 2 student views")
    total = student_logits[0].new_zeros(())
    pairs = 0
    for v, logits in enumerate(student_logits):
        log_p = F.log_softmax(full_precision(logits) / student_temperature, dim=-1)  # (B, K)
        for i, target in enumerate(teacher_probs):
            if i == v:  # same crop: nothing to predict (Eq. 3, x' ≠ x)
                continue
            total = total - (target * log_p).sum(dim=-1).mean()
            pairs += 1
    return total / pairs


def teacher_temperature(progress_epochs: float, warmup_start: float, final: float, warmup_epochs: float) -> float:
    """τ_t: linear warm-up from ``warmup_start`` (0.04) to ``final`` (0.04-0.07) over the first
    ``warmup_epochs`` (30), then constant (Caron et al. 2021, "Implementation details"; a too-hot teacher early on
    makes training unstable). ``progress_epochs`` counts epochs as a float (step-wise schedule)."""
    if warmup_epochs <= 0 or progress_epochs >= warmup_epochs:
        return final
    return warmup_start + (final - warmup_start) * max(0.0, progress_epochs) / warmup_epochs


class TeacherCentering(nn.Module):
    """The centre ``c`` of Eq. 4: ``c ← m·c + (1 − m)·mean_b g_t(x_b)``, over the global batch.

    Args:
        dim: ``K``.
        momentum: ``m`` (0.9).

    The centre is a buffer (saved in checkpoints); :meth:`update_` changes it and is called by
    the method's ``on_step_end``, never during the forward pass.
    """

    center: Tensor

    def __init__(self, dim: int, momentum: float = 0.9) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"center momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(dim))

    @torch.no_grad()
    def probabilities(self, teacher_logits: Tensor, temperature: float | Tensor) -> Tensor:
        """``softmax((logits − c) / τ_t)``: ``(..., K) → (..., K)``, computed in float32."""
        return F.softmax((full_precision(teacher_logits) - self.center) / temperature, dim=-1)

    @torch.no_grad()
    def update_(self, teacher_logits: Tensor) -> None:
        """Move the centre towards the mean of ``teacher_logits`` ``(N, K)`` over every process."""
        batch_sum = full_precision(teacher_logits).sum(dim=0).to(self.center.dtype)  # (K,)
        count = torch.full((), float(teacher_logits.shape[0]), device=batch_sum.device)  # a fill, not a blocking copy
        if is_distributed() and world_size() > 1:
            # The sum, not the gathered outputs: world × N × K floats would not fit for K = 65536.
            dist.all_reduce(batch_sum)
            dist.all_reduce(count)
        self.center.mul_(self.momentum).add_(batch_sum / count, alpha=1.0 - self.momentum)
