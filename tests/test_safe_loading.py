"""Nothing read from a file runs code: every command that reads a checkpoint, an exported encoder,
a classifier or a feature cache refuses pickled objects, and a broken file is one line.

The crafted payload's ``__reduce__`` creates a marker file when unpickled; the control test shows
that an unrestricted ``torch.load`` does run it, so the refusals below are not vacuous.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from selfsup.cli import main
from selfsup.config import make_config, parse_override
from selfsup.io import FileReadError, UnsafeFileError, load_torch_file


class PlantedCommand:
    """Unpickling it runs ``touch MARKER``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class PlantedMethodCall:
    """Unpickling it calls ``Path(MARKER).touch()``: code through a harmless-looking class."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (Path(self.marker),)


def tiny_config(data: Path, output: Path):
    settings = [
        f"data=folder:{data}", f"output_dir={output}", "epochs=1", "batch_size=8", "num_workers=0",
        "backbone=resnet18", "backbone_args={small_stem: true, width: 0.125}",
        "method_args={projection_hidden_dim: 32, projection_dim: 16}", "views.image_size=16",
        "optim.warmup_epochs=0", "trainer.progress_bar=false", "trainer.limit_train_batches=2",
        "monitor.knn_every=0",
    ]
    return make_config(overrides=[parse_override(s) for s in settings])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny labelled image folder, a real training run of it, a video-like frame folder."""
    from conftest import write_image_folder
    from selfsup.engine import train

    root = tmp_path_factory.mktemp("safe")
    data = root / "shapes"
    write_image_folder(data / "train", per_class=8, seed=0)
    write_image_folder(data / "test", per_class=4, seed=1)
    train(tiny_config(data, root / "run"))
    frames = root / "video"
    frames.mkdir()
    for i, source in enumerate(sorted((data / "test" / "circle").glob("*.png"))[:3]):
        shutil.copy(source, frames / f"{i:05d}.png")
    return {"root": root, "data": data, "checkpoint": root / "run" / "last.ckpt", "frames": frames}


# --------------------------------------------------------------------------- crafted files
def crafted(kind: str, folder: Path, checkpoint: Path, marker: Path, payload=PlantedCommand) -> Path:
    """A file that runs code when unpickled: a bare pickle, a ``torch.save`` of the object alone,
    or a real selfsup checkpoint with the object hidden under one more key."""
    path = folder / "crafted.ckpt"
    if kind == "pickle":
        path.write_bytes(pickle.dumps(payload(marker)))
    elif kind == "torch.save":
        torch.save(payload(marker), path)
    else:
        stored = torch.load(checkpoint, map_location="cpu", weights_only=True)
        stored["selfsup"]["notes"] = {"step": payload(marker)}
        torch.save(stored, path)  # the default pickler, as an attacker would
    return path


def broken(kind: str, folder: Path, checkpoint: Path) -> Path:
    path = folder / "broken.ckpt"
    whole = checkpoint.read_bytes()
    path.write_bytes({"empty": b"", "truncated": whole[: len(whole) // 2], "random": os.urandom(4096),
                      "text": b"model weights go here\n", "foreign zip": _zip_of_text()}[kind])
    return path


def _zip_of_text() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "not weights")
    return buffer.getvalue()


def command(name: str, file: Path, world, out: Path) -> list:
    """The argv of each command that reads ``file``, with tiny real data for everything else."""
    data = f"folder:{world['data']}"
    return {
        "eval knn": ["eval", "knn", "--checkpoint", str(file), "--data", data, "--k", "3"],
        "eval linear": ["eval", "linear", "--checkpoint", str(file), "--data", data, "--epochs", "1"],
        "export": ["export", "--checkpoint", str(file), "--output", str(out / "encoder.pt")],
        "train --resume": ["train", "--data", data, "--output-dir", str(out), "--resume", "--epochs", "2",
                           "--num-workers", "0", "--no-eval"],
        "colorize": ["colorize", "--checkpoint", str(file), "--input", str(world["frames"]), "--output", str(out)],
        "distill": ["distill", "--teacher", str(file), "--data", data, "--output", str(out), "--epochs", "1"],
        "curate": ["curate", "--checkpoint", str(file), "--uncurated", data + "/train", "--curated",
                   str(world["data"] / "test"), "--output", str(out / "selected.txt")],
        "viz pca": ["viz", "pca", "--checkpoint", str(file), "--data", data, "--output", str(out / "v.png")],
        "viz tsne": ["viz", "tsne", "--checkpoint", str(file), "--data", data, "--output", str(out / "v.png")],
        "viz retrieval": ["viz", "retrieval", "--checkpoint", str(file), "--data", data, "--output", str(out / "v.png")],
        "track": ["track", "--checkpoint", str(file), "--video", str(world["frames"]), "--first-mask",
                  str(sorted(world["frames"].iterdir())[0]), "--output", str(out)],
    }[name]


COMMANDS = ["eval knn", "eval linear", "export", "train --resume", "colorize", "distill", "curate",
            "viz pca", "viz tsne", "viz retrieval", "track"]


def run_on(name: str, file: Path, world, tmp_path: Path, capsys):
    out = tmp_path / "out"
    if name == "train --resume":  # the run folder's last.ckpt is the file read
        out.mkdir()
        shutil.copy(file, out / "last.ckpt")
    code = main(command(name, file, world, out))
    return code, capsys.readouterr().err.strip().splitlines()


