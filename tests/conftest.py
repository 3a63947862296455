"""Shared fixtures: tiny generated datasets so tests never need the network."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# Two threads on the 2-core CI machine; OMP_NUM_THREADS (e.g. 1 on a shared machine) wins.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 2)))


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for a module's tests (``pytestmark = pytest.mark.usefixtures("single_thread")``):
    for tiny tensors a second thread only adds synchronisation (measured 30× slower wall time with
    2 threads on a busy machine), and values recorded on one thread are reproduced exactly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def benchmark_script():
    """Import a script of benchmarks/ by its file name (they are scripts, not a package)."""
    import importlib.util

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def fresh_python():
    """Run Python code in a fresh interpreter, with no C-allocator settings inherited from this
    environment; returns the last line it prints. For process-wide state (the C allocator)."""
    import subprocess
    import sys
    import textwrap

    from selfsup.ops import allocator

    env = {k: v for k, v in os.environ.items() if k not in allocator.ENVIRONMENT}

    def run(code: str, *args: str) -> str:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], env=env, capture_output=True,
                              text=True, check=True, timeout=300)
        return done.stdout.strip().splitlines()[-1]

    return run


def write_image_folder(root: Path, classes=("circle", "square"), per_class: int = 24, size: int = 20,
                       channels: int = 1, seed: int = 0) -> Path:
    """A labelled folder of simple shapes (class sub-folders), different enough to learn."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for label, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cy, cx = rng.integers(size // 4, 3 * size // 4, size=2)
            r = rng.integers(size // 6, size // 3)
            if label == 0:
                shape = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            else:
                shape = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
            pixels = (shape * rng.integers(150, 255) + rng.integers(0, 40, size=(size, size))).clip(0, 255)
            pixels = pixels.astype(np.uint8)
            if channels == 3:
                tint = rng.uniform(0.5, 1.0, size=3)
                image = Image.fromarray((pixels[..., None] * tint).astype(np.uint8), "RGB")
            else:
                image = Image.fromarray(pixels, "L")
            image.save(folder / f"{i:03d}.png")
    return root


@pytest.fixture
def shapes_folder(tmp_path: Path) -> Path:
    """train/ and test/ splits of a 2-class grayscale shapes dataset."""
    write_image_folder(tmp_path / "shapes" / "train", per_class=24, seed=0)
    write_image_folder(tmp_path / "shapes" / "test", per_class=8, seed=1)
    return tmp_path / "shapes"
