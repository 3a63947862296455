"""iBOT's masked-image-modelling loss (Zhou et al. 2022, Sec. 3.2).

The student sees a global view with some patches replaced by a mask token and, at every
masked position ``n``, predicts the teacher's distribution for the *unmasked* patch (the online
tokenizer): ``L_MIM = −Σ_n m_n · P_t(u_n)ᵀ log P_s(û_n)``. As in the reference code, each
image's sum is divided by its number of masked patches, then images are averaged — all images,
so an unmasked image counts as 0 and the term scales with the fraction of masked images.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from selfsup.losses.precision import full_precision


def masked_patch_cross_entropy(
    student_logits: Tensor, teacher_probs: Tensor, masks: Tensor, student_temperature: float
) -> Tensor:
    """Cross-entropy at the masked patches, averaged per image, then over all images.

    Args:
        student_logits: ``(M, K)`` student outputs at the masked patches, in the order of
            ``masks.nonzero()`` (row-major over images, then patches).
        teacher_probs: ``(M, K)`` teacher distributions at the same patches (detached).
        masks: ``(B, N)`` bool, ``M = masks.sum()``.
        student_temperature: τ_s (0.1).

    Returns:
        Scalar loss (0 when nothing is masked).
    """
    if student_logits.shape != teacher_probs.shape or student_logits.shape[0] != int(masks.sum()):
        raise ValueError(f"expected (M, K) logits and targets with M = masks.sum() = {int(masks.sum())}, got "
                         f"{tuple(student_logits.shape)} and {tuple(teacher_probs.shape)}")
    log_p = F.log_softmax(full_precision(student_logits) / student_temperature, dim=-1)
    per_patch = -(teacher_probs * log_p).sum(-1)  # (M,)
    # Weight 1/(masked patches of its image), so every masked image counts once.
    counts = masks.sum(dim=1, keepdim=True).clamp(min=1).to(per_patch.dtype)  # (B, 1)
    weights = (1.0 / counts).expand_as(masks)[masks]  # (M,)
    return (per_patch * weights).sum() / masks.shape[0]