def test_the_payloads_do_run_code_when_loaded_unrestricted(world, tmp_path):
    for number, payload in enumerate((PlantedCommand, PlantedMethodCall)):
        marker = tmp_path / f"ran-{number}"
        torch.load(crafted("checkpoint", tmp_path, world["checkpoint"], marker, payload), weights_only=False)
        assert marker.exists()


@pytest.mark.parametrize("kind", ["pickle", "torch.save", "inside a real checkpoint"])
@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_refuses_pickled_code(name, kind, world, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    file = crafted(kind, tmp_path, world["checkpoint"], marker)
    code, err = run_on(name, file, world, tmp_path, capsys)
    assert not marker.exists()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("selfsup: error: refused to load '")
    assert ("last.ckpt" if name == "train --resume" else "crafted.ckpt") in err[0]
    assert "`os.system`, which could run code; selfsup loads weights only" in err[0]


@pytest.mark.parametrize("name", ["eval knn", "export", "distill"])
def test_code_through_a_method_reference_is_refused_too(name, world, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    file = crafted("checkpoint", tmp_path, world["checkpoint"], marker, PlantedMethodCall)
    code, err = run_on(name, file, world, tmp_path, capsys)
    assert not marker.exists()
    assert code == 2 and len(err) == 1 and "selfsup: error: refused to load" in err[0], err


@pytest.mark.parametrize("kind", ["empty", "truncated", "random", "text", "foreign zip"])
@pytest.mark.parametrize("name", COMMANDS)
def test_broken_files_are_one_line(name, kind, world, tmp_path, capsys):
    file = broken(kind, tmp_path, world["checkpoint"])
    code, err = run_on(name, file, world, tmp_path, capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("selfsup: error: '") and ".ckpt' is not a selfsup" in err[0]
    assert "Traceback" not in err[0] and "enforce fail" not in err[0]


def test_resume_through_lightning_loads_weights_only(world, tmp_path):
    """``trainer.fit(ckpt_path=...)`` reads through AtomicCheckpointIO, not Lightning's torch.load."""
    from selfsup.engine import train

    marker = tmp_path / "code-ran"
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(crafted("checkpoint", tmp_path, world["checkpoint"], marker), run / "last.ckpt")
    with pytest.raises(UnsafeFileError, match="refused to load .*last.ckpt"):
        train(tiny_config(world["data"], run), resume=True)
    assert not marker.exists()


def test_a_real_checkpoint_needs_no_extra_allowed_globals(world):
    """What ``selfsup train`` writes (model, optimizer, LR scheduler, loops, callbacks, the
    ``selfsup`` entry with RNG streams) is within torch's weights-only allow-list."""
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(world["checkpoint"])) == []
    stored = load_torch_file(world["checkpoint"], "a selfsup training checkpoint")
    assert {"state_dict", "optimizer_states", "lr_schedulers", "loops", "callbacks", "selfsup"} <= set(stored)
    assert {"python", "numpy", "torch"} <= set(stored["selfsup"]["rng"])
    mapped = load_torch_file(world["checkpoint"], "a selfsup training checkpoint", mmap=True)
    assert all(torch.equal(mapped["state_dict"][k], v) for k, v in stored["state_dict"].items())


def test_exports_and_classifiers_load_weights_only(world, tmp_path, capsys):
    from selfsup.evaluation import export_encoder, load_encoder

    # The legacy pickled export (selfsup-encoder/1, still written by export_encoder) reads weights-only.
    export_encoder(load_encoder(str(world["checkpoint"])), tmp_path / "enc.pt")
    assert load_torch_file(tmp_path / "enc.pt", "an encoder")["format"] == "selfsup-encoder/1"
    # The command's default export is safetensors + JSON: no pickle at all.
    assert main(["export", "--checkpoint", str(world["checkpoint"]), "--output", str(tmp_path / "enc.safetensors")]) == 0
    for exported in ("enc.pt", "enc.safetensors"):
        assert main(["eval", "knn", "--checkpoint", str(tmp_path / exported), "--data", f"folder:{world['data']}",
                     "--k", "3"]) == 0


def test_load_torch_file_messages(tmp_path):
    with pytest.raises(FileReadError, match=r"'.*missing.pt' does not exist \(expected a thing\)"):
        load_torch_file(tmp_path / "missing.pt", "a thing")
    with pytest.raises(FileReadError, match="is a folder, not a thing"):
        load_torch_file(tmp_path, "a thing")
    torch.save({"a": torch.ones(3)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert torch.equal(load_torch_file(tmp_path / "legacy.pt", "a thing")["a"], torch.ones(3))
    with pytest.raises(FileReadError, match="not in torch.save's zip format"):
        load_torch_file(tmp_path / "legacy.pt", "a thing", mmap=True)


def test_a_feature_cache_entry_with_code_is_refused_and_a_torn_one_recomputed(tmp_path):
    from selfsup.evaluation import FeatureCache

    cache = FeatureCache(tmp_path / "cache")
    computed = []

    def compute():
        computed.append(1)
        return torch.ones(2, 3), torch.zeros(2, dtype=torch.int64)

    cache.get_or_compute("k", compute)
    path = cache.path("k")
    path.write_bytes(path.read_bytes()[:40])  # torn
    features, _ = cache.get_or_compute("k", compute)
    assert len(computed) == 2 and torch.equal(features, torch.ones(2, 3))
    marker = tmp_path / "code-ran"
    torch.save({"key": "k", "features": PlantedCommand(marker), "labels": None}, path)
    with pytest.raises(UnsafeFileError, match="refused to load"):
        cache.get_or_compute("k", compute)
    assert not marker.exists() and len(computed) == 2
