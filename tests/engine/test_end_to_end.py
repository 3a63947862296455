"""Slow end-to-end runs (pytest -m slow): real data, the real CLI, Lightning's DDP."""

import json
from pathlib import Path

import pytest
import torch

from selfsup.cli import main

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="Fashion-MNIST not installed (make data)")
def test_default_recipe_learns_on_fashion_mnist(tmp_path, capsys):
    """A short slice of the default job already beats the random-init floor on kNN."""
    out = tmp_path / "run"
    code = main(["train", "--epochs", "1", "--output-dir", str(out),
                 "--set", "trainer.limit_train_batches=80", "--set", "trainer.progress_bar=false",
                 "--set", "monitor.knn_every=0", "--set", "eval.linear_epochs=10"])
    assert code == 0
    report = json.loads((out / "eval.json").read_text())
    trained, floor = report["trained"], report["random_init"]
    assert trained["knn_top1"] > floor["knn_top1"] + 0.02, report
    assert trained["linear_top1"] > floor["linear_top1"], report
    assert "gain over random init" in capsys.readouterr().out


def test_lightning_ddp_on_two_cpu_processes(shapes_folder, tmp_path):
    """Two gloo processes through Lightning: distributed sampler, gathered negatives, one checkpoint."""
    from selfsup.config import make_config, parse_override
    from selfsup.engine import train

    settings = [
        f"data=folder:{shapes_folder}", f"output_dir={tmp_path / 'ddp'}", "epochs=1", "batch_size=8",
        "num_workers=0", "backbone=resnet18", "backbone_args={small_stem: true, width: 0.125}",
        "method_args={projection_hidden_dim: 32, projection_dim: 16}", "views.image_size=16",
        "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp_spawn",
        "trainer.progress_bar=false", "monitor.knn_every=0",
    ]
    train(make_config(overrides=[parse_override(s) for s in settings]))
    ckpt = torch.load(tmp_path / "ddp" / "last.ckpt", weights_only=True)
    # 48 training images / (2 processes × 8) = 3 steps per epoch.
    assert ckpt["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
