"""Engine pieces: schedules, optimizer groups, checkpoints, tiny training runs and exact resume."""

import math
import os
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from selfsup.config import OptimConfig, make_config, parse_override
from selfsup.engine import atomic_torch_save, train
from selfsup.engine.optim import build_optimizer, build_scheduler, scaled_lr, split_decay_groups, warmup_cosine
from selfsup.errors import ConfigError, TrainingDiverged


def test_warmup_cosine_shape():
    total, warm = 100, 10
    values = [warmup_cosine(s, total, warm) for s in range(total)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0)
    assert values[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert all(a >= b for a, b in zip(values[10:], values[11:]))
    assert warmup_cosine(total, total, warm, min_ratio=0.1) == pytest.approx(0.1)


def test_lr_scaling_rules():
    assert scaled_lr(OptimConfig(lr=0.3), 4096) == pytest.approx(4.8)
    assert scaled_lr(OptimConfig(lr=0.075, lr_scaling="sqrt"), 4096) == pytest.approx(0.075 * 4)
    assert scaled_lr(OptimConfig(lr=1e-3, lr_scaling="none"), 4096) == pytest.approx(1e-3)


def test_bias_and_norm_are_excluded_from_decay_and_lars_adaptation():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    decay, no_decay = split_decay_groups(model.named_parameters(), True)
    assert [p.ndim for p in decay] == [2, 2] and all(p.ndim == 1 for p in no_decay) and len(no_decay) == 4
    optimizer = build_optimizer(OptimConfig(name="lars", lr=0.3), [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], 512)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.6)
    assert optimizer.param_groups[1]["weight_decay"] == 0.0
    # timm's LARS adapts only groups with weight decay: a bias step is then plain momentum SGD.
    bias = no_decay[0]
    before = bias.detach().clone()
    bias.grad = torch.ones_like(bias)
    for p in decay + no_decay[1:]:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    assert torch.allclose(before - bias.detach(), torch.full_like(bias, 0.6))


def test_scheduler_is_per_step_and_per_group():
    params = [nn.Parameter(torch.zeros(2, 2)), nn.Parameter(torch.zeros(2, 2))]
    optimizer = build_optimizer(OptimConfig(name="sgd", lr=0.1, lr_scaling="none", warmup_epochs=1),
                                [{"params": [params[0]]}, {"params": [params[1]], "lr": 1.0}], 256)
    scheduler = build_scheduler(optimizer, OptimConfig(warmup_epochs=1), total_steps=20, steps_per_epoch=10)
    lrs = []
    for _ in range(20):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx([0.01, 0.1])
    assert lrs[9] == pytest.approx([0.1, 1.0])
    assert lrs[-1][0] < 0.01


def test_constant_lr_group_stays_at_its_peak_while_the_others_follow_the_schedule():
    params = [nn.Parameter(torch.zeros(2, 2)), nn.Parameter(torch.zeros(2, 2))]
    optimizer = build_optimizer(OptimConfig(name="sgd", lr=0.1, lr_scaling="none"),
                                [{"params": [params[0]]}, {"params": [params[1]], "constant_lr": True}], 256)
    scheduler = build_scheduler(optimizer, OptimConfig(warmup_epochs=1, min_lr=0.01), total_steps=20,
                                steps_per_epoch=5)
    lrs = []
    for _ in range(20):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert [lr[1] for lr in lrs] == pytest.approx([0.1] * 20)
    assert lrs[0][0] == pytest.approx(0.02) and lrs[4][0] == pytest.approx(0.1)
    assert lrs[-1][0] == pytest.approx(0.01, abs=2e-3)  # min_lr relative to the scheduled groups' peak


class RecordLearningRates(Callback):
    def __init__(self):
        self.rates = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.rates.append([(g.get("constant_lr", False), len(g["params"]), g["lr"])
                           for g in trainer.optimizers[0].param_groups])


@pytest.mark.parametrize("fixed", [True, False])
def test_simsiam_predictor_keeps_a_constant_rate_in_training(shapes_folder, tmp_path, fixed):
    recorder = RecordLearningRates()
    cfg = tiny_config(shapes_folder, tmp_path / "run", "method=simsiam", "epochs=1", "optim.name=sgd",
                      "method_args={projection_hidden_dim: 32, projection_dim: 16, prediction_hidden_dim: 8, "
                      f"fixed_predictor_lr: {str(fixed).lower()}}}")
    module_params = {}

    class Capture(Callback):
        def on_train_start(self, trainer, module):
            module_params["predictor"] = {id(p) for p in module.method.predictor.parameters()}
            module_params["groups"] = [{id(p) for p in g["params"]} for g in trainer.optimizers[0].param_groups]
            module_params["flags"] = [g.get("constant_lr", False) for g in trainer.optimizers[0].param_groups]

    train(cfg, callbacks=[recorder, Capture()])
    constant_ids = set().union(*(ids for ids, flag in zip(module_params["groups"], module_params["flags"]) if flag))
    assert constant_ids == (module_params["predictor"] if fixed else set())
    scheduled = [[lr for flag, _, lr in step if not flag] for step in recorder.rates]
    constant = [[lr for flag, _, lr in step if flag] for step in recorder.rates]
    assert scheduled[-1][0] < scheduled[0][0]  # the cosine decays the rest
    if fixed:
        assert all(rates == constant[0] for rates in constant) and constant[0][0] == pytest.approx(0.5 * 8 / 256)


