"""Evaluation protocols beyond one kNN / one linear probe: k sweeps, held-out lr sweeps, few-label
subsets, full fine-tuning, dense (segmentation) probing, and their `selfsup eval` commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from selfsup.backbones import build_backbone
from selfsup.cli import main
from selfsup.data import DatasetInfo, TensorImageDataset
from selfsup.errors import ConfigError, DataError
from selfsup.evaluation import (EvalSettings, FinetuneSettings, balanced_subset, evaluate_features, finetune,
                                knn_accuracy, knn_sweep, linear_probe, linear_probe_sweep, stratified_split)
from selfsup.evaluation.dense import (IGNORE_INDEX, DenseSettings, confusion_matrix, dense_features, dense_probe,
                                      load_segmentation, resnet_feature_map, segmentation_scores)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a busy machine its spin-waiting costs ~5x CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def clusters(n: int, num_classes: int, dim: int = 16, noise: float = 1.0, seed: int = 0):
    centres = torch.randn(num_classes, dim, generator=gen(1234)) * 2
    g = gen(seed)
    labels = torch.randint(num_classes, (n,), generator=g)
    return centres[labels] + noise * torch.randn(n, dim, generator=g), labels


def tiny_resnet(channels: int = 1) -> nn.Module:
    torch.manual_seed(0)
    return build_backbone("resnet18", in_channels=channels, small_stem=True, width=0.125)


def tiny_vit(channels: int = 1) -> nn.Module:
    torch.manual_seed(0)
    return build_backbone("vit-tiny", in_channels=channels, patch_size=4, image_size=16, depth=2)


# ---------------------------------------------------------------- kNN sweep
def test_knn_sweep_equals_one_run_per_k():
    train_x, train_y = clusters(200, 5, noise=2.5)
    test_x, test_y = clusters(60, 5, noise=2.5, seed=1)
    ks = [1, 10, 20, 500]  # 500 > N: all 200 samples, like knn_accuracy
    swept = knn_sweep(train_x, train_y, test_x, test_y, 5, ks, temperature=0.07, chunk_size=16)
    assert list(swept) == ks
    for k in ks:
        assert swept[k] == knn_accuracy(train_x, train_y, test_x, test_y, 5, k=k, temperature=0.07)
    assert len({swept[k]["knn_top1"] for k in ks}) > 1  # the k actually matters on this noisy problem


def test_evaluate_features_reports_every_k_and_the_first_as_main():
    train_x, train_y = clusters(120, 4, noise=2.0)
    test_x, test_y = clusters(40, 4, noise=2.0, seed=1)
    out = evaluate_features(train_x, train_y, test_x, test_y, 4, ["knn"], EvalSettings(knn_ks=[20, 5]))
    assert out["knn_top1"] == out["knn_top1_k20"] and {"knn_top1_k5", "knn_top5_k5", "knn_top5_k20"} <= set(out)


# ---------------------------------------------------------------- subsets
def test_stratified_split_holds_out_each_class():
    labels = torch.tensor([0] * 50 + [1] * 20 + [2] * 3 + [3] * 1)
    fit, val = stratified_split(labels, 0.1, seed=3)
    assert torch.equal(torch.cat([fit, val]).sort().values, torch.arange(len(labels)))  # a partition
    assert [int((labels[val] == c).sum()) for c in range(4)] == [5, 2, 1, 0]  # ≥1 when the class has 2+
    assert [int((labels[fit] == c).sum()) for c in range(4)] == [45, 18, 2, 1]
    again = stratified_split(labels, 0.1, seed=3)
    assert torch.equal(again[1], val) and not torch.equal(stratified_split(labels, 0.1, seed=4)[1], val)


def test_balanced_subset_is_class_balanced_seeded_and_nested():
    labels = torch.arange(1000) % 10
    small, large = balanced_subset(labels, 0.01, seed=0), balanced_subset(labels, 0.1, seed=0)
    assert len(small) == 10 and len(large) == 100
    assert torch.bincount(labels[small]).tolist() == [1] * 10 and torch.bincount(labels[large]).tolist() == [10] * 10
    assert set(small.tolist()) <= set(large.tolist())
    assert torch.equal(balanced_subset(labels, 0.1, seed=0), large)
    assert not torch.equal(balanced_subset(labels, 0.1, seed=1), large)
    # An imbalanced split still gets equal counts, capped by the smallest classes.
    skewed = torch.tensor([0] * 90 + [1] * 10)
    assert torch.bincount(skewed[balanced_subset(skewed, 0.1, seed=0)]).tolist() == [5, 5]
    with pytest.raises(ConfigError, match="fraction"):
        balanced_subset(labels, 0.0)
    with pytest.raises(ConfigError, match="unlabelled"):
        balanced_subset(torch.tensor([0, -1, 1]), 0.5)


# ---------------------------------------------------------------- linear lr sweep
def test_linear_sweep_selects_on_held_out_train_and_never_on_test():
    train_x, train_y = clusters(400, 5, noise=3.0)
    test_x, test_y = clusters(200, 5, noise=3.0, seed=1)
    lrs = [1e-4, 0.1, 3.0]
    kwargs = dict(epochs=3, batch_size=64)
    sweep = linear_probe_sweep(train_x, train_y, test_x, test_y, 5, lrs, val_fraction=0.2, seed=0, **kwargs)
    # Re-derive the selection by hand on the same held-out part of the train split.
    fit, val = stratified_split(train_y, 0.2, seed=0)
    by_hand = {lr: linear_probe(train_x[fit], train_y[fit], train_x[val], train_y[val], 5, lr=lr, **kwargs).top1
               for lr in lrs}
    assert sweep.val_top1 == pytest.approx(by_hand)
    assert sweep.lr == max(lrs, key=lambda lr: (by_hand[lr], -lr))
    assert sweep.val_top1[1e-4] < max(by_hand.values())  # the grid matters
    # The reported probe is retrained on the WHOLE train split with the chosen lr.
    full = linear_probe(train_x, train_y, test_x, test_y, 5, lr=sweep.lr, **kwargs)
    assert (sweep.best.top1, sweep.best.train_top1) == (full.top1, full.train_top1)
    # Garbage test labels change the reported accuracy but not the choice.
    shuffled = test_y[torch.randperm(len(test_y), generator=gen(9))]
    assert linear_probe_sweep(train_x, train_y, test_x, shuffled, 5, lrs, 0.2, 0, **kwargs).lr == sweep.lr


def test_fewshot_protocol_keys_and_label_counts():
    train_x, train_y = clusters(500, 5, noise=0.5)
    test_x, test_y = clusters(100, 5, noise=0.5, seed=1)
    settings = EvalSettings(fewshot_fractions=[0.02, 0.2], linear_epochs=20, knn_k=5)
    out = evaluate_features(train_x, train_y, test_x, test_y, 5, ["fewshot"], settings)
    assert out["fewshot0.02_num_labels"] == 10 and out["fewshot0.2_num_labels"] == 100
    assert out["fewshot0.2_linear_top1"] > 0.95 and out["fewshot0.02_knn_top1"] > 0.9  # separable clusters


# ---------------------------------------------------------------- fine-tuning
def bright_dark_dataset(n: int, seed: int) -> TensorImageDataset:
    """Class 1: a bright square somewhere; class 0: none. Flip/crop-invariant, so learnable under augmentation."""
    g = gen(seed)
    images = torch.randint(0, 40, (n, 1, 16, 16), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % 2
    for i in range(n):
        if labels[i]:
            y, x = torch.randint(3, 8, (2,), generator=g).tolist()
            images[i, 0, y:y + 6, x:x + 6] = 220
    info = DatasetInfo("bright", 1, 2, 16, (0.2,), (0.3,), ("plain", "square"))
    return TensorImageDataset(images, labels, info)


def test_finetune_learns_keeps_the_input_encoder_and_the_global_rng():
    encoder = tiny_resnet()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    rng = torch.random.get_rng_state()
    settings = FinetuneSettings(epochs=4, lr=0.5, batch_size=16, seed=0)
    result = finetune(encoder, bright_dark_dataset(64, 0), bright_dark_dataset(32, 1), settings, keep_model=True)
    assert result.top1 > 0.9 and result.num_train == 64 and len(result.epoch_losses) == 4
    assert result.epoch_losses[-1] < result.epoch_losses[0]
    assert result.lr == pytest.approx(0.5 * 16 / 256) and result.backbone_lr == pytest.approx(result.lr * 0.1)
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())  # a copy was trained
    assert torch.equal(rng, torch.random.get_rng_state())
    assert not torch.equal(result.model[0].conv1.weight, encoder.conv1.weight)  # the backbone moved


def test_finetune_backbone_lr_scale_zero_trains_only_the_head():
    encoder = tiny_resnet()
    settings = FinetuneSettings(epochs=1, lr=0.5, batch_size=16, backbone_lr_scale=0.0)
    result = finetune(encoder, bright_dark_dataset(32, 0), bright_dark_dataset(8, 1), settings, keep_model=True)
    assert torch.equal(result.model[0].conv1.weight, encoder.conv1.weight)
    assert result.model[1].weight.abs().sum() > 0


def test_finetune_on_a_folder_with_indices(shapes_folder):
    from selfsup.data import load_dataset

    train, test = load_dataset(f"folder:{shapes_folder}", "train"), load_dataset(f"folder:{shapes_folder}", "test")
    subset = balanced_subset(train.labels, 0.25, seed=0).tolist()
    settings = FinetuneSettings(epochs=1, batch_size=8, image_size=16)
    result = finetune(tiny_resnet(), train, test, settings, train_indices=subset)
    assert result.num_train == len(subset) == 12 and 0.0 <= result.top1 <= 1.0
    with pytest.raises(ConfigError, match="optimizer"):
        finetune(tiny_resnet(), train, test, FinetuneSettings(optimizer="lamb"))


# ---------------------------------------------------------------- dense
def write_segmentation_folder(root: Path, n: int, size: int = 16, seed: int = 0, rgb: bool = False) -> Path:
    """images/ and masks/: a bright disc (class 1) and a mid-grey square (class 2) on a dark noisy background."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        cy, cx, r = rng.integers(4, size - 4), rng.integers(4, size - 4), rng.integers(2, 5)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
        sy, sx = rng.integers(0, size - 5, size=2)
        mask[sy:sy + 5, sx:sx + 5] = 2
        pixels = np.choose(mask, [20, 230, 120]) + rng.integers(0, 20, size=(size, size))
        pixels = pixels.clip(0, 255).astype(np.uint8)
        image = Image.fromarray(np.stack([pixels] * 3, -1), "RGB") if rgb else Image.fromarray(pixels, "L")
        image.save(root / "images" / f"{i:03d}.png")
        Image.fromarray(mask, "L").save(root / "masks" / f"{i:03d}.png")
    return root


