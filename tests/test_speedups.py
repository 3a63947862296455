"""Every speed-up keeps the numbers: the same loss and gradients with and without it."""

from __future__ import annotations

import copy

import pytest
import torch

from selfsup.backbones import build_backbone
from selfsup.methods import build_method


SMALL_HEADS = {
    "simclr": {"projection_hidden_dim": 64, "projection_dim": 32},
    "byol": {"projection_hidden_dim": 64, "projection_dim": 32, "prediction_hidden_dim": 64},
    "dino": {"out_dim": 128, "head_hidden_dim": 64, "head_bottleneck_dim": 32},
}


@pytest.mark.parametrize("method_name", sorted(SMALL_HEADS))
def test_channels_last_gives_the_same_loss_and_gradients(method_name):
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", in_channels=1, small_stem=True, width=0.25)
    contiguous = build_method(method_name, backbone, SMALL_HEADS[method_name])
    nhwc = copy.deepcopy(contiguous).to(memory_format=torch.channels_last)
    views = [torch.randn(8, 1, 16, 16) for _ in range(2)]
    torch.manual_seed(1)
    loss = contiguous(views).loss
    torch.manual_seed(1)
    loss_nhwc = nhwc([v.contiguous(memory_format=torch.channels_last) for v in views]).loss
    assert loss_nhwc.item() == pytest.approx(loss.item(), rel=1e-4, abs=1e-5)
    loss.backward()
    loss_nhwc.backward()
    for (name, p), q in zip(contiguous.named_parameters(), nhwc.parameters()):
        if p.grad is not None:
            # Summation order differs between the layouts: compare with a norm-relative tolerance.
            assert (p.grad - q.grad).norm() <= 1e-4 * p.grad.norm() + 1e-6, name