def test_atomic_save_never_leaves_partial_files(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1}, path)

    def explode(*args, **kwargs):
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(torch, "save", explode)
    with pytest.raises(RuntimeError):
        atomic_torch_save({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path) == {"step": 1}
    assert os.listdir(tmp_path) == ["last.ckpt"]


def tiny_config(data: Path, output: Path, *extra: str):
    settings = [
        f"data=folder:{data}", f"output_dir={output}", "epochs=2", "batch_size=8", "num_workers=0",
        "backbone=resnet18", "backbone_args={small_stem: true, width: 0.125}",
        "method_args={projection_hidden_dim: 32, projection_dim: 16}",
        "views.image_size=16", "optim.warmup_epochs=0", "optim.lr=0.5",
        "trainer.progress_bar=false", "trainer.limit_train_batches=3", "trainer.log_every_n_steps=1",
        "monitor.knn_train_samples=32", "monitor.knn_test_samples=16", "monitor.knn_k=5",
        *extra,
    ]
    return make_config(overrides=[parse_override(s) for s in settings])


def _weights(path: Path):
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def test_tiny_run_checkpoints_logs_and_monitors(shapes_folder, tmp_path):
    out = tmp_path / "run"
    result = train(tiny_config(shapes_folder, out))
    assert result.steps == 6 and result.epochs == 2
    assert {"last.ckpt", "epoch=000.ckpt", "epoch=001.ckpt", "config.yaml"} <= set(os.listdir(out))
    assert (out / "logs" / "metrics.csv").is_file()
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(out / "logs"))
    assert 0.0 <= result.metrics["knn_top1"] <= 1.0
    assert "train/probe_acc_epoch" in result.metrics
    ckpt = torch.load(out / "last.ckpt", weights_only=False)
    assert ckpt["selfsup"]["config"]["method"] == "simclr" and "rng" in ckpt["selfsup"]
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


class CrashAfterFirstEpoch(Callback):
    """Kills the run once epoch 0's checkpoint is on disk, like a pre-empted job."""

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == 1:
            raise KeyboardInterrupt


def test_resume_continues_exactly(shapes_folder, tmp_path):
    straight = tmp_path / "straight"
    train(tiny_config(shapes_folder, straight, "epochs=3"))
    split = tmp_path / "split"
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        train(tiny_config(shapes_folder, split, "epochs=3"), callbacks=[CrashAfterFirstEpoch()])
    assert torch.load(split / "last.ckpt", weights_only=True)["global_step"] == 3
    result = train(tiny_config(shapes_folder, split, "epochs=3"), resume=True)
    assert result.steps == 9
    a, b = _weights(straight / "last.ckpt"), _weights(split / "last.ckpt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    opt_a = torch.load(straight / "last.ckpt", weights_only=False)["optimizer_states"][0]["state"]
    opt_b = torch.load(split / "last.ckpt", weights_only=False)["optimizer_states"][0]["state"]
    assert all(torch.equal(opt_a[i]["momentum_buffer"], opt_b[i]["momentum_buffer"]) for i in opt_a)


def test_refuses_to_overwrite_and_resume_needs_a_run(shapes_folder, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(tiny_config(shapes_folder, out), resume=True)
    train(tiny_config(shapes_folder, out, "epochs=1"))
    with pytest.raises(ConfigError, match="already holds a run"):
        train(tiny_config(shapes_folder, out, "epochs=1"))


class PoisonWeights(Callback):
    """Turns a weight into NaN at the start of epoch 1, as a diverging run would."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.current_epoch == 1:
            with torch.no_grad():
                next(module.method.projector.parameters()).fill_(float("nan"))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(shapes_folder, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="loss became nan at step 3 .*last checkpoint with finite values is '.*last.ckpt'"):
        train(tiny_config(shapes_folder, out, "epochs=3"), callbacks=[PoisonWeights()])
    good = _weights(out / "epoch=000.ckpt")
    after = _weights(out / "last.ckpt")
    assert all(torch.equal(good[k], after[k]) for k in good)
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert not (out / "epoch=001.ckpt").exists()


@pytest.mark.parametrize("channels, augment", [(3, "batched"), (3, "per-image"), (1, "batched")])
def test_colour_and_gray_train_end_to_end(tmp_path, channels, augment):
    from conftest import write_image_folder

    data = tmp_path / "data"
    write_image_folder(data / "train", per_class=12, channels=channels, seed=0)
    write_image_folder(data / "test", per_class=4, channels=channels, seed=1)
    out = tmp_path / "run"
    result = train(tiny_config(data, out, "epochs=1", f"augment={augment}"))
    assert result.steps == 3
    ckpt = torch.load(out / "last.ckpt", weights_only=True)
    assert ckpt["selfsup"]["dataset_info"]["num_channels"] == channels
    assert ckpt["state_dict"]["method.backbone.conv1.weight"].shape[1] == channels


def test_batched_augment_is_chosen_for_in_memory_data_and_used(shapes_folder, tmp_path, monkeypatch):
    from selfsup.data import DatasetInfo, TensorImageDataset
    from selfsup.engine.trainer import use_batched_augment
    from selfsup.transforms import BatchedMultiViewTransform

    info = DatasetInfo("toy", 1, 2, 8, (0.5,), (0.5,))
    in_memory = TensorImageDataset(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), info)
    cfg = make_config()
    assert use_batched_augment(cfg, in_memory)
    cfg.augment = "per-image"
    assert not use_batched_augment(cfg, in_memory)

    calls = []
    original = BatchedMultiViewTransform.forward

    def spy(self, images, generator=None):
        calls.append((images.dtype, tuple(images.shape)))
        return original(self, images, generator)

    monkeypatch.setattr(BatchedMultiViewTransform, "forward", spy)
    train(tiny_config(shapes_folder, tmp_path / "run", "epochs=1", "augment=batched"))
    assert calls and all(dtype == torch.uint8 and shape[0] == 8 for dtype, shape in calls)
