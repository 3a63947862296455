"""The commands of README.md's "Use your encoder elsewhere" block run as written, on tiny runs
made in a temporary folder under the README's run names."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
from PIL import Image

from selfsup.cli import main
from export.test_export import fake_run

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Use your encoder elsewhere"


def readme_commands() -> list[str]:
    text = README.read_text()
    assert SECTION in text, f"README.md lost its section {SECTION!r}"
    block = re.search(r"```bash\n(.*?)```", text[text.index(SECTION):], re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_block_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for run, backbone, args in (("simclr-fashion-mnist", "resnet18-tiny", {}),
                                ("dino-cifar10", "vit-tiny", {"image_size": 32, "patch_size": 8, "depth": 2})):
        (tmp_path / "runs" / run).mkdir(parents=True)
        fake_run(tmp_path / "runs" / run, backbone, args)
    rng = np.random.default_rng(0)
    for k in range(5):
        path = tmp_path / "photos" / ("beach" if k % 2 else "city") / f"{k}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(path)
    commands = readme_commands()
    assert len(commands) >= 5 and any("--format timm" in c for c in commands) and any(" embed " in c for c in commands)
    import importlib.util

    has_onnx = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript"))  # the export extra
    for command in commands:
        if "--format onnx" in command and not has_onnx:
            continue
        argv = shlex.split(command)
        assert argv[0] == "selfsup"
        code = main(argv[1:] + (["--no-progress"] if argv[1] == "embed" else []))
        assert code == 0, f"`{command}` failed: {capsys.readouterr().err}"
    assert (tmp_path / "runs/simclr-fashion-mnist/encoder.safetensors").is_file()
    assert json.loads((tmp_path / "vit-timm.json").read_text())["library"]["name"] == "timm"
    assert {p.name for p in (tmp_path / "dino-hub").iterdir()} == {"model.safetensors", "config.json", "README.md"}
    assert np.load(tmp_path / "photos-emb.npy").shape == (5, 128)
    assert (tmp_path / "encoder.onnx").is_file() or not has_onnx
