"""Every registered method trains through the engine, checkpoints and resumes.

Parametrised over the registry, so a method is covered the moment its file exists. Tiny sizes:
the point is the wiring (views from the method's preset, hooks, state in the checkpoint), not
accuracy; each method's own test file checks its formulas.
"""

from __future__ import annotations

import pytest
import torch

from selfsup.config import make_config, parse_override
from selfsup.engine import train
from selfsup.methods import METHODS

# Methods that train on something other than still images get their data from their own tests.
NEEDS_OTHER_DATA = {"video-colorization": "trains on frame sequences (frames:PATH), tested in its own file"}


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory):
    from conftest import write_image_folder

    root = tmp_path_factory.mktemp("colour")
    write_image_folder(root / "train", per_class=12, size=16, channels=3, seed=0)
    write_image_folder(root / "test", per_class=4, size=16, channels=3, seed=1)
    return root


def method_config(name: str, data, output, epochs: int):
    """The method's defaults on a tiny backbone (a 2-block ViT for ViT-only methods)."""
    settings = [
        f"method={name}", f"data=folder:{data}", f"output_dir={output}", f"epochs={epochs}", "batch_size=8",
        "num_workers=0", "views.image_size=16", "optim.warmup_epochs=0", "trainer.progress_bar=false",
        "trainer.limit_train_batches=2", "monitor.knn_every=0", "monitor.online_probe=false",
    ]
    if METHODS.get(name).backbone_kind == "vit":
        settings += ["backbone=vit-tiny", "backbone_args={patch_size: 4, image_size: 16, depth: 2}",
                     "optim.name=adamw", "optim.lr=1e-4"]
    else:
        settings += ["backbone=resnet18", "backbone_args={small_stem: true, width: 0.125}", "optim.lr=0.1"]
    return make_config(overrides=[parse_override(s) for s in settings])


@pytest.mark.parametrize("name", [n for n in METHODS.names() if n not in NEEDS_OTHER_DATA])
def test_method_trains_checkpoints_and_resumes(name, colour_folder, tmp_path):
    out = tmp_path / "run"
    first = train(method_config(name, colour_folder, out, epochs=1))
    assert first.steps == 2
    resumed = train(method_config(name, colour_folder, out, epochs=2), resume=True)
    assert resumed.steps == 4
    state = torch.load(out / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
