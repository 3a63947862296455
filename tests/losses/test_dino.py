"""DINO's loss (Caron et al. 2021, Eq. 3), centering (Eq. 4) and teacher temperature, written out."""

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses.dino import TeacherCentering, dino_cross_entropy, teacher_temperature


def naive_dino_loss(student, teacher, tau_s):
    """Eq. 3 written out: sum over teacher global views i, student views v != i, images b."""
    total, pairs = 0.0, 0
    for i, t in enumerate(teacher):
        for v, s in enumerate(student):
            if v == i:
                continue
            per_image = []
            for b in range(t.shape[0]):
                log_p = [s[b, k] / tau_s - math.log(sum(math.exp(x / tau_s) for x in s[b].tolist()))
                         for k in range(s.shape[1])]
                per_image.append(-sum(float(t[b, k]) * float(log_p[k]) for k in range(s.shape[1])))
            total += sum(per_image) / len(per_image)
            pairs += 1
    return total / pairs


def test_dino_cross_entropy_matches_explicit_pairs():
    torch.manual_seed(0)
    student = [torch.randn(3, 5, dtype=torch.float64) for _ in range(4)]  # 2 global + 2 local views
    teacher = [F.softmax(torch.randn(3, 5, dtype=torch.float64), dim=-1) for _ in range(2)]
    got = dino_cross_entropy(student, teacher, 0.1).item()
    assert got == pytest.approx(naive_dino_loss(student, teacher, 0.1), rel=1e-6)


def test_dino_cross_entropy_excludes_same_view_pairs():
    # Student view 0 equal to teacher view 0 and wildly different elsewhere: only v != i counts,
    # so changing student view 0 changes the loss only through the (teacher 1, student 0) pair.
    teacher = [F.softmax(torch.randn(2, 4), -1), F.softmax(torch.randn(2, 4), -1)]
    student = [torch.randn(2, 4), torch.randn(2, 4)]
    with_pairs = dino_cross_entropy(student, teacher, 0.1)
    expected = (-(teacher[1] * F.log_softmax(student[0] / 0.1, -1)).sum(-1).mean()
                - (teacher[0] * F.log_softmax(student[1] / 0.1, -1)).sum(-1).mean()) / 2
    assert with_pairs.item() == pytest.approx(expected.item(), rel=1e-6)


def test_center_is_an_ema_of_the_batch_mean_and_sharpens():
    torch.manual_seed(0)
    centering = TeacherCentering(6, momentum=0.9)
    start = torch.randn(6)
    centering.center.copy_(start)
    logits = torch.randn(10, 6)
    probs = centering.probabilities(logits, 0.04)
    assert torch.allclose(probs, F.softmax((logits - start) / 0.04, dim=-1))
    centering.update_(logits)
    assert torch.allclose(centering.center, 0.9 * start + 0.1 * logits.mean(0), atol=1e-6)


def test_teacher_temperature_warms_up_linearly_then_stays():
    assert teacher_temperature(0, 0.04, 0.07, 30) == pytest.approx(0.04)
    assert teacher_temperature(15, 0.04, 0.07, 30) == pytest.approx(0.055)
    assert teacher_temperature(30, 0.04, 0.07, 30) == pytest.approx(0.07)
    assert teacher_temperature(80, 0.04, 0.07, 30) == pytest.approx(0.07)
    assert teacher_temperature(3, 0.04, 0.07, 0) == pytest.approx(0.07)


def test_dino_cross_entropy_sends_no_gradient_to_the_teacher_and_is_permutation_invariant():
    torch.manual_seed(3)
    student = [torch.randn(4, 6, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    teacher = [F.softmax(torch.randn(4, 6, dtype=torch.float64), -1).requires_grad_() for _ in range(2)]
    loss = dino_cross_entropy(student, teacher, 0.1)
    perm = torch.randperm(4)
    permuted = dino_cross_entropy([s[perm] for s in student], [t[perm] for t in teacher], 0.1)
    assert permuted.item() == pytest.approx(loss.item(), rel=1e-12)
    loss.backward()
    # The method passes detached teacher targets; the loss itself only reads them.
    assert all(s.grad.abs().sum() > 0 for s in student)
    centering = TeacherCentering(6)
    assert not centering.probabilities(torch.randn(4, 6, requires_grad=True), 0.04).requires_grad