@pytest.fixture
def seg_folder(tmp_path: Path) -> Path:
    write_segmentation_folder(tmp_path / "seg" / "train", 24, seed=0)
    write_segmentation_folder(tmp_path / "seg" / "test", 8, seed=1)
    return tmp_path / "seg"


def naive_miou(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int) -> float:
    """Per class, count TP/FP/FN pixel by pixel over the whole split; mean over classes that occur."""
    ious = []
    for c in range(num_classes):
        tp = fp = fn = 0
        for p, t in zip(predictions.flatten().tolist(), targets.flatten().tolist()):
            if t == IGNORE_INDEX:
                continue
            tp += p == c and t == c
            fp += p == c and t != c
            fn += p != c and t == c
        if tp + fp + fn:
            ious.append(tp / (tp + fp + fn))
    return sum(ious) / len(ious)


def test_miou_matches_a_pixel_loop():
    g = gen(2)
    targets = torch.randint(0, 4, (3, 9, 7), generator=g)
    targets[0, :2] = IGNORE_INDEX
    predictions = torch.where(torch.rand(3, 9, 7, generator=g) < 0.6, targets, torch.randint(0, 4, (3, 9, 7), generator=g))
    predictions[targets == IGNORE_INDEX] = 0
    scores = segmentation_scores(confusion_matrix(predictions, targets, 4))
    assert scores["miou"] == pytest.approx(naive_miou(predictions, targets, 4))
    valid = targets != IGNORE_INDEX
    assert scores["pixel_accuracy"] == pytest.approx((predictions[valid] == targets[valid]).double().mean().item())
    perfect = segmentation_scores(confusion_matrix(targets.clamp(max=3), targets, 4))
    assert perfect["miou"] == 1.0


