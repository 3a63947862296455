"""Evaluation in bounded memory: features above the budget live in files and give the same numbers,
a data limit the old in-RAM path overruns is kept, the raw-pixel floor is projected only when large,
and feature extraction shows a progress bar on terminals only."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Optional

import pytest
import torch
from torch import Tensor, nn

from selfsup.config import make_config
from selfsup.data import DatasetInfo, ImageDataset
from selfsup.errors import ConfigError
from selfsup.evaluation import (EvalSettings, FeatureCache, MemoryBudget, SparseRandomProjection, evaluate_pixels,
                                extract_features, format_report, knn_predict, pixel_encoder)
from selfsup.evaluation.knn import knn_predict_sweep
from selfsup.evaluation.storage import disk_tensor
from selfsup.evaluation.suite import encode_splits, evaluate_encoder, evaluate_features

TINY = MemoryBudget(2000)
"""2 kB: every array of these tests is above it, and every working chunk is one row."""


class SyntheticImages(ImageDataset):
    """``n`` uint8 images ``(C, S, S)`` made on the fly from their index (nothing held in RAM):
    seeded noise with a bright band whose place is the class, so the protocols have something to find."""

    def __init__(self, n: int, size: int, channels: int = 1, num_classes: int = 4, seed: int = 0) -> None:
        self.n, self.size, self.seed = n, size, seed
        self.info = DatasetInfo("synthetic", channels, num_classes, size, (0.5,) * channels, (0.25,) * channels)
        self.labels = torch.arange(n) % num_classes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        label = int(self.labels[i])
        image = 80 + 40 * torch.randn(self.info.num_channels, self.size, self.size,
                                      generator=torch.Generator().manual_seed(self.seed * 1_000_003 + i))
        band = self.size // self.info.num_classes
        image[:, label * band:(label + 1) * band] += 100
        return image.clamp(0, 255).to(torch.uint8), label


def mapped_file(tensor: Tensor) -> Optional[str]:
    """The file mapped where ``tensor``'s data lies (from /proc/self/maps), None for anonymous memory."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start <= address < end:
            return fields[5] if len(fields) == 6 and fields[4] != "0" else None
    return None


linux_only = pytest.mark.skipif(not Path("/proc/self/maps").is_file() or not sys.platform.startswith("linux"),
                                reason="reads /proc/self/maps and RLIMIT_DATA (Linux)")


def clusters(n: int, num_classes: int = 5, dim: int = 32, seed: int = 0):
    centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(1234)) * 2
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(num_classes, (n,), generator=g)
    return centres[labels] + torch.randn(n, dim, generator=g), labels


def on_disk(x: Tensor) -> Tensor:
    out = disk_tensor(x.shape, x.dtype)
    out.copy_(x)
    return out


# ---------------------------------------------------------------- same numbers on disk
def test_disk_backed_features_give_exactly_the_in_memory_results():
    train_x, train_y = clusters(600)
    test_x, test_y = clusters(150, seed=1)
    settings = EvalSettings(knn_ks=[5, 20, 200], linear_epochs=5, linear_lrs=[0.1, 1.0], fewshot_fractions=[0.1, 0.5])
    protocols = ["knn", "linear", "fewshot"]
    in_memory = evaluate_features(train_x, train_y, test_x, test_y, 5, protocols, settings)
    streamed = evaluate_features(on_disk(train_x), train_y, on_disk(test_x), test_y, 5, protocols, settings, TINY)
    assert streamed == in_memory
    assert 0.5 < in_memory["knn_top1"] <= 1 and 0.5 < in_memory["linear_top1"] <= 1  # a task the protocols solve


@pytest.mark.parametrize("k", [1, 7, 600])
def test_streamed_knn_keeps_the_same_neighbours(k):
    """Bank read a row at a time (fewer rows per chunk than k), queries merged with running top-k."""
    train_x, train_y = clusters(600)
    query_x, _ = clusters(50, seed=2)
    expected = knn_predict(train_x, train_y, query_x, 5, k=k, temperature=0.07)
    actual = knn_predict(train_x, train_y, query_x, 5, k=k, temperature=0.07, chunk_size=16, memory=TINY)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
    sweep = knn_predict_sweep(train_x, train_y, query_x, 5, [3, k], 0.07, memory=MemoryBudget(40_000))
    torch.testing.assert_close(sweep[min(k, 600)], expected, rtol=1e-5, atol=1e-6)


@linux_only
def test_features_above_the_budget_go_to_a_file_beside_the_cache(tmp_path):
    train, test = SyntheticImages(64, 8), SyntheticImages(32, 8, seed=1)
    cache = FeatureCache(tmp_path / "features")
    small = EvalSettings(memory_budget_gb=1e-6)  # ~1 kB: both splits (64 x 64 floats) are above it
    (train_x, train_y), (test_x, _) = encode_splits(nn.Flatten(), train, test, small, cache, "pixels")
    for features in (train_x, test_x):
        assert str(tmp_path / "features") in (mapped_file(features) or "")
    (ram_x, ram_y), _ = encode_splits(nn.Flatten(), train, test, EvalSettings())
    assert mapped_file(ram_x) is None
    assert torch.equal(train_x, ram_x) and torch.equal(train_y, ram_y)
    # A cache hit maps the stored entry instead of reading it into RAM.
    (cached_x, _), _ = encode_splits(nn.Flatten(), train, test, small, cache, "pixels")
    assert torch.equal(cached_x, ram_x) and mapped_file(cached_x).endswith(".pt")
    assert evaluate_encoder(nn.Flatten(), train, test, settings=small) == evaluate_encoder(nn.Flatten(), train, test)


