"""Every speed-up keeps the numbers: the same loss and gradients with and without it."""

from __future__ import annotations

import copy
import json
import platform

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
            # Summation order (and oneDNN's algorithm, which depends on the thread count) differs
            # between the layouts: the first conv's gradient sums thousands of terms with
            # cancellation and moves ~1e-3 relative; a layout bug moves it by O(1).
            assert (p.grad - q.grad).norm() <= 5e-3 * p.grad.norm() + 1e-6, name


@pytest.mark.parametrize("method_name", sorted(SMALL_HEADS))
def test_bf16_autocast_trains_with_close_loss_and_finite_gradients(method_name):
    """Mixed precision (``trainer.precision=bf16-mixed``): the loss stays close to float32's,
    the losses' own arithmetic stays in float32, and every gradient is finite."""
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", in_channels=1, small_stem=True, width=0.25)
    method = build_method(method_name, backbone, SMALL_HEADS[method_name])
    views = [torch.randn(8, 1, 16, 16) for _ in range(2)]
    torch.manual_seed(1)
    full = method(views).loss
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = method(views).loss
    assert mixed.dtype == torch.float32, "the loss itself should be computed in float32"
    # bf16 keeps ~3 significant digits through the network: a loose but meaningful tolerance.
    assert mixed.item() == pytest.approx(full.item(), rel=3e-2)
    mixed.backward()
    grads = [p.grad for p in method.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


STEP_IN_A_FRESH_PROCESS = """
    import json, sys, torch
    from selfsup.backbones import build_backbone
    from selfsup.ops import tune_cpu_allocator
    from selfsup.methods import build_method
    state = tune_cpu_allocator() if sys.argv[1] == "tuned" else "system"
    torch.set_num_threads(1)
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", in_channels=1, small_stem=True, width=0.25)
    method = build_method("simclr", backbone, {"projection_hidden_dim": 64, "projection_dim": 32})
    method = method.to(memory_format=torch.channels_last)
    views = [torch.randn(64, 1, 32, 32).contiguous(memory_format=torch.channels_last) for _ in range(2)]
    losses = []
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):  # later steps run on memory the earlier ones freed
        loss = method(views).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    print(json.dumps({"state": state, "losses": losses,
                      "params": [p.detach().double().sum().item() for p in method.parameters()]}))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt tuning is glibc's")
def test_tuned_allocator_trains_to_the_same_numbers(fresh_python):
    """The allocator only moves where tensors live: three SimCLR steps give the same losses and weights."""
    results = {setting: json.loads(fresh_python(STEP_IN_A_FRESH_PROCESS, setting)) for setting in ("system", "tuned")}
    assert results["tuned"]["state"] == "tuned"
    assert results["tuned"]["losses"] == pytest.approx(results["system"]["losses"], rel=1e-6)
    assert results["tuned"]["params"] == pytest.approx(results["system"]["params"], rel=1e-6, abs=1e-9)
