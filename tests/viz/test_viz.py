"""Pictures: each PNG from a tiny model has the promised size and real content; the maths under
them (patch PCA, CLS attention, t-SNE, retrieval, the CSV log reader) against direct references."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.backbones import build_backbone
from selfsup.cli import main
from selfsup.data import DatasetInfo
from selfsup.errors import DataError
from selfsup.viz import (cls_attention_maps, nearest_neighbours, patch_pca_colors, read_metrics, save_attention_maps,
                         save_embedding_map, save_patch_pca, save_retrieval_grid, save_training_curves, tsne)
from selfsup.viz.embedding import conditional_probabilities

INFO = DatasetInfo("toy", 1, 3, 16, (0.5,), (0.5,), ("a", "b", "c"))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a busy machine its spin-waiting costs ~5x CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone("vit-tiny", in_channels=1, patch_size=4, image_size=16, depth=2)


def tiny_resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone("resnet18", in_channels=1, small_stem=True, width=0.125)


def png(path: Path) -> np.ndarray:
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.std() > 1.0, "the picture is constant"
    return image


def grid_side(cells: int, cell: int, padding: int = 2) -> int:
    return cells * (cell + padding) + padding


# ---------------------------------------------------------------- patch PCA
def test_patch_pca_separates_foreground_and_colours_it():
    g = gen(1)
    B, D, h, w = 3, 8, 6, 6
    features = 0.05 * torch.randn(B, D, h, w, generator=g)
    features[:, 0, 2:4, 2:4] += 3.0  # an "object" in the middle: the first principal direction
    features[:, 1, 2:4, 2] += 1.0  # and two parts of it that differ
    rgb, foreground = patch_pca_colors(features)
    expected = torch.zeros(B, h, w, dtype=torch.bool)
    expected[:, 2:4, 2:4] = True
    assert torch.equal(foreground, expected)
    assert rgb.shape == (B, 3, h, w) and rgb.min() >= 0 and rgb.max() <= 1
    assert rgb[~expected.unsqueeze(1).expand_as(rgb)].abs().max() == 0  # background black
    assert rgb[:, :, 2:4, 2].mean() != pytest.approx(rgb[:, :, 2:4, 3].mean())  # the parts get different colours
    everything = patch_pca_colors(features, remove_background=False)[1]
    assert everything.all()


@pytest.mark.parametrize("make", [tiny_vit, tiny_resnet])
def test_save_patch_pca_png(tmp_path, make):
    images = torch.randn(3, 1, 16, 16, generator=gen(2))
    path = save_patch_pca(make(), images, INFO, tmp_path / "pca.png", cell_size=32)
    pixels = png(path)
    assert pixels.shape == (grid_side(3, 32), grid_side(2, 32), 3)


# ---------------------------------------------------------------- attention
def test_cls_attention_maps_are_the_cls_row_of_the_last_attention():
    vit = tiny_vit()
    images = torch.randn(2, 1, 16, 16, generator=gen(3))
    maps = cls_attention_maps(vit, images)
    assert maps.shape == (2, 3, 4, 4)  # vit-tiny: 3 heads; 16/4 = 4 patches a side
    with torch.no_grad():
        full = vit.eval().get_last_attention(images)  # (2, 3, 17, 17)
    torch.testing.assert_close(maps.flatten(2), full[:, :, 0, 1:])
    torch.testing.assert_close(maps.sum((2, 3)) + full[:, :, 0, 0], torch.ones(2, 3))  # a softmax row


def test_save_attention_maps_png(tmp_path):
    images = torch.randn(2, 1, 16, 16, generator=gen(4))
    pixels = png(save_attention_maps(tiny_vit(), images, INFO, tmp_path / "attn.png", cell_size=24))
    assert pixels.shape == (grid_side(2, 24), grid_side(1 + 3, 24), 3)
    with pytest.raises(Exception, match="ViT"):
        save_attention_maps(tiny_resnet(), images, INFO, tmp_path / "no.png")


# ---------------------------------------------------------------- t-SNE
def test_conditional_probabilities_reach_the_perplexity():
    x = torch.randn(40, 5, generator=gen(5), dtype=torch.float64)
    p = conditional_probabilities(x, perplexity=10.0)
    for i in range(40):
        row = [float(v) for j, v in enumerate(p[i]) if j != i]
        assert sum(row) == pytest.approx(1.0) and float(p[i, i]) == 0.0
        entropy = -sum(v * math.log(v) for v in row if v > 0)
        assert math.exp(entropy) == pytest.approx(10.0, rel=1e-3)


def test_tsne_keeps_clusters_apart_and_is_seeded():
    centres = torch.randn(3, 20, generator=gen(6)) * 10
    labels = torch.arange(60) % 3
    x = centres[labels] + torch.randn(60, 20, generator=gen(7))
    y = tsne(x, perplexity=10, iterations=1000, seed=0)
    assert y.shape == (60, 2) and torch.isfinite(y).all()
    distances = torch.cdist(y, y).fill_diagonal_(math.inf)
    assert (labels[distances.argmin(1)] == labels).all()  # 1-NN in the map is always the same cluster
    assert torch.equal(y, tsne(x, perplexity=10, iterations=1000, seed=0))


def test_save_embedding_map_png(tmp_path):
    points = torch.randn(30, 2, generator=gen(8))
    pixels = png(save_embedding_map(points, torch.arange(30) % 3, tmp_path / "tsne.png", ("a", "b", "c"), "map"))
    assert pixels.shape == (600, 640, 3)


# ---------------------------------------------------------------- retrieval
def test_nearest_neighbours_match_a_loop():
    queries, bank = torch.randn(4, 6, generator=gen(9)), torch.randn(20, 6, generator=gen(10))
    sims, indices = nearest_neighbours(queries, bank, 3)
    for q in range(4):
        cos = [float(torch.dot(queries[q], b) / (queries[q].norm() * b.norm())) for b in bank]
        order = sorted(range(20), key=lambda i: -cos[i])[:3]
        assert indices[q].tolist() == order
        assert sims[q].tolist() == pytest.approx([cos[i] for i in order], abs=1e-6)


def test_save_retrieval_grid_frames_matches_green(tmp_path):
    queries = torch.zeros(2, 1, 16, 16)
    neighbours = torch.zeros(2, 3, 1, 16, 16)
    neighbour_labels = torch.tensor([[0, 1, 0], [2, 2, 1]])
    path = save_retrieval_grid(queries, torch.tensor([0, 2]), neighbours, neighbour_labels, INFO, tmp_path / "r.png",
                               cell_size=24)
    pixels = png(path)
    assert pixels.shape == (grid_side(2, 24), grid_side(4, 24), 3)
    corner = lambda row, col: pixels[2 + row * 26, 2 + col * 26]  # top-left pixel of a cell's frame
    assert corner(0, 1)[1] > 150 and corner(0, 1)[0] < 100  # same label: green
    assert corner(0, 2)[0] > 150 and corner(0, 2)[1] < 100  # other label: red


# ---------------------------------------------------------------- curves
CSV = """epoch,knn_top1,step,train/loss_epoch,train/loss_step,train/lr,train/probe_acc_epoch,train/probe_acc_step,health/rankme
0,,0,,2.69,0.0094,,0.375,
0,,1,,2.75,0.0092,,0.125,
0,0.5,1,2.70,,,0.25,,7.5
1,,2,,2.40,0.0050,,0.5,
1,,3,,2.10,0.0010,,0.625,
1,0.75,3,2.25,,,0.56,,9.0
"""


def test_read_metrics_and_curves_png(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    (run / "logs" / "metrics.csv").write_text(CSV)
    series = read_metrics(run)
    assert series["knn_top1"] == ([1.0, 3.0], [0.5, 0.75])
    assert series["train/loss_step"][1] == [2.69, 2.75, 2.40, 2.10]
    pixels = png(save_training_curves(run, tmp_path / "curves.png"))
    assert pixels.shape[1] > 3 * pixels.shape[0]  # four panels side by side
    assert main(["viz", "curves", "--run", str(run / "logs" / "metrics.csv"), "--output", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").is_file()
    with pytest.raises(DataError, match="metrics.csv"):
        read_metrics(tmp_path)


# ---------------------------------------------------------------- CLI
RANDOM_VIT = ["--checkpoint", "random", "--backbone", "vit-tiny", "--set", "patch_size=4", "--set", "image_size=16",
              "--set", "depth=1", "--image-size", "16"]


def test_cli_viz_pictures(shapes_folder, tmp_path, capsys):
    data = ["--data", f"folder:{shapes_folder}"]
    for kind, extra in (("pca", ["--num-images", "2", "--cell-size", "32"]),
                        ("attention", ["--num-images", "2", "--cell-size", "32"]),
                        ("tsne", ["--num-samples", "16", "--iterations", "60", "--perplexity", "4"]),
                        ("retrieval", ["--num-queries", "2", "--k", "3", "--bank-size", "20", "--cell-size", "32"])):
        out = tmp_path / f"{kind}.png"
        assert main(["viz", kind, *RANDOM_VIT, *data, "--output", str(out), *extra]) == 0, capsys.readouterr().err
        png(out)
    assert png(tmp_path / "pca.png").shape == (grid_side(2, 32), grid_side(2, 32), 3)
    assert png(tmp_path / "retrieval.png").shape == (grid_side(2, 32), grid_side(4, 32), 3)
    code = main(["viz", "attention", "--checkpoint", "random", "--backbone", "resnet18", "--set", "width=0.125",
                 *data, "--image-size", "16", "--output", str(tmp_path / "no.png")])
    assert code == 2 and "ViT" in capsys.readouterr().err
