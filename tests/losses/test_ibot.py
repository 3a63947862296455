"""iBOT's masked-patch cross-entropy (Zhou et al. 2022, Sec. 3.2) against per-image loops."""

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses.ibot import masked_patch_cross_entropy


def test_masked_patch_loss_matches_per_image_loops():
    torch.manual_seed(0)
    masks = torch.tensor([[1, 0, 1, 1], [0, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.bool)
    student_all = torch.randn(3, 4, 6, dtype=torch.float64)
    teacher_all = F.softmax(torch.randn(3, 4, 6, dtype=torch.float64), -1)
    got = masked_patch_cross_entropy(student_all[masks], teacher_all[masks], masks, 0.1).item()
    total = 0.0
    for b in range(3):
        terms = []
        for n in range(4):
            if masks[b, n]:
                logits = student_all[b, n] / 0.1
                log_z = math.log(sum(math.exp(v) for v in logits.tolist()))
                terms.append(-sum(float(teacher_all[b, n, k]) * (float(logits[k]) - log_z) for k in range(6)))
        total += sum(terms) / max(1, len(terms))  # an unmasked image contributes 0
    assert got == pytest.approx(total / 3, rel=1e-9)


def test_masked_patch_loss_is_zero_without_masks_and_invariant_to_the_order_of_images():
    torch.manual_seed(1)
    masks = torch.tensor([[1, 0, 1], [0, 1, 1]], dtype=torch.bool)
    student = torch.randn(2, 3, 5, dtype=torch.float64)
    teacher = F.softmax(torch.randn(2, 3, 5, dtype=torch.float64), -1)
    loss = masked_patch_cross_entropy(student[masks], teacher[masks], masks, 0.1)
    swapped = masks.flip(0)
    flipped = masked_patch_cross_entropy(student.flip(0)[swapped], teacher.flip(0)[swapped], swapped, 0.1)
    assert flipped.item() == pytest.approx(loss.item(), rel=1e-12)
    none = torch.zeros(2, 3, dtype=torch.bool)
    assert masked_patch_cross_entropy(student[none], teacher[none], none, 0.1).item() == 0.0