def test_resnet_feature_map_pools_to_the_backbone_output():
    net = tiny_resnet().eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        fmap = resnet_feature_map(net, x)
        assert fmap.shape == (2, net.feature_dim, 2, 2)
        torch.testing.assert_close(fmap.mean((2, 3)), net(x))
        assert torch.equal(dense_features(net, x), fmap)


def test_vit_dense_features_are_the_patch_tokens_on_their_grid():
    vit = tiny_vit().eval()
    x = torch.randn(2, 1, 16, 12)
    with torch.no_grad():
        grid = dense_features(vit, x)
        patches = vit.forward_tokens(x).patches  # (2, 12, 192), row-major over a 4 x 3 grid
    assert grid.shape == (2, 192, 4, 3)
    torch.testing.assert_close(grid[1, :, 2, 1], patches[1, 2 * 3 + 1])
    with pytest.raises(ConfigError, match="ViT"):
        dense_features(nn.Flatten(), x)


class IntensityTokens(nn.Module):
    """A 'ViT' whose 2×2 patch tokens are ramps of the patch's mean intensity: linearly separable classes."""

    def forward_tokens(self, x: torch.Tensor):
        pooled = nn.functional.avg_pool2d(x, 2).flatten(2).transpose(1, 2)  # (B, N, 1)
        ramps = torch.cat([pooled, (pooled - 0.0).relu(), (pooled - 1.0).relu()], dim=2)
        return type("Tokens", (), {"patches": ramps})()


