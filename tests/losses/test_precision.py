"""Losses compute in float32 under mixed precision: ``full_precision`` and the losses that use it."""

import pytest
import torch

from selfsup.losses.byol import normalized_mse
from selfsup.losses.dino import dino_cross_entropy
from selfsup.losses.koleo import koleo_loss
from selfsup.losses.precision import full_precision


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_becomes_float32_with_the_same_values(dtype):
    x = torch.randn(5, 3).to(dtype)
    y = full_precision(x)
    assert y.dtype == torch.float32 and torch.equal(y, x.float())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64])
def test_other_dtypes_pass_through_untouched(dtype):
    x = torch.arange(6).to(dtype)
    assert full_precision(x) is x


def test_losses_on_bf16_inputs_equal_the_float32_losses_of_the_same_values():
    """2 − 2·cos near 0, softmaxes over logits of size 1/τ and nearest-neighbour distances are
    computed in float32: a bf16 input gives exactly the loss of its float32 copy."""
    torch.manual_seed(0)
    p = torch.randn(8, 16).to(torch.bfloat16)
    t = (p.float() + 1e-3 * torch.randn(8, 16)).to(torch.bfloat16)
    close = normalized_mse(p, t)
    assert close.dtype == torch.float32
    torch.testing.assert_close(close, normalized_mse(p.float(), t.float()), rtol=0, atol=0)
    teacher = [torch.softmax(t.float(), dim=-1)]
    torch.testing.assert_close(dino_cross_entropy([p, t], teacher, 0.1),
                               dino_cross_entropy([p.float(), t.float()], teacher, 0.1), rtol=0, atol=0)
    torch.testing.assert_close(koleo_loss(p), koleo_loss(p.float()), rtol=0, atol=0)