def test_memory_budget_take_and_validation():
    x = torch.arange(40.0).view(20, 2)
    index = torch.tensor([19, 0, 7, 7])
    assert torch.equal(TINY.take(x, index), x[index]) and torch.equal(MemoryBudget(10).take(x, index), x[index])
    assert MemoryBudget(10).empty((0, 5)).shape == (0, 5)
    for bad in (0, -1.0):
        with pytest.raises(ConfigError, match="memory budget must be a positive number of GB"):
            EvalSettings(memory_budget_gb=bad).memory()


# ---------------------------------------------------------------- a data limit kept
BIG_RUN = """
import json, re, resource, sys
import torch
from torch import nn
sys.path.insert(0, sys.argv[1])
from test_eval_memory import SyntheticImages
from selfsup.data import TransformDataset
from selfsup.evaluation import extract_features
from selfsup.evaluation.suite import EvalSettings, evaluate_features

torch.set_num_threads(1)
def vm_data():
    return int(re.search(r"VmData:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
def evaluate(num_train, budget_gb):  # what evaluate_encoder does, with a cheaper transform than eval_transform
    settings = EvalSettings(knn_k=20, linear_epochs=1, fewshot_fractions=[0.2], memory_budget_gb=budget_gb)
    splits = [TransformDataset(SyntheticImages(n, 64, seed=seed), lambda x: x.float() / 64 - 1)
              for n, seed in ((num_train, 0), (300, 1))]
    (train_x, train_y), (test_x, test_y) = [extract_features(nn.Flatten(), split, 256, memory=settings.memory())
                                            for split in splits]
    return evaluate_features(train_x, train_y, test_x, test_y, 4, ["knn", "linear", "fewshot"], settings)
# Warm up (lazy imports, thread pools, allocator arenas) on a small set, then cap the data segment.
evaluate(300, 0.004)
resource.setrlimit(resource.RLIMIT_DATA, (vm_data() + 76 * 2**20, resource.RLIM_INFINITY))
try:  # some sandboxes (gVisor) accept the limit but do not enforce it
    bytearray(128 * 2**20)
    print("RLIMIT_DATA is not enforced here")
    sys.exit(0)
except MemoryError:
    pass
print(json.dumps(evaluate(5000, 0.004)))  # 5000 x 4096 float32 features: 82 MB, above the 76 MB left
try:
    evaluate(5000, 1000.0)  # everything in RAM: the path before the budget
    print("in RAM: finished")
except (MemoryError, RuntimeError) as error:
    print(f"in RAM: {type(error).__name__}: {str(error)[:200]}")
"""


