"""Winograd F(4×4, 3×3) convolutions: the same numbers as F.conv2d, forward and backward, and
the same training step as the direct convolution; it steps aside wherever it does not apply."""

from __future__ import annotations

import copy
import os
import platform

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.backbones import build_backbone
from selfsup.config import make_config
from selfsup.errors import ConfigError
from selfsup.methods import build_method
from selfsup.ops import KernelUnavailable, WinogradConv2d, dense_conv3x3, use_direct, use_winograd, winograd_conv3x3
from selfsup.ops import winograd

pytestmark = pytest.mark.skipif(not winograd.is_available(), reason="no C compiler for the Winograd kernels")


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return ((value - reference).abs().max() / reference.abs().max()).item()


# (N, C, K, H, W): ragged tiles (7×5, 9×12), channel counts off the 16-lane blocks, a single tile,
# maps smaller than a tile, a ResNet stage.
SHAPES = [(2, 3, 5, 7, 5), (3, 17, 33, 9, 12), (2, 16, 16, 4, 4), (1, 20, 8, 2, 3), (4, 64, 64, 32, 32)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channels_last", [True, False])
def test_forward_and_gradients_match_conv2d(shape, channels_last):
    n, c, k, h, w = shape
    torch.manual_seed(0)
    x = torch.randn(n, c, h, w)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    weight = torch.randn(k, c, 3, 3, requires_grad=True)
    bias = torch.randn(k, requires_grad=True)
    out = winograd_conv3x3(x, weight, bias)
    reference = F.conv2d(x, weight, bias, padding=1)
    assert out.shape == reference.shape and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)
    # F(4×4, 3×3) rounds a little more than the direct sum (its transforms scale by up to 8): ~1e-5 relative.
    assert relative_error(out, reference) < 1e-4
    grad = torch.randn_like(reference)
    ours = torch.autograd.grad(out, (x, weight, bias), grad)
    theirs = torch.autograd.grad(reference, (x, weight, bias), grad)
    for name, a, b in zip(("input", "weight", "bias"), ours, theirs):
        assert relative_error(a, b) < 1e-4, name


@pytest.mark.parametrize("size", [(2, 2), (1, 2), (2, 1), (1, 1)])
def test_dense_gemm_on_tiny_maps_matches_conv2d(size):
    torch.manual_seed(0)
    x = torch.randn(5, 7, *size).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    weight = torch.randn(9, 7, 3, 3, requires_grad=True)
    bias = torch.randn(9, requires_grad=True)
    out, reference = dense_conv3x3(x, weight, bias), F.conv2d(x, weight, bias, padding=1)
    assert out.shape == reference.shape and out.is_contiguous(memory_format=torch.channels_last)
    assert relative_error(out, reference) < 1e-5
    grad = torch.randn_like(reference)
    for a, b in zip(torch.autograd.grad(out, (x, weight, bias), grad),
                    torch.autograd.grad(reference, (x, weight, bias), grad)):
        assert relative_error(a, b) < 1e-5
    with pytest.raises(ValueError, match="at most 2×2, got 3×2"):
        dense_conv3x3(torch.randn(1, 7, 3, 2), weight)


def test_only_the_gradients_asked_for_are_computed():
    x = torch.randn(2, 4, 8, 8)  # an image batch: no gradient wanted for it
    weight = torch.randn(6, 4, 3, 3, requires_grad=True)
    out = winograd_conv3x3(x, weight)
    (grad_w,) = torch.autograd.grad(out.square().sum(), weight)
    (reference,) = torch.autograd.grad(F.conv2d(x, weight, padding=1).square().sum(), weight)
    assert relative_error(grad_w, reference) < 1e-4


def test_bad_inputs_are_refused_with_the_shapes():
    with pytest.raises(ValueError, match=r"weight \(K, C, 3, 3\).*got x \(2, 4, 8, 8\) and weight \(6, 4, 5, 5\)"):
        winograd_conv3x3(torch.randn(2, 4, 8, 8), torch.randn(6, 4, 5, 5))
    with pytest.raises(ValueError, match="float32 CPU tensors, got torch.float64"):
        winograd_conv3x3(torch.randn(2, 4, 8, 8, dtype=torch.float64), torch.randn(6, 4, 3, 3, dtype=torch.float64))


def small_resnet_method(name: str = "simclr") -> nn.Module:
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", in_channels=1, small_stem=True, width=0.25)
    return build_method(name, backbone, {"projection_hidden_dim": 64, "projection_dim": 32}
                        if name == "simclr" else {"projection_hidden_dim": 64, "projection_dim": 32,
                                                  "prediction_hidden_dim": 64})