def test_dense_probe_segments_when_the_features_allow_it(seg_folder):
    train, test = load_segmentation(seg_folder, "train"), load_segmentation(seg_folder, "test")
    result = dense_probe(IntensityTokens(), train, test, DenseSettings(epochs=40, lr=0.5, batch_size=8))
    assert result.num_classes == 3 and result.image_size == 16 and result.feature_shape == (3, 8, 8)
    assert result.miou > 0.75 and set(result.per_class_iou) == {0, 1, 2}
    assert result.train_losses[-1] < result.train_losses[0]


def test_segmentation_folder_errors(tmp_path):
    root = write_segmentation_folder(tmp_path / "bad" / "train", 2)
    (root / "masks" / "001.png").unlink()
    with pytest.raises(DataError, match="no mask"):
        load_segmentation(tmp_path / "bad", "train")
    with pytest.raises(DataError, match="test"):
        load_segmentation(tmp_path / "bad", "test")


# ---------------------------------------------------------------- CLI
def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


RANDOM = ["--checkpoint", "random", "--backbone", "resnet18", "--set", "small_stem=true", "--set", "width=0.125",
          "--image-size", "16"]


def test_cli_eval_knn_sweep_linear_sweep_fewshot_finetune(capsys, shapes_folder, tmp_path):
    data = ["--data", f"folder:{shapes_folder}"]
    code, out, err = run(capsys, "eval", "knn", *RANDOM, *data, "--k", "3", "10", "--cache-dir", tmp_path / "c")
    assert code == 0, err
    result = json.loads(out)
    assert result["knn_top1"] == result["knn_top1_k3"] and "knn_top1_k10" in result
    code, out, err = run(capsys, "eval", "linear", *RANDOM, *data, "--lr", "0.01", "1.0", "--epochs", "3",
                         "--cache-dir", tmp_path / "c")
    assert code == 0, err
    result = json.loads(out)
    assert result["linear_lr"] in (0.01, 1.0) and {"linear_val_top1_lr0.01", "linear_val_top1_lr1"} <= set(result)
    code, out, err = run(capsys, "eval", "fewshot", *RANDOM, *data, "--fractions", "0.1", "0.5", "--epochs", "3",
                         "--k", "3", "--finetune", "--finetune-epochs", "1", "--output", tmp_path / "few.json")
    assert code == 0, err
    result = json.loads((tmp_path / "few.json").read_text())
    assert result["fewshot0.1_num_labels"] == 4 and result["fewshot0.5_num_labels"] == 24
    assert {"fewshot0.1_linear_top1", "fewshot0.5_knn_top1", "fewshot0.5_finetune_top1"} <= set(result)
    code, out, err = run(capsys, "eval", "finetune", *RANDOM, *data, "--epochs", "1", "--batch-size", "16",
                         "--fraction", "0.5")
    assert code == 0, err
    result = json.loads(out)
    assert result["num_train"] == 24 and 0.0 <= result["finetune_top1"] <= 1.0


def test_cli_eval_dense_on_resnet_and_vit(capsys, seg_folder):
    code, out, err = run(capsys, "eval", "dense", *RANDOM, "--data", seg_folder, "--epochs", "2")
    assert code == 0, err
    result = json.loads(out)
    assert result["feature_shape"] == [64, 2, 2] and result["num_classes"] == 3 and 0.0 <= result["miou"] <= 1.0
    code, out, err = run(capsys, "eval", "dense", "--checkpoint", "random", "--backbone", "vit-tiny", "--set",
                         "patch_size=4", "--set", "image_size=16", "--set", "depth=1", "--data", seg_folder,
                         "--epochs", "2")
    assert code == 0, err
    assert json.loads(out)["feature_shape"] == [192, 4, 4]
    code, _, err = run(capsys, "eval", "dense", *RANDOM, "--data", seg_folder / "missing")
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
