"""What the engine and evaluation promise every method: hooks in order, schedules, wrapped encoders.

A test-only method (registered for the duration of a test) exercises the contract the method
families rely on: ``on_before_optimizer_step`` / ``on_step_end`` calls, the weight-decay schedule,
a backbone with fewer input channels than the data, and an ``encoder()`` that wraps the backbone
and must survive checkpoint loading, export and the random-init floor.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from selfsup.engine import train
from selfsup.evaluation import export_encoder, load_encoder
from selfsup.methods import METHODS, SimCLR
from selfsup.methods.momentum import ema_update_, frozen_copy
from selfsup.schedules import cosine

from engine.test_engine import tiny_config


class GrayEncoder(nn.Module):
    """RGB -> mean channel -> backbone: an encoder that is more than the backbone."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = backbone.feature_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x.mean(dim=1, keepdim=True))


class GraySimCLR(SimCLR):
    """SimCLR on the mean channel, recording the hook calls it receives."""

    @classmethod
    def backbone_in_channels(cls, data_channels, config):
        return 1

    def __init__(self, backbone, config=None, data=None):
        super().__init__(backbone, config, data)
        self.wrapped = GrayEncoder(backbone)
        self.calls: list[tuple[str, int]] = []

    def encoder(self) -> nn.Module:
        return self.wrapped

    def forward(self, views, indices=None):
        return super().forward([v.mean(dim=1, keepdim=True) for v in views], indices)

    def on_before_optimizer_step(self, progress):
        self.calls.append(("before", progress.step))

    def on_step_end(self, output, progress):
        self.calls.append(("end", progress.step))


@pytest.fixture
def gray_simclr(monkeypatch):
    monkeypatch.setitem(METHODS._entries, "gray-simclr", GraySimCLR)
    return "gray-simclr"


@pytest.fixture
def colour_data(tmp_path) -> Path:
    from conftest import write_image_folder

    write_image_folder(tmp_path / "data" / "train", per_class=12, channels=3, seed=0)
    write_image_folder(tmp_path / "data" / "test", per_class=4, channels=3, seed=1)
    return tmp_path / "data"


class RecordHooks(Callback):
    def __init__(self):
        self.weight_decays: list[float] = []
        self.calls = None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.weight_decays.append(trainer.optimizers[0].param_groups[0]["weight_decay"])
        self.calls = module.method.calls


def test_hooks_run_in_order_and_weight_decay_follows_its_schedule(gray_simclr, colour_data, tmp_path):
    recorder = RecordHooks()
    config = tiny_config(colour_data, tmp_path / "run", f"method={gray_simclr}", "optim.weight_decay=0.04",
                         "optim.weight_decay_end=0.4")
    train(config, callbacks=[recorder])
    # Before the update the step is the one being taken; after it, the number of steps done.
    assert recorder.calls == [call for step in range(6) for call in (("before", step), ("end", step + 1))]
    expected = [cosine(0.04, 0.4, step / 6) for step in range(6)]
    assert recorder.weight_decays == pytest.approx(expected)
    assert recorder.weight_decays[0] == pytest.approx(0.04) and recorder.weight_decays[-1] > 0.35


def test_a_wrapped_encoder_survives_checkpoint_export_and_floor(gray_simclr, colour_data, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(colour_data, out, f"method={gray_simclr}", "epochs=1"))
    ckpt = torch.load(out / "last.ckpt", weights_only=False)
    assert ckpt["state_dict"]["method.backbone.conv1.weight"].shape[1] == 1  # backbone_in_channels
    assert ckpt["selfsup"]["num_samples"] == 24

    loaded = load_encoder(str(out / "last.ckpt"))
    assert isinstance(loaded.encoder, GrayEncoder) and loaded.in_channels == 3
    stored = {k[len("method.backbone."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("method.backbone.")}
    for key, value in loaded.encoder.backbone.state_dict().items():
        assert torch.equal(value, stored[key]), key

    images = torch.rand(2, 3, 16, 16)
    loaded.encoder.eval()
    exported = load_encoder(str(export_encoder(loaded, tmp_path / "encoder.pt")))
    exported.encoder.eval()
    assert isinstance(exported.encoder, GrayEncoder)
    assert torch.equal(exported.encoder(images), loaded.encoder(images))

    floor = load_encoder("random", loaded.backbone, loaded.backbone_args, 3, method=loaded.method)
    assert isinstance(floor.encoder, GrayEncoder) and floor.encoder(images).shape == (2, loaded.encoder.feature_dim)


def test_plain_backbone_methods_still_load_as_the_backbone(colour_data, tmp_path):
    train(tiny_config(colour_data, tmp_path / "run", "epochs=1"))
    loaded = load_encoder(str(tmp_path / "run" / "last.ckpt"))
    assert loaded.method is None and type(loaded.encoder).__name__ != "GrayEncoder"


def test_ema_update_matches_the_formula_and_the_copy_is_frozen():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    target = frozen_copy(online)
    assert all(not p.requires_grad for p in target.parameters())
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    online(torch.randn(5, 3))  # moves the BN running statistics
    before = [p.clone() for p in target.parameters()]
    ema_update_(target, online, 0.9)
    for old, new, q in zip(before, target.parameters(), online.parameters()):
        assert torch.allclose(new, 0.9 * old + 0.1 * q)
    assert torch.equal(target[1].running_mean, online[1].running_mean)
