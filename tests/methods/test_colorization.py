"""Colorization (Zhang et al. 2016): Lab conversions, ab bins, soft encoding, the annealed mean, the
method on generated colour images, and `selfsup colorize` (loss and rebalancing: tests/losses/)."""

from __future__ import annotations

import colorsys
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.backbones import build_backbone
from selfsup.cli import main
from selfsup.data import DatasetInfo
from selfsup.errors import ConfigError
from selfsup.methods import DataSpec, Progress, build_backbone_for, build_method
from selfsup.methods.colorization import Colorization
from selfsup.transforms.color import (
    ab_gamut_bins,
    annealed_mean,
    lab_to_rgb,
    rgb_to_lab,
    soft_encode_ab,
)

# Tiny tensors: a second intra-op thread only adds synchronisation (conftest.single_thread).
pytestmark = pytest.mark.usefixtures("single_thread")


SHAPES = ("disc", "square", "triangle", "ring", "cross", "stripes")
HUES = (0.0, 0.0, 0.33, 0.33, 0.62, 0.62)  # two shapes per hue: shape tells colour, colour not the class


def write_colour_shapes(root: Path, per_class: int = 8, size: int = 16, seed: int = 0,
                        classes: tuple[str, ...] = SHAPES) -> Path:
    """A labelled folder of coloured shapes on greyish noise. Each shape has a hue that one other
    shape shares: colour is predictable from the shape (which L shows), but colour alone tells
    only which pair of classes an image belongs to."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] + 0.5
    for label, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cy, cx = rng.uniform(0.35, 0.65, size=2) * size
            r = rng.uniform(0.22, 0.36) * size
            dy, dx = yy - cy, xx - cx
            shape = {
                "disc": dy**2 + dx**2 <= r * r,
                "square": (abs(dy) <= r * 0.85) & (abs(dx) <= r * 0.85),
                "triangle": (dy <= r * 0.8) & (dy >= -r) & (abs(dx) <= (dy + r) * 0.6),
                "ring": (dy**2 + dx**2 <= r * r) & (dy**2 + dx**2 >= (0.55 * r) ** 2),
                "cross": ((abs(dy) <= r * 0.3) | (abs(dx) <= r * 0.3)) & (abs(dy) <= r) & (abs(dx) <= r),
                "stripes": (np.floor((dx + size) / max(2.0, r * 0.5)) % 2 == 0) & (abs(dy) <= r) & (abs(dx) <= r),
            }[name]
            hue = (HUES[label] + rng.uniform(-0.04, 0.04)) % 1.0
            fg = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.55, 1.0)))
            bg = rng.uniform(0.25, 0.75) + rng.normal(0, 0.03, size=3)
            noise = rng.normal(0, 0.04, size=(size, size, 1))
            image = np.where(shape[..., None], fg, bg) + noise
            Image.fromarray((image.clip(0, 1) * 255).astype(np.uint8), "RGB").save(folder / f"{i:03d}.png")
    return root


def colour_batch(batch: int = 8, size: int = 16, seed: int = 0) -> torch.Tensor:
    """RGB images in [0, 1] ``(B, 3, size, size)``: coloured discs/squares, colour tied to the shape."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] + 0.5
    images = []
    for i in range(batch):
        cy, cx = rng.uniform(0.35, 0.65, size=2) * size
        r = rng.uniform(0.25, 0.35) * size
        disc = i % 2 == 0
        shape = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r if disc else (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
        fg = np.array([0.9, 0.15, 0.1]) if disc else np.array([0.1, 0.3, 0.95])
        images.append(np.where(shape[..., None], fg, np.full(3, 0.5)))
    return torch.tensor(np.stack(images), dtype=torch.float32).permute(0, 3, 1, 2)


def tiny_colorization(**config) -> Colorization:
    backbone = build_backbone("resnet18", in_channels=1, small_stem=True, width=0.125)
    return Colorization(backbone, Colorization.Config(head_hidden_dim=32, **config))


# --- Lab -----------------------------------------------------------------------------------------

def naive_lab(r: float, g: float, b: float) -> tuple[float, float, float]:
    """CIE Lab of one sRGB colour, written out from the standards (IEC 61966-2-1, CIE 15)."""
    def linear(c):
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    rl, gl, bl = linear(r), linear(g), linear(b)
    x = (0.4124564 * rl + 0.3575761 * gl + 0.1804375 * bl) / 0.95047
    y = 0.2126729 * rl + 0.7151522 * gl + 0.0721750 * bl
    z = (0.0193339 * rl + 0.1191920 * gl + 0.9503041 * bl) / 1.08883

    def f(t):
        return t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    return 116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))