def test_use_winograd_switches_exactly_the_3x3_stride_1_convolutions():
    method = small_resnet_method()
    keys = list(method.state_dict())
    plain = [m for m in method.modules() if type(m) is nn.Conv2d]
    expected = [m for m in plain if m.kernel_size == (3, 3) and m.stride == (1, 1)]
    assert use_winograd(method) == len(expected) == 1 + 4 + 3 * 3  # stem, stage 1, stages 2-4 minus strided
    assert all(type(m) is WinogradConv2d for m in expected)
    assert all(type(m) is nn.Conv2d for m in plain if m not in expected)  # stride 2 and 1×1 stay
    assert list(method.state_dict()) == keys
    assert use_direct(method) == len(expected)
    assert not any(isinstance(m, WinogradConv2d) for m in method.modules())


@pytest.mark.parametrize("name", ["simclr", "byol"])
def test_training_steps_match_the_direct_convolution(name):
    """The same loss and gradients as the direct convolution, then the same losses over three SGD
    steps (BYOL: with its momentum encoder, whose forward runs without autograd)."""
    direct = small_resnet_method(name).to(memory_format=torch.channels_last)
    fast = copy.deepcopy(direct)
    assert use_winograd(fast) > 0
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (direct, fast)]
    generator = torch.Generator().manual_seed(1)
    for step in range(3):
        views = [torch.randn(16, 1, 16, 16, generator=generator).contiguous(memory_format=torch.channels_last)
                 for _ in range(2)]
        losses = []
        for model, optimizer in zip((direct, fast), optimizers):
            loss = model(views).loss
            optimizer.zero_grad()
            loss.backward()
            losses.append(loss.item())
        if step == 0:  # the arithmetic alone
            assert losses[1] == pytest.approx(losses[0], rel=1e-5)
            for (key, p), q in zip(direct.named_parameters(), fast.parameters()):
                if p.grad is not None:
                    # as in test_speedups: the stem's gradient sums many terms with cancellation
                    assert (p.grad - q.grad).norm() <= 5e-3 * p.grad.norm() + 1e-6, key
        else:
            # Rounding carried through updates at lr 0.1 with batch-16 BatchNorm grows: channels_last
            # against contiguous memory (both direct) drifts by ~1e-3 at the third step here.
            assert losses[1] == pytest.approx(losses[0], rel=2e-3)
        for optimizer in optimizers:
            optimizer.step()