@linux_only
def test_evaluation_keeps_a_data_limit_that_in_memory_features_overrun(tmp_path):
    """RLIMIT_DATA caps private memory (heap, anonymous maps), not shared file maps: the disk-backed
    path must finish under a cap 76 MB above the warmed-up process, where the in-RAM path (82 MB of
    features alone) fails. (64 MB left the disk-backed path too little slack for the allocator: flaky.)"""
    env = {**os.environ, "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(BIG_RUN), str(Path(__file__).parent)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    if done.stdout.strip().endswith("RLIMIT_DATA is not enforced here"):
        pytest.skip("this kernel does not enforce RLIMIT_DATA")
    bounded, in_ram = done.stdout.strip().splitlines()[-2:]
    result = json.loads(bounded)
    assert result["feature_dim"] == 4096 and result["knn_top1"] > 0.9 and result["linear_top1"] > 0.9
    assert "can't allocate" in in_ram or "MemoryError" in in_ram, in_ram


# ---------------------------------------------------------------- the raw-pixel floor
def test_small_images_stay_exact_pixels():
    encoder, key, note = pixel_encoder(28 * 28)
    assert isinstance(encoder, nn.Flatten) and key == "pixels" and note is None
    assert pixel_encoder(4096)[2] is None and pixel_encoder(4097)[2] == "random projection 4097 -> 4096 dims"


def test_sparse_projection_is_the_matrix_it_draws_and_keeps_distances():
    projection = SparseRandomProjection(3000, 512, seed=3)
    m = math.ceil(math.sqrt(3000))
    assert projection.indices.shape == (512, m)
    dense = torch.zeros(512, 3000, dtype=torch.float64)  # naive: accumulate each drawn (row, index, weight)
    for row in range(512):
        for index, weight in zip(projection.indices[row].tolist(), projection.weights[row].tolist()):
            dense[row, index] += weight
    x = torch.randn(20, 3, 10, 100, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(projection(x).double(), x.flatten(1).double() @ dense.T, rtol=1e-4, atol=1e-4)
    # Johnson–Lindenstrauss: squared distances kept within a few sqrt(2/k) ≈ 6 % for k = 512.
    y = projection(x)
    ratio = torch.pdist(y).square() / torch.pdist(x.flatten(1)).square()
    assert (ratio - 1).abs().max() < 0.3 and abs(float(ratio.mean()) - 1) < 0.05
    torch.manual_seed(99)  # its own generator: the global one changes nothing
    assert torch.equal(SparseRandomProjection(3000, 512, seed=3).indices, projection.indices)
    assert not torch.equal(SparseRandomProjection(3000, 512, seed=4).indices, projection.indices)


def test_large_images_are_projected_and_the_report_says_so(capsys):
    train, test = SyntheticImages(60, 40, channels=3), SyntheticImages(20, 40, channels=3, seed=1)
    pixels = evaluate_pixels(train, test, ["knn"], EvalSettings(knn_k=5))
    assert pixels["note"] == "random projection 4800 -> 4096 dims" and pixels["feature_dim"] == 4096
    exact = evaluate_pixels(SyntheticImages(60, 20), SyntheticImages(20, 20, seed=1), ["knn"], EvalSettings(knn_k=5))
    assert "note" not in exact and exact["feature_dim"] == 400
    report = {"trained": {"knn_top1": 0.9}, "random_init": {"knn_top1": 0.5}, "pixels": pixels}
    table = format_report(report, "simclr")
    assert "raw pixels*" in table and table.splitlines()[-1].startswith("* raw pixels: random projection 4800 -> 4096")
    assert "*" not in format_report({**report, "pixels": exact}, "simclr")


# ---------------------------------------------------------------- the progress bar
class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stream, label, shown", [(Terminal, "train features", True), (io.StringIO, "train features", False),
                                                   (Terminal, None, False)])
def test_progress_bar_only_on_a_terminal_and_when_asked(monkeypatch, stream, label, shown):
    err = stream()
    monkeypatch.setattr(sys, "stderr", err)
    data = torch.utils.data.TensorDataset(torch.randn(10, 4), torch.zeros(10, dtype=torch.int64))
    extract_features(nn.Identity(), data, batch_size=4, progress=label)
    assert ("train features:" in err.getvalue() and "img/s" in err.getvalue()) if shown else err.getvalue() == ""


# ---------------------------------------------------------------- on a GPU
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_the_projection_the_streamed_probe_and_the_suite_agree():
    from dataclasses import replace

    from selfsup.backbones import build_backbone
    from selfsup.evaluation import linear_probe

    projection = SparseRandomProjection(5000, 256, seed=1)
    x = torch.randn(8, 5000)
    torch.testing.assert_close(SparseRandomProjection(5000, 256, seed=1).cuda()(x.cuda()).cpu(), projection(x),
                               rtol=1e-4, atol=1e-4)
    train_x, train_y = clusters(600)
    test_x, test_y = clusters(150, seed=1)
    ram = linear_probe(train_x, train_y, test_x, test_y, 5, epochs=5, device="cuda")
    disk = linear_probe(on_disk(train_x), train_y, on_disk(test_x), test_y, 5, epochs=5, device="cuda", memory=TINY)
    assert (disk.top1, disk.top5, disk.train_top1) == (ram.top1, ram.top5, ram.train_top1)
    train, test = SyntheticImages(64, 16, channels=3), SyntheticImages(32, 16, channels=3, seed=1)
    encoder = build_backbone("resnet18", in_channels=3, small_stem=True, width=0.125).cuda()
    settings = EvalSettings(device="cuda", knn_k=5, linear_epochs=3)
    assert (evaluate_encoder(encoder, train, test, settings=replace(settings, memory_budget_gb=1e-6))
            == evaluate_encoder(encoder, train, test, settings=settings))


# ---------------------------------------------------------------- the command line
def test_cli_eval_with_a_tiny_budget_gives_the_same_json(capsys, shapes_folder, tmp_path):
    from selfsup.cli import main

    args = ["eval", "fewshot", "--checkpoint", "random", "--backbone", "resnet18", "--set", "small_stem=true",
            "--set", "width=0.125", "--image-size", "16", "--data", f"folder:{shapes_folder}", "--fractions", "0.5",
            "--epochs", "3", "--k", "3", "--lr", "0.1", "1.0"]
    assert main(args) == 0
    default = json.loads(capsys.readouterr().out)
    assert main([*args, "--memory-budget-gb", "1e-6", "--cache-dir", str(tmp_path / "c")]) == 0
    assert json.loads(capsys.readouterr().out) == default
    with pytest.raises(SystemExit) as refused:
        main([*args, "--memory-budget-gb", "0"])
    assert refused.value.code == 2 and "'0' is not a positive number of GB" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="eval.memory_budget_gb must be > 0, got -1"):
        make_config(overrides=[{"eval": {"memory_budget_gb": -1}}])
