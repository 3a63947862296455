"""Tracking by colorization (Vondrick et al. 2018): the pointer, colour clusters, the frames:PATH
dataset, training through the engine, mask propagation and `selfsup track`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.apps.tracking import mean_iou, propagate_masks
from selfsup.backbones import build_backbone
from selfsup.cli import main
from selfsup.data import DatasetInfo, load_dataset
from selfsup.data.frames import FramePairDataset, read_video, unstack_frames
from selfsup.errors import ConfigError, DataError
from selfsup.methods import DataSpec, Progress, build_backbone_for, build_method
from selfsup.methods.video_colorization import VideoColorization, attention_copy, kmeans, minibatch_kmeans_update_


# Tiny tensors: a second intra-op thread only adds synchronisation (conftest.single_thread).
pytestmark = pytest.mark.usefixtures("single_thread")


def write_moving_square_videos(root: Path, videos: int = 3, frames: int = 8, size: int = 32, side: int = 10,
                               seed: int = 0) -> Path:
    """``root/videos/<name>/<frame>.png`` and ``root/masks/<name>/<frame>.png`` (0 background, 255 square).

    Each video: a static colourful background of smooth blobs and a checkered square of its own
    colour moving 2-3 pixels per frame, bouncing off the borders.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for v in range(videos):
        background = np.zeros((size, size, 3))
        for _ in range(6):
            cy, cx, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(size / 6, size / 3)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
            background += blob * rng.uniform(0, 1, size=3)
        background = 0.2 + 0.6 * background / background.max()
        colour = rng.uniform(0, 1, size=3)
        colour[rng.integers(3)] = 1.0
        texture = 0.3 + 0.7 * ((yy // 2 + xx // 2) % 2 == 0)[..., None]  # a checkerboard: visible in grey
        y, x = rng.uniform(0, size - side, size=2)
        vy, vx = rng.choice([-1, 1], size=2) * rng.uniform(2, 3, size=2)
        (root / "videos" / f"v{v}").mkdir(parents=True)
        (root / "masks" / f"v{v}").mkdir(parents=True)
        for t in range(frames):
            if not 0 <= y + vy <= size - side:
                vy = -vy
            if not 0 <= x + vx <= size - side:
                vx = -vx
            if t:
                y, x = y + vy, x + vx
            iy, ix = int(round(y)), int(round(x))
            mask = np.zeros((size, size), dtype=bool)
            mask[iy:iy + side, ix:ix + side] = True
            frame = np.where(mask[..., None], colour * texture, background)
            name = f"v{v}/{t:05d}.png"
            Image.fromarray((frame.clip(0, 1) * 255).astype(np.uint8), "RGB").save(root / "videos" / name)
            Image.fromarray(mask.astype(np.uint8) * 255, "L").save(root / "masks" / name)
    return root


def tiny_video_model(**config) -> VideoColorization:
    backbone = build_backbone("resnet18", in_channels=1, small_stem=True, width=0.125)
    config = {"head_hidden_dim": 32, "embedding_dim": 16, "output_stride": 4, "kmeans_samples": 512, **config}
    return VideoColorization(backbone, VideoColorization.Config(**config))


# --- the pointer -----------------------------------------------------------------------------------

def test_attention_copy_matches_naive_loops():
    torch.manual_seed(0)
    reference, target, values = torch.randn(2, 4, 6), torch.randn(2, 4, 5), torch.rand(2, 6, 3)
    copied, attention = attention_copy(reference, target, values, temperature=0.7)
    assert attention.shape == (2, 5, 6) and torch.allclose(attention.sum(dim=-1), torch.ones(2, 5))
    for b in range(2):
        for j in range(5):
            scores = torch.tensor([float(reference[b, :, i] @ target[b, :, j]) / 0.7 for i in range(6)])
            weights = scores.exp() / scores.exp().sum()
            assert torch.allclose(attention[b, j], weights, atol=1e-5)
            assert torch.allclose(copied[b, j], sum(weights[i] * values[b, i] for i in range(6)), atol=1e-5)
    sparse, attention = attention_copy(reference, target, values, temperature=0.7, topk=2)
    assert ((attention > 0).sum(dim=-1) == 2).all() and torch.allclose(attention.sum(dim=-1), torch.ones(2, 5))


def test_kmeans_finds_separated_clusters_and_minibatch_updates_follow_sculley():
    generator = torch.Generator().manual_seed(0)
    truth = torch.tensor([[0.0, 0.0], [40.0, 10.0], [-30.0, 50.0]])
    points = torch.cat([c + torch.randn(200, 2, generator=generator) for c in truth])
    centroids = kmeans(points, 3)
    assert torch.cdist(truth, centroids).min(dim=1).values.max() < 0.5
    assert torch.equal(kmeans(points, 3), centroids)  # deterministic
    assert kmeans(torch.zeros(10, 2), 4).shape == (4, 2)  # fewer distinct points than clusters
    c, counts = torch.tensor([[0.0, 0.0], [10.0, 10.0]]), torch.tensor([3, 1])
    minibatch_kmeans_update_(c, counts, torch.tensor([[1.0, 1.0], [9.0, 9.0], [11.0, 13.0]]))
    # Centroid 0: 1 new point, 4 in all -> moves 1/4 of the way; centroid 1: 2 new of 3 -> 2/3 of the way to (10, 11).
    assert torch.allclose(c, torch.tensor([[0.25, 0.25], [10.0, 10.0 + 2 / 3]])) and counts.tolist() == [4, 3]


def test_mean_iou_matches_the_definition():
    truth = torch.zeros(3, 4, 4, dtype=torch.long)
    truth[:, :2, :2] = 1
    predicted = truth.clone()
    predicted[1, 0, 0] = 0  # frame 1: 3 of 4 pixels
    predicted[2] = 0
    predicted[2, 2:, 2:] = 1  # frame 2: disjoint
    assert mean_iou(predicted, truth) == pytest.approx((0.75 + 0.0) / 2)
    assert mean_iou(truth, truth) == 1.0


# --- data ------------------------------------------------------------------------------------------

def test_frames_dataset_pairs_frames_of_one_video(tmp_path):
    root = tmp_path / "frames"
    for v, count in (("a", 4), ("b", 3)):
        (root / v).mkdir(parents=True)
        for t in range(count):  # frame t of video v is filled with value 10·t (+100 for video b)
            value = 10 * t + (100 if v == "b" else 0)
            Image.fromarray(np.full((6, 8, 3), value, np.uint8), "RGB").save(root / v / f"{t:03d}.png")
    (root / "single").mkdir()
    Image.fromarray(np.zeros((6, 8, 3), np.uint8), "RGB").save(root / "single" / "0.png")  # too short: skipped
    dataset = load_dataset(f"frames:{root}")
    assert isinstance(dataset, FramePairDataset) and len(dataset) == 3 + 2
    assert dataset.info.num_channels == 6 and dataset.info.num_classes == 0 and dataset.info.image_size == 6
    assert len(dataset.info.mean) == 6 and dataset.info.mean[:3] == dataset.info.mean[3:]
    torch.manual_seed(0)
    for i in range(len(dataset)):
        for _ in range(5):
            pair, label = dataset[i]
            assert pair.shape == (6, 6, 8) and pair.dtype == torch.uint8 and label == -1
            reference, target = unstack_frames(pair.unsqueeze(0))
            r, t = int(reference[0, 0, 0, 0]), int(target[0, 0, 0, 0])
            assert (r >= 100) == (t >= 100) and r < t  # same video, reference first
    read, files = read_video(root / "a")
    assert read.shape == (4, 3, 6, 8) and [f.name for f in files] == ["000.png", "001.png", "002.png", "003.png"]
    with pytest.raises(DataError, match="no videos in"):
        load_dataset(f"frames:{root / 'single'}")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"frames:{tmp_path / 'nope'}")


def test_video_colorization_needs_colour_frame_pairs():
    backbone = build_backbone_for("video-colorization", "resnet18", {"small_stem": True, "width": 0.125}, 3)
    info = DatasetInfo("cifar10", 3, 10, 32, (0.5,) * 3, (0.25,) * 3)
    with pytest.raises(ConfigError, match="video-colorization needs pairs of colour video frames .*frames:PATH"):
        build_method("video-colorization", backbone, {}, DataSpec(info, 10))


# --- training and tracking -------------------------------------------------------------------------

def test_video_colorization_learns_to_point(tmp_path):
    root = write_moving_square_videos(tmp_path, videos=2, frames=6, size=32)
    dataset = FramePairDataset(root / "videos")
    torch.manual_seed(0)
    pairs = torch.stack([dataset[i][0] for i in range(len(dataset))]).float() / 255  # (10, 6, 32, 32) in [0, 1]
    method = tiny_video_model(kmeans_steps=3)
    optimizer = torch.optim.Adam(method.parameters(), lr=3e-3)
    losses, centroids = [], method.centroids.clone()
    for step in range(15):
        out = method([pairs])
        assert torch.equal(method.centroids, centroids)  # forward never moves the clusters
        optimizer.zero_grad()
        out.loss.backward()
        if step == 0:
            assert method.backbone.conv1.weight.grad.abs().sum() > 0
        optimizer.step()
        method.on_step_end(out, Progress(step, 15))
        centroids = method.centroids.clone()
        losses.append(out.loss.item())
    assert int(method.kmeans_updates) == 3 and "ab_samples" not in out.extras  # clusters frozen after 3 steps
    assert losses[-1] < 0.7 * losses[0]
    assert out.features.shape == (10, method.backbone.feature_dim)
    assert method.encoder()(pairs[:, :3]).shape == (10, method.backbone.feature_dim)


def test_train_on_frames_then_track_from_the_cli(tmp_path, capsys):
    root = write_moving_square_videos(tmp_path / "train", videos=8, frames=10, size=32)
    run = tmp_path / "run"
    code = main(["train", "--method", "video-colorization", "--data", f"frames:{root / 'videos'}",
                 "--backbone", "resnet18", "--epochs", "6", "--batch-size", "8", "--num-workers", "0",
                 "--output-dir", str(run),
                 "--set", "backbone_args={small_stem: true, width: 0.125}",
                 "--set", "method_args={head_hidden_dim: 32, embedding_dim: 16, output_stride: 2, kmeans_samples: 512}",
                 "--set", "optim={name: adamw, lr: 0.003, lr_scaling: none, weight_decay: 0.0, warmup_epochs: 0}",
                 "--set", "views.image_size=32", "--set", "trainer.progress_bar=false"])
    assert code == 0, capsys.readouterr().err
    assert "recipe: " in capsys.readouterr().err  # configs/frames/video-colorization.yaml, overridden above

    # Videos the model has not seen.
    root = write_moving_square_videos(tmp_path / "test", videos=2, frames=8, size=32, seed=1)
    out = tmp_path / "tracked"
    code = main(["track", "--checkpoint", str(run / "last.ckpt"), "--video", str(root / "videos" / "v0"),
                 "--masks", str(root / "masks" / "v0"), "--output", str(out)])
    assert code == 0
    assert "mean IoU" in capsys.readouterr().out
    summary = json.loads((out / "track.json").read_text())
    assert summary["frames"] == 8 and len(list(out.glob("*.png"))) == 8
    with Image.open(out / "00003.png") as image:
        assert image.mode == "P" and image.size == (32, 32)
    # Propagation follows the square: far better than repeating the first mask.
    assert summary["mean_iou"] > summary["mean_iou_first_mask_repeated"] + 0.2
    assert summary["mean_iou"] > 0.5

    # The same through the library, with the model from the checkpoint.
    from selfsup.apps.colorization import load_method

    method, _ = load_method(run / "last.ckpt", ("video-colorization",), "track")
    frames, _ = read_video(root / "videos" / "v1")
    truth = torch.stack([torch.from_numpy(np.array(Image.open(p)) > 0).long()
                         for p in sorted((root / "masks" / "v1").glob("*.png"))])
    masks = propagate_masks(method, frames, truth[0], temperature=0.5)
    assert masks.shape == truth.shape and torch.equal(masks[0], truth[0])
    assert mean_iou(masks, truth) > mean_iou(truth[:1].expand_as(truth), truth) + 0.2

    other = tmp_path / "colorization.ckpt"
    torch.save({"selfsup": {"config": {"method": "colorization"}}, "state_dict": {}}, other)
    code = main(["track", "--checkpoint", str(other), "--video", str(root / "videos" / "v0"),
                 "--first-mask", str(root / "masks" / "v0" / "00000.png"), "--output", str(out)])
    assert code == 2 and "needs a checkpoint of video-colorization" in capsys.readouterr().err
