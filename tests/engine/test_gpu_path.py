"""The GPU-facing training path, on the CPU: augment mode choice, split views end to end, views made in
transfer_batch_to_device (identical to the old hook; side stream on CUDA), the sync-free online probe,
and trainer.compile (validation, eager fallback, a real compile marked slow)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from selfsup.config import make_config, parse_override
from selfsup.data import DatasetInfo, FolderDataset, TensorImageDataset
from selfsup.engine import train
from selfsup.engine.compile import CompiledForward
from selfsup.engine.module import SelfSupervisedModule
from selfsup.engine.overlap import ViewsMade, ViewStream
from selfsup.engine.trainer import augment_mode
from selfsup.errors import ConfigError
from selfsup.transforms import ViewConfig
from selfsup.transforms.split_views import PhotometricViews

COLOR = DatasetInfo("color", 3, 2, 16, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def config(*settings: str):
    return make_config(overrides=[parse_override(s) for s in settings])


def test_auto_splits_folder_views(shapes_folder: Path) -> None:
    folder = FolderDataset(shapes_folder / "train")
    in_memory = TensorImageDataset(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), None, COLOR)
    assert augment_mode(config("trainer.accelerator=cpu"), folder) == "split"
    assert augment_mode(config("trainer.accelerator=gpu"), folder) == "split"
    assert augment_mode(config("trainer.accelerator=cpu"), in_memory) == "batched"
    assert augment_mode(config("trainer.accelerator=gpu"), in_memory) == "batched"
    assert augment_mode(config("trainer.accelerator=cpu", "augment=split"), folder) == "split"
    assert augment_mode(config("trainer.accelerator=gpu", "augment=per-image"), folder) == "per-image"
    with pytest.raises(ConfigError, match="valid choices: auto, batched, per-image, split"):
        config("augment=gpu")


def test_split_views_train_end_to_end(tmp_path: Path, monkeypatch) -> None:
    from conftest import write_image_folder
    from engine.test_engine import tiny_config

    data = tmp_path / "data"
    for split, per_class in (("train", 12), ("test", 4)):  # each class its own image size, as photos vary
        write_image_folder(data / split, classes=("small",), per_class=per_class, channels=3, size=20)
        write_image_folder(data / split, classes=("large",), per_class=per_class, channels=3, size=33, seed=1)
    calls = []
    original = PhotometricViews.forward

    def spy(self, crops, generator=None):
        calls.append([(c.dtype, tuple(c.shape)) for c in crops])
        return original(self, crops, generator)

    monkeypatch.setattr(PhotometricViews, "forward", spy)
    result = train(tiny_config(data, tmp_path / "run", "epochs=1", "augment=split"))
    assert result.steps == 3 and len(calls) == 3
    assert all(shapes == [(torch.uint8, (8, 3, 16, 16))] * 2 for shapes in calls)


def transfer(m: SelfSupervisedModule, batch, device: torch.device):
    """What Lightning's batch transfer handler calls, in its order."""
    return m.on_after_batch_transfer(m.transfer_batch_to_device(batch, device, 0), 0)


def module(*settings: str, split: bool = False) -> SelfSupervisedModule:
    cfg = config("backbone=resnet18", "backbone_args={small_stem: true, width: 0.125}",
                 "method_args={projection_hidden_dim: 32, projection_dim: 16}", *settings)
    m = SelfSupervisedModule(cfg, COLOR, batch_views=ViewConfig.simclr(), num_samples=8, split_views=split)
    m.trainer = SimpleNamespace(training=True)
    return m


@pytest.mark.parametrize("split", [False, True], ids=["batched", "split"])
def test_views_made_at_transfer_equal_the_after_transfer_hook(split: bool) -> None:
    m = module(split=split)
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    inputs = [images, images.flip(3)] if split else [images]
    batch = (inputs, torch.zeros(8, dtype=torch.long), torch.arange(8))
    torch.manual_seed(3)
    made = transfer(m, batch, torch.device("cpu"))
    assert isinstance(made, ViewsMade)
    torch.manual_seed(3)
    direct = m._make_views(batch)
    assert len(made[0]) == len(direct[0]) == 2
    assert all(torch.equal(a, b) for a, b in zip(made[0], direct[0]))
    assert m.on_after_batch_transfer(made, 0) is made  # not augmented twice
    m.trainer = SimpleNamespace(training=False)  # evaluation batches pass untouched
    untouched = transfer(m, batch, torch.device("cpu"))[0]
    assert len(untouched) == len(inputs) and all(torch.equal(a, b) for a, b in zip(untouched, inputs))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for the side stream")
