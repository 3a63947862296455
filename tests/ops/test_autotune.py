"""cpu.convolution=auto: per layer shape, the faster of the fast path and PyTorch's convolution,
measured once per machine, cached, and reported in one line; the numbers stay those of a convolution.
Also trainer.precision=auto and the CpuSpeedups callback that applies both."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.config import make_config
from selfsup.ops import autotune, machine, precision, winograd
from selfsup.ops.autotune import ConvolutionAutotuner, LayerShape
from selfsup.ops.winograd import AutotunedConv2d, use_direct, use_winograd

needs_kernels = pytest.mark.skipif(not winograd.is_available(), reason="no C compiler for the Winograd kernels")


class FakeTimings:
    """Injected timings: Winograd wins on 64-channel layers, loses on 128-channel ones."""

    def __init__(self) -> None:
        self.calls = []

    def __call__(self, shape: LayerShape):
        self.calls.append(shape)
        return (10.0, 6.0) if shape.in_channels == 64 else (10.0, 14.0)


def spy(monkeypatch, fast_calls):
    real = winograd._WinogradConv3x3.apply

    def counting(*args):
        fast_calls.append(tuple(args[0].shape))
        return real(*args)

    monkeypatch.setattr(winograd._WinogradConv3x3, "apply", counting)


@needs_kernels
def test_picks_the_faster_of_the_two_per_shape_and_the_numbers_stay(monkeypatch, tmp_path):
    timings = FakeTimings()
    tuner = ConvolutionAutotuner(tmp_path / "tune.json", measure=timings)
    monkeypatch.setattr(autotune, "AUTOTUNER", tuner)
    wins, loses = nn.Conv2d(64, 64, 3, padding=1), nn.Conv2d(128, 128, 3, padding=1)
    assert use_winograd(wins, autotune=True) == 1 and use_winograd(loses, autotune=True) == 1
    assert type(wins) is AutotunedConv2d
    fast_calls = []
    spy(monkeypatch, fast_calls)
    for conv, channels in ((wins, 64), (loses, 128)):
        x = torch.randn(4, channels, 8, 8, requires_grad=True)
        out = conv(x)
        reference = F.conv2d(x, conv.weight, conv.bias, padding=1)
        assert ((out - reference).abs().max() / reference.abs().max()).item() < 1e-4
    assert fast_calls == [(4, 64, 8, 8)]  # Winograd only where it measured faster
    assert [s.in_channels for s in timings.calls] == [64, 128] and timings.calls[0].backward
    with torch.no_grad():  # forward-only use is its own shape: measured separately
        wins(torch.randn(4, 64, 8, 8))
    assert len(timings.calls) == 3 and not timings.calls[2].backward
    assert use_direct(wins) == 1 and type(wins) is nn.Conv2d


@needs_kernels
def test_a_cache_hit_measures_nothing_and_a_damaged_cache_is_remeasured(monkeypatch, tmp_path, caplog):
    path = tmp_path / "tune.json"
    shape = LayerShape("winograd", 4, 64, 64, 8, 8, "float32", True, True, 2)
    first = FakeTimings()
    assert ConvolutionAutotuner(path, measure=first).choice(shape).fast and len(first.calls) == 1
    stored = json.loads(path.read_text())["choices"]
    assert stored == {shape.key(): {"direct_ms": 10.0, "fast_ms": 6.0}}

    def refuse(shape):
        raise AssertionError("measured again despite the cache")

    again = ConvolutionAutotuner(path, measure=refuse).choice(shape)
    assert again.fast and again.source == "cache"
    path.write_text("{not json")
    remeasured = FakeTimings()
    assert ConvolutionAutotuner(path, measure=remeasured).choice(shape).fast and len(remeasured.calls) == 1
    assert "ignoring the convolution autotune cache" in caplog.text


@needs_kernels
def test_cache_key_differs_by_cpu_compiler_and_torch(monkeypatch):
    key = autotune.machine_cache_key()
    assert autotune.machine_cache_key() == key
    monkeypatch.setattr(machine, "cpu_key", lambda: "another-cpu")
    assert autotune.machine_cache_key() != key
    monkeypatch.undo()
    monkeypatch.setattr(winograd, "compiler_identity", lambda compiler: "/opt/clang-42 clang 42")
    assert autotune.machine_cache_key() != key
    monkeypatch.undo()
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    assert autotune.machine_cache_key() != key
    shape = LayerShape("winograd", 4, 64, 64, 8, 8, "float32", True, True, 2)
    assert len({shape.key(), LayerShape("winograd", 4, 64, 64, 8, 8, "float32", False, True, 2).key(),
                LayerShape("winograd", 4, 64, 64, 8, 8, "float32", True, True, 4).key()}) == 3


def test_cpu_key_follows_the_cpu_model_and_flags(monkeypatch):
    key = machine.cpu_key()
    monkeypatch.setattr(machine, "cpu_model", lambda: "Some Other CPU")
    assert machine.cpu_key() != key
    monkeypatch.undo()
    monkeypatch.setattr(machine, "isa_flags", lambda: ["NEON"])
    assert machine.cpu_key() != key


def test_the_choice_is_logged_once_per_run_as_one_line(caplog):
    tuner = ConvolutionAutotuner(False, measure=FakeTimings())
    shapes = [LayerShape("winograd", 4, c, c, 8, 8, "float32", True, True, 2) for c in (64, 128)]
    shapes.append(LayerShape("dense", 4, 64, 64, 2, 2, "float32", True, True, 2))
    for shape in shapes:
        tuner.choice(shape)
    with caplog.at_level(logging.INFO, logger="selfsup.ops.autotune"):
        line = tuner.log_summary()
        for shape in shapes:  # later steps use the same shapes: nothing more is logged
            tuner.choice(shape)
        assert tuner.log_summary() is None
    assert line == ("cpu convolution autotune: 3 shapes (3 measured now, 0 read from memory (no cache file)): "
                    "winograd for 1 (1.67× as fast as direct), dense GEMM for 1 (1.67× as fast as direct), "
                    "direct for 1 (the fast path ran 0.71× as fast)")
    assert [r.getMessage() for r in caplog.records] == [line]


@needs_kernels
def test_the_real_measurement_times_both_and_leaves_the_rng_alone():
    state = torch.get_rng_state()
    direct_ms, fast_ms = autotune.measure(LayerShape("winograd", 2, 64, 64, 8, 8, "float32", True, True, 1), repeats=1)
    assert direct_ms > 0 and fast_ms > 0
    assert torch.equal(torch.get_rng_state(), state)


def test_precision_auto_is_float32_off_the_cpu_and_without_native_bf16(monkeypatch, tmp_path):
    monkeypatch.setenv("SELFSUP_CACHE_DIR", str(tmp_path))
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten())

    def probe(*args, **kwargs):
        raise AssertionError("probed")

    assert precision.resolve_precision("bf16-mixed", True) == "bf16-mixed"
    assert precision.resolve_precision("auto", False, backbone, (2, 3, 8, 8), probe=probe) == "32-true"
    monkeypatch.setattr(precision, "native_bf16", lambda: False)
    assert precision.resolve_precision("auto", True, backbone, (2, 3, 8, 8), probe=probe) == "32-true"


@pytest.mark.parametrize("timings, expected", [((100.0, 50.0), "bf16-mixed"), ((100.0, 95.0), "32-true")])
def test_precision_auto_picks_bf16_where_it_measures_faster_and_caches_it(monkeypatch, tmp_path, timings, expected):
    monkeypatch.setenv("SELFSUP_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten())
    calls = []
    probe = lambda *args, **kwargs: calls.append(1) or timings  # noqa: E731
    assert precision.resolve_precision("auto", True, backbone, (2, 3, 8, 8), "tiny", probe=probe) == expected
    assert precision.resolve_precision("auto", True, backbone, (2, 3, 8, 8), "tiny", probe=probe) == expected
    assert len(calls) == 1  # the second run read the cache


def test_the_bf16_probe_leaves_the_model_and_rng_alone():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Dropout(0.5), nn.Flatten())
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    state = torch.get_rng_state()
    float32_ms, bf16_ms = precision.probe_bf16(backbone, (4, 3, 8, 8), repeats=1)
    assert float32_ms > 0 and bf16_ms > 0
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    assert torch.equal(torch.get_rng_state(), state)


@needs_kernels
def test_the_callback_switches_convolutions_per_setting_and_only_on_the_cpu():
    from selfsup.ops import CpuSpeedups

    class Module(nn.Module):
        def __init__(self):
            super().__init__()
            self.method = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1))

    for setting, on_cpu, expected in (("auto", True, AutotunedConv2d), ("winograd", True, winograd.WinogradConv2d),
                                      ("direct", True, nn.Conv2d), ("auto", False, nn.Conv2d)):
        config = make_config(overrides=[{"cpu": {"convolution": setting}}])
        module = Module()
        callback = CpuSpeedups(config, None, None, on_cpu)
        assert callback.precision == "32-true"
        callback.setup(None, module, "fit")
        assert type(module.method[0]) is expected, (setting, on_cpu)
    auto = make_config(overrides=[{"trainer": {"precision": "auto"}}])
    assert CpuSpeedups(auto, None, None, on_cpu=False).precision == "32-true"