def as_image(colours) -> torch.Tensor:
    return torch.tensor(colours, dtype=torch.float64).T.reshape(1, 3, len(colours), 1)


def test_lab_reference_values():
    lab = rgb_to_lab(as_image([(1, 1, 1), (0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]))[0, :, :, 0].T
    expected = torch.tensor([(100, 0, 0), (0, 0, 0), (53.24, 80.09, 67.20), (87.73, -86.18, 83.18),
                             (32.30, 79.19, -107.86)], dtype=torch.float64)
    assert torch.allclose(lab, expected, atol=0.01)


def test_lab_matches_the_formulas_pixel_by_pixel():
    rng = np.random.default_rng(0)
    colours = [tuple(c) for c in rng.uniform(0, 1, size=(20, 3))] + [(0.02, 0.01, 0.03), (0.003, 0.0, 0.001)]
    lab = rgb_to_lab(as_image(colours))[0, :, :, 0].T
    assert torch.allclose(lab, torch.tensor([naive_lab(*c) for c in colours], dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_lab_round_trip(dtype, tol):
    rgb = torch.rand(4, 3, 8, 8, dtype=dtype, generator=torch.Generator().manual_seed(0))
    rgb[0, :, 0, 0] = 0.0  # black and near-black use the linear segments of both curves
    rgb[0, :, 0, 1] = 0.001
    assert (lab_to_rgb(rgb_to_lab(rgb)) - rgb).abs().max() < tol


def test_lab_to_rgb_clamps_out_of_gamut_colours():
    lab = torch.tensor([50.0, 120.0, -120.0]).view(1, 3, 1, 1)  # far outside sRGB
    assert lab_to_rgb(lab).min() >= 0 and lab_to_rgb(lab).max() <= 1
    raw = lab_to_rgb(lab, clamp=False)
    assert raw.min() < 0 or raw.max() > 1


# --- quantised ab ----------------------------------------------------------------------------------

def test_gamut_bins_cover_every_srgb_colour_and_nothing_else():
    bins = ab_gamut_bins()
    assert torch.equal(bins, ab_gamut_bins())  # deterministic
    assert 200 < len(bins) < 400 and bins.shape[1] == 2
    assert torch.equal(bins, torch.round(bins / 10) * 10)  # cell centres on the grid of side 10
    assert (bins == 0).all(dim=1).any()  # grey
    colours = torch.rand(3, 5000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ab = rgb_to_lab(colours.view(1, 3, -1, 1))[0, 1:, :, 0].T.float()
    nearest = torch.cdist(ab, bins).min(dim=1).values
    assert nearest.max() <= 5 * math.sqrt(2) + 1e-4  # every colour's cell is a bin
    assert len(ab_gamut_bins(20)) < len(bins) / 3  # a coarser grid has fewer cells


def test_soft_encoding_matches_the_gaussian_over_five_nearest_bins():
    bins = ab_gamut_bins()
    ab = torch.tensor([[3.3, -6.1], [41.7, 12.9], [-58.2, 54.6]]).T.reshape(1, 2, 3, 1)  # no ties in distance
    z = soft_encode_ab(ab, bins)  # (1, Q, 3, 1)
    assert torch.allclose(z.sum(dim=1), torch.ones(1, 3, 1))
    for p in range(3):
        point = ab[0, :, p, 0]
        d2 = ((bins - point) ** 2).sum(dim=1)
        order = d2.argsort()[:5]
        expected = torch.zeros(len(bins))
        weights = torch.exp(-d2[order] / (2 * 5.0**2))
        expected[order] = weights / weights.sum()
        assert torch.allclose(z[0, :, p, 0], expected, atol=1e-6)
        assert z[0, :, p, 0].argmax() == order[0] and z[0, order[0], p, 0] > 0.3  # most mass on the nearest bin
        assert (z[0, :, p, 0] > 0).sum() == 5


def test_annealed_mean_interpolates_between_mean_and_mode():
    torch.manual_seed(0)
    centers = torch.randn(7, 2) * 30
    logits = torch.randn(2, 7, 3, 3)
    mean = torch.einsum("bqhw,qc->bchw", torch.softmax(logits, dim=1), centers)
    assert torch.allclose(annealed_mean(logits, centers, 1.0), mean, atol=1e-5)
    mode = centers[logits.argmax(dim=1)].permute(0, 3, 1, 2)
    assert torch.allclose(annealed_mean(logits, centers, 1e-4), mode, atol=1e-3)
    # Eq. 5 written out: f_T(z) = exp(log z / T) / Σ_q exp(log z_q / T), then its mean.
    z = torch.softmax(logits, dim=1)
    f_t = torch.exp(torch.log(z) / 0.38)
    f_t = f_t / f_t.sum(dim=1, keepdim=True)
    assert torch.allclose(annealed_mean(logits, centers, 0.38), torch.einsum("bqhw,qc->bchw", f_t, centers), atol=1e-4)


# --- the method ------------------------------------------------------------------------------------

def test_colorization_learns_and_updates_rebalancing_only_after_the_step():
    torch.manual_seed(0)
    method = tiny_colorization()
    images = colour_batch(8)
    optimizer = torch.optim.Adam(method.parameters(), lr=3e-3)
    losses = []
    for step in range(12):
        out = method([images])
        assert method.rebalancing.counts.sum() == step * 8 * 4 * 4  # forward changed nothing
        optimizer.zero_grad()
        out.loss.backward()
        if step == 0:
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.head.parameters())
            assert method.backbone.conv1.weight.grad.abs().sum() > 0
        optimizer.step()
        method.on_step_end(out, Progress(step, 12))
        losses.append(out.loss.item())
    assert losses[-1] < 0.7 * losses[0]
    assert out.features.shape == (8, method.backbone.feature_dim) and not out.features.requires_grad
    # The learned colours: red discs, blue squares (annealed mean at the shapes' centres). Batch
    # statistics, as in training: 12 steps leave BatchNorm's running averages far from them.
    coloured = method.colorize(images)[:2]
    assert coloured.shape == (2, 3, 16, 16) and 0 <= coloured.min() and coloured.max() <= 1
    centre = coloured[:, :, 8, 8]
    assert centre[0, 0] > centre[0, 2] and centre[1, 2] > centre[1, 0]


def test_encoder_sees_only_lightness():
    torch.manual_seed(0)
    info = DatasetInfo("colour", 3, 2, 16, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    method = build_method("colorization", build_backbone_for("colorization", "resnet18", {"small_stem": True,
                          "width": 0.125}, 3), {"head_hidden_dim": 16}, DataSpec(info, 8)).eval()
    encoder = method.encoder()
    lab = torch.zeros(2, 3, 16, 16)
    lab[:, 0] = torch.linspace(30, 70, 16)  # an L ramp, in gamut with small chroma
    lab[1, 1], lab[1, 2] = 12.0, -9.0  # same L, other colour
    rgb = lab_to_rgb(lab.double()).float()
    mean, std = torch.tensor(info.mean).view(1, 3, 1, 1), torch.tensor(info.std).view(1, 3, 1, 1)
    features = encoder((rgb - mean) / std)
    assert features.shape == (2, encoder.feature_dim) == (2, method.backbone.feature_dim)
    assert torch.allclose(features[0], features[1], atol=1e-4)
    assert not torch.allclose(encoder(((rgb * 0.5) - mean) / std), features, atol=1e-3)  # L does matter


def test_grayscale_data_is_a_clear_error():
    info = DatasetInfo("fashion-mnist", 1, 10, 28, (0.286,), (0.353,))
    backbone = build_backbone_for("colorization", "resnet18", {"small_stem": True, "width": 0.125}, 1)
    with pytest.raises(ConfigError, match="colorization needs colour images; fashion-mnist has 1 channel; "
                                          "use cifar10, stl10 or folder:PATH with colour images"):
        build_method("colorization", backbone, {}, DataSpec(info, 10))
    with pytest.raises(ConfigError, match="rebalance_mix"):
        build_method("colorization", backbone, {"rebalance_mix": 0.0})


def test_train_then_colorize_from_the_cli(tmp_path, capsys):
    data = write_colour_shapes(tmp_path / "shapes" / "train", per_class=4, size=16)
    write_colour_shapes(tmp_path / "shapes" / "test", per_class=2, size=16, seed=1)
    run = tmp_path / "run"
    code = main(["train", "--method", "colorization", "--data", f"folder:{tmp_path / 'shapes'}",
                 "--backbone", "resnet18", "--epochs", "1", "--batch-size", "8", "--num-workers", "0",
                 "--output-dir", str(run), "--no-eval",
                 "--set", "backbone_args={small_stem: true, width: 0.125}", "--set", "views.image_size=16",
                 "--set", "method_args={head_hidden_dim: 16}", "--set", "trainer.progress_bar=false",
                 "--set", "trainer.limit_train_batches=2", "--set", "monitor.knn_every=0"])
    assert code == 0
    capsys.readouterr()
    # The evaluation machinery rebuilds the L-only encoder from the checkpoint.
    from selfsup.evaluation import load_encoder

    loaded = load_encoder(str(run / "last.ckpt"))
    assert loaded.encoder(torch.randn(2, 3, 16, 16)).shape == (2, loaded.encoder.feature_dim)

    # A folder (with a sub-folder) and a single grayscale file.
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((20, 24), 128, np.uint8), "L").save(grey)
    out = tmp_path / "coloured"
    assert main(["colorize", "--checkpoint", str(run / "last.ckpt"), "--input", str(data), "--output", str(out)]) == 0
    written = sorted(out.rglob("*.png"))
    assert len(written) == 4 * len(SHAPES) and (out / "disc" / "000.png").is_file()
    with Image.open(written[0]) as image:
        assert image.mode == "RGB" and image.size == (16, 16)
    assert main(["colorize", "--checkpoint", str(run / "last.ckpt"), "--input", str(grey), "--output", str(out),
                 "--temperature", "1.0"]) == 0
    with Image.open(out / "grey.png") as image:
        assert image.size == (24, 20)
    assert "coloured 1 image" in capsys.readouterr().out

    # Not a colorization checkpoint: one line, exit 2.
    other = tmp_path / "simclr.ckpt"
    torch.save({"selfsup": {"config": {"method": "simclr"}}, "state_dict": {}}, other)
    assert main(["colorize", "--checkpoint", str(other), "--input", str(grey), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "trained with method 'simclr'" in err and "colorization or split-brain" in err and len(err.splitlines()) == 1


RECIPES = Path(__file__).parents[2] / "src" / "selfsup" / "configs"


@pytest.mark.parametrize("recipe", ["cifar10/colorization", "imagenet/colorization", "folder/colorization",
                                    "cifar10/split-brain", "imagenet/split-brain", "folder/split-brain",
                                    "frames/video-colorization"])
def test_recipes_build_their_method(recipe):
    from selfsup.config import make_config
    from selfsup.engine.trainer import resolve_views
    from selfsup.methods import METHODS

    config = make_config(files=[RECIPES / f"{recipe}.yaml"])
    assert config.method == recipe.split("/")[1]
    cls = METHODS.get(config.method)
    method_config = cls.make_config(config.method_args)
    views = resolve_views(config)
    assert views.jitter_prob == 0 and views.grayscale_prob == 0  # colour is the target: never augmented
    backbone = build_backbone_for(config.method, config.backbone, config.backbone_args, 3, config.method_args)
    assert backbone.conv1.in_channels == 1 and cls.backbone_in_channels(3, method_config) == 1