def test_side_stream_views_equal_default_stream_views() -> None:
    m = module(split=True).cuda()
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8).pin_memory()
    batch = ([images, images.flip(3).contiguous().pin_memory()], torch.zeros(8, dtype=torch.long), torch.arange(8))
    torch.manual_seed(3)
    made = transfer(m, batch, torch.device("cuda", 0))
    torch.manual_seed(3)
    direct = m._make_views(([t.cuda() for t in batch[0]], batch[1].cuda(), batch[2].cuda()))
    assert m.views_stream.streams and all(torch.equal(a, b) for a, b in zip(made[0], direct[0]))


def test_view_stream_runs_in_place_off_cuda() -> None:
    stream = ViewStream()
    out = stream.run(lambda: ([torch.ones(2)], 1, 2), torch.device("cpu"))
    assert isinstance(out, ViewsMade) and out[1:] == (1, 2) and not stream.streams


def test_probe_loss_ignores_unlabelled_rows_without_indexing() -> None:
    m = module("trainer.compile=false")
    features = torch.randn(6, m.encoder.feature_dim)
    labels = torch.tensor([0, 1, -1, 1, -1, 0])
    kept = labels >= 0
    logits = m.probe(features)
    reference = torch.nn.functional.cross_entropy(logits[kept], labels[kept])
    weights = kept.float()
    ours = (torch.nn.functional.cross_entropy(logits, labels.clamp(min=0), reduction="none") * weights).sum() \
        / weights.sum()
    torch.testing.assert_close(ours, reference)


@pytest.mark.parametrize("value, expected", [("true", True), ("false", False), ("reduce-overhead", "reduce-overhead"),
                                             ("max-autotune", "max-autotune")])
def test_compile_setting_parses(value: str, expected) -> None:
    assert config(f"trainer.compile={value}").trainer.compile == expected


def test_compile_setting_refuses_unknown_modes() -> None:
    with pytest.raises(ConfigError, match="unknown trainer.compile 'fastest'; valid choices: false, true, default"):
        config("trainer.compile=fastest")


def test_compile_failure_falls_back_to_eager_with_one_line(monkeypatch, caplog) -> None:
    def broken_compile(fn, mode=None):
        def run(*args):
            raise RuntimeError("backend exploded\nwith a long\ntraceback")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    method = lambda_module(torch.nn.Linear(3, 2))
    forward = CompiledForward(method, True)
    x = torch.randn(4, 3)
    with caplog.at_level(logging.WARNING, logger="selfsup.engine.compile"):
        out = forward([x], None)
        out_again = forward([x], None)
    torch.testing.assert_close(out, method([x], None))
    torch.testing.assert_close(out_again, method([x], None))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "\n" not in warnings[0] and "backend exploded with a long traceback" in warnings[0]


def lambda_module(linear: torch.nn.Linear) -> torch.nn.Module:
    class Method(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = linear

        def forward(self, views, indices):
            return self.linear(views[0])

    return Method()


def test_no_compile_means_the_eager_method() -> None:
    method = lambda_module(torch.nn.Linear(3, 2))
    forward = CompiledForward(method, False)
    assert forward._compiled is None and forward.mode is None


@pytest.mark.slow
def test_compile_trains_a_tiny_method_with_eager_results() -> None:
    torch.manual_seed(0)
    m = module("trainer.compile=true")
    eager = module("trainer.compile=false")
    eager.method.load_state_dict(m.method.state_dict())
    views = [torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)]
    compiled_out = m.compiled_forward(views, torch.arange(4))
    eager_out = eager.compiled_forward(views, torch.arange(4))
    assert m.compiled_forward._proven
    torch.testing.assert_close(compiled_out.loss, eager_out.loss, atol=1e-4, rtol=1e-4)
    assert list(m.state_dict()) == list(eager.state_dict())  # checkpoints keep the eager keys