def test_falls_back_to_the_direct_convolution_where_winograd_does_not_apply(monkeypatch):
    conv, narrow = nn.Conv2d(64, 64, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
    use_winograd(conv)
    use_winograd(narrow)
    assert type(conv) is WinogradConv2d and type(narrow) is WinogradConv2d

    def refuse(*args):
        raise AssertionError("selfsup kernel ran where the direct convolution should")

    monkeypatch.setattr(winograd._WinogradConv3x3, "apply", refuse)
    monkeypatch.setattr(winograd, "dense_conv3x3", refuse)
    x = torch.randn(2, 64, 8, 8)
    # 3×3 maps (neither algorithm's), float64, fewer than MIN_CHANNELS channels
    for module, inputs in ((conv, torch.randn(2, 64, 3, 3)), (conv, x.double()), (narrow, torch.randn(2, 16, 8, 8))):
        module.to(inputs.dtype)
        reference = F.conv2d(inputs, module.weight, module.bias, padding=1)
        assert torch.equal(module(inputs), reference)
        module.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(x).dtype == torch.bfloat16
    for inputs in (x, torch.randn(2, 64, 2, 2)):  # and where they apply, they run
        with pytest.raises(AssertionError, match="selfsup kernel ran"):
            conv(inputs)


def test_missing_compiler_warns_and_keeps_direct_convolutions(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(winograd, "_library", None)
    monkeypatch.setattr(winograd, "_library_error", None)
    monkeypatch.setenv("CC", "no-such-compiler")
    monkeypatch.setenv("SELFSUP_CACHE_DIR", str(tmp_path))
    conv = nn.Conv2d(4, 4, 3, padding=1)
    assert use_winograd(conv) == 0
    assert type(conv) is nn.Conv2d
    assert "C compiler 'no-such-compiler' not found" in caplog.text
    with pytest.raises(KernelUnavailable, match="no-such-compiler"):
        use_winograd(conv, strict=True)


def test_build_key_follows_the_cpu_and_the_compiler(monkeypatch):
    """A shared home directory on a mixed cluster: another CPU or another compiler is another binary."""
    from selfsup.ops import machine

    key = winograd.build_key("cc")
    assert winograd.build_key("cc") == key
    monkeypatch.setattr(machine, "cpu_key", lambda: "another-cpu")
    assert winograd.build_key("cc") != key
    monkeypatch.undo()
    monkeypatch.setattr(winograd, "compiler_identity", lambda compiler: "/usr/bin/gcc-99 gcc 99.0")
    assert winograd.build_key("cc") != key
    assert winograd.build_key("cc", "avx2") != winograd.build_key("cc", "generic")


def test_kernels_are_built_once_into_the_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(winograd, "_library", None)
    monkeypatch.setattr(winograd, "_library_error", None)
    monkeypatch.setenv("SELFSUP_CACHE_DIR", str(tmp_path))
    winograd.load_kernels()
    winograd_identity = winograd.compiler_identity(os.environ.get("CC") or "cc")
    built = list((tmp_path / "kernels").iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"  # no partial file left behind
    monkeypatch.setattr(winograd, "_library", None)

    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(winograd, "compiler_identity", lambda compiler: winograd_identity)
    monkeypatch.setattr(winograd.subprocess, "run", no_compiling)
    winograd.load_kernels()


def test_config_validates_the_convolution_choice():
    assert make_config().cpu.convolution == "auto"
    with pytest.raises(ConfigError, match="unknown cpu.convolution 'fft'; valid choices: auto, direct, winograd"):
        make_config(overrides=[{"cpu": {"convolution": "fft"}}]).validate()


@pytest.mark.parametrize("size", [8, 2])
def test_repeated_steps_are_bitwise_identical(size):
    """Exact resume needs deterministic kernels: the same inputs give the same bits every time
    (a scatter-add in the dense path's weight gradient once broke this)."""
    conv = nn.Conv2d(64, 64, 3, padding=1)
    use_winograd(conv)
    x = torch.randn(8, 64, size, size).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    results = []
    for _ in range(3):
        out = conv(x)
        results.append([out.detach(), *torch.autograd.grad(out.square().sum(), (x, conv.weight, conv.bias))])
    for again in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], again))


def _cpu_runs(variant: str) -> bool:
    from selfsup.ops.machine import has_flag

    needs = {"generic": [], "avx2": ["avx2", "fma"], "avx512": ["avx2", "fma", "avx512f"]}[variant]
    return all(has_flag(flag) for flag in needs)


@pytest.mark.parametrize("variant", ["generic", "avx2", "avx512"])
def test_each_kernel_build_matches_conv2d(variant):
    """The builds people's CPUs run: generic, AVX2 + FMA (compiled with only -mavx2 -mfma, tested here
    even on an AVX-512 machine) and AVX-512 where the CPU has it."""
    if not _cpu_runs(variant):
        pytest.skip(f"this CPU cannot run the {variant} build ({platform.machine()}, flags without {variant})")
    assert winograd.BUILD_FLAGS["avx2"] == ["-mavx2", "-mfma"]
    library = winograd.load_variant(variant)
    torch.manual_seed(0)
    for n, c, k, h, w in [(3, 17, 33, 9, 12), (2, 64, 64, 16, 16)]:
        x = torch.randn(n, c, h, w).contiguous(memory_format=torch.channels_last).requires_grad_(True)
        weight = torch.randn(k, c, 3, 3, requires_grad=True)
        with winograd.kernels_from(library):
            out = winograd_conv3x3(x, weight)
            grad = torch.randn_like(out)
            ours = torch.autograd.grad(out, (x, weight), grad)
        reference = F.conv2d(x, weight, padding=1)
        assert relative_error(out, reference) < 1e-4
        for a, b in zip(ours, torch.autograd.grad(reference, (x, weight), grad)):
            assert relative_error(a, b) < 1e-4
    assert winograd._library is not library or variant == winograd.build_variant()


def test_kernel_threads_end_with_the_call():
    """No process-wide pool: the transform threads live for one call, at most torch.get_num_threads()."""
    import threading

    conv = nn.Conv2d(64, 64, 3, padding=1)
    use_winograd(conv)
    conv(torch.randn(8, 64, 16, 16)).sum().backward()
    assert not [t for t in threading.enumerate() if t.name.startswith("selfsup-winograd")]
    assert winograd._threads_for(10**6) <= torch.get_num_threads()
