"""Tests for selfsup.transforms: view shapes, per-view probabilities, determinism, config checks, grids."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from selfsup.data import DatasetInfo, TensorImageDataset
from selfsup.errors import ConfigError
from selfsup.transforms import (MultiViewTransform, ViewConfig, blur_kernel_size, denormalize, eval_transform,
                                save_view_grid)

GRAY = DatasetInfo("gray", 1, 10, 28, (0.2860,), (0.3530,))
COLOR = DatasetInfo("color", 3, 10, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
# Only the operation under test is random: no crop, flip, jitter or grayscale.
PLAIN = dict(crop_scale=(1.0, 1.0), flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0,
             blur_prob=(0.0, 0.0), solarize_prob=(0.0, 0.0))


def random_image(info: DatasetInfo, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (info.num_channels, info.image_size, info.image_size), generator=g,
                         dtype=torch.uint8)


def normalized(image: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    mean, std = torch.tensor(info.mean).view(-1, 1, 1), torch.tensor(info.std).view(-1, 1, 1)
    return (image.float() / 255 - mean) / std


@pytest.mark.parametrize("info", [GRAY, COLOR], ids=["gray", "color"])
@pytest.mark.parametrize("preset", ["simclr", "byol", "dino"])
def test_view_shapes_and_dtype(info: DatasetInfo, preset: str) -> None:
    cfg = getattr(ViewConfig, preset)()
    views = MultiViewTransform(cfg, info)(random_image(info))
    assert len(views) == cfg.num_global_views + cfg.num_local_views
    local = round(info.image_size * 96 / 224)
    for k, view in enumerate(views):
        side = info.image_size if k < cfg.num_global_views else local
        assert view.shape == (info.num_channels, side, side) and view.dtype == torch.float32
        assert torch.isfinite(view).all()


def test_multi_crop_counts_and_sizes() -> None:
    t = MultiViewTransform(ViewConfig.dino(image_size=64, num_local_views=3, local_size=24), COLOR)
    shapes = [tuple(v.shape) for v in t(random_image(COLOR))]
    assert shapes == [(3, 64, 64)] * 2 + [(3, 24, 24)] * 3
    assert MultiViewTransform(ViewConfig.dino(), COLOR).local_size == round(32 * 96 / 224)


def test_gray_pipeline_skips_colour_only_ops() -> None:
    t = MultiViewTransform(ViewConfig.simclr(jitter_prob=1.0), GRAY)
    ops = t.views[0].transforms
    assert not any(isinstance(op, v2.RandomGrayscale) for op in ops)
    jitter = next(op.transforms[0] for op in ops if isinstance(op, v2.RandomApply)
                  and isinstance(op.transforms[0], v2.ColorJitter))
    assert jitter.saturation is None and jitter.hue is None and jitter.brightness is not None
    torch.manual_seed(0)
    view = t(random_image(GRAY))[0]
    assert view.shape == (1, 28, 28)  # brightness/contrast work on one channel


@pytest.mark.parametrize("op", ["solarize", "blur"])
def test_per_view_probabilities(op: str) -> None:
    cfg = ViewConfig(**{**PLAIN, f"{op}_prob": (1.0, 0.0)}, blur_sigma=(2.0, 2.0))  # sigma 0.1 barely blurs
    if op == "solarize":  # a constant bright image: solarizing inverts every pixel
        image = torch.full((3, 32, 32), 230, dtype=torch.uint8)
    else:  # a sharp-edged checkerboard: blurring changes every edge pixel
        image = (torch.arange(32).view(1, -1) // 4 + torch.arange(32).view(-1, 1) // 4) % 2 * 255
        image = image.to(torch.uint8).expand(3, 32, 32).contiguous()
    t = MultiViewTransform(cfg, COLOR)
    for seed in range(10):
        torch.manual_seed(seed)
        changed, unchanged = t(image)
        torch.testing.assert_close(unchanged, normalized(image, COLOR))  # p=0: never applied
        assert (changed - unchanged).abs().max() > 0.5  # p=1: always applied
    if op == "solarize":
        torch.testing.assert_close(changed, normalized(255 - image, COLOR), atol=1e-5, rtol=0)


def test_deterministic_under_seed_and_views_differ() -> None:
    t = MultiViewTransform(ViewConfig.byol(), COLOR)
    image = random_image(COLOR)
    torch.manual_seed(3)
    first = t(image)
    torch.manual_seed(3)
    second = t(image)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[0], first[1])


def test_presets_follow_papers() -> None:
    assert ViewConfig.simclr().jitter == (0.8, 0.8, 0.8, 0.2)
    byol = ViewConfig.byol()
    assert byol.blur_prob == (1.0, 0.1) and byol.solarize_prob == (0.0, 0.2)
    dino = ViewConfig.dino(num_local_views=6)
    assert dino.num_local_views == 6 and dino.local_crop_scale == (0.05, 0.4) and dino.crop_scale == (0.4, 1.0)
    assert ViewConfig(crop_scale=[0.2, 1.0]).crop_scale == (0.2, 1.0)  # YAML lists become tuples


@pytest.mark.parametrize("overrides,match", [
    (dict(flip_prob=1.5), "flip_prob=1.5"),
    (dict(solarize_prob=(0.0, -0.1)), r"solarize_prob\[1\]"),
    (dict(crop_scale=(0.9, 0.2)), "crop_scale"),
    (dict(local_crop_scale=(0.0, 0.4)), "local_crop_scale"),
    (dict(blur_prob=(1.0,)), r"blur_prob.*num_global_views=2"),
    (dict(num_global_views=3), "num_global_views=3"),
    (dict(jitter=(0.4, 0.4, 0.4, 0.7)), "hue"),
    (dict(image_size=0), "image_size=0"),
    (dict(blur_sigma=(2.0, 0.1)), "blur_sigma"),
    (dict(colour=1), "unknown view setting 'colour'"),
])
def test_validate_errors(overrides: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ViewConfig.simclr(**overrides).validate()


def test_blur_kernel_is_odd_tenth_of_side() -> None:
    assert [blur_kernel_size(s) for s in (12, 28, 32, 96, 224)] == [3, 3, 3, 11, 23]  # 23: BYOL at 224


def test_eval_transform() -> None:
    image = random_image(GRAY)
    out = eval_transform(GRAY)(image)
    torch.testing.assert_close(out, normalized(image, GRAY))  # native size: no resampling
    torch.testing.assert_close(denormalize(out, GRAY), image.float() / 255)
    assert eval_transform(COLOR, 64)(random_image(COLOR)).shape == (3, 64, 64)
    big = torch.randint(0, 256, (3, 300, 400), dtype=torch.uint8)
    folder = DatasetInfo("folder", 3, 0, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert eval_transform(folder)(big).shape == (3, 224, 224)


@pytest.mark.parametrize("info", [GRAY, COLOR], ids=["gray", "color"])
def test_save_view_grid(tmp_path: Path, info: DatasetInfo) -> None:
    images = torch.stack([random_image(info, seed) for seed in range(5)])
    dataset = TensorImageDataset(images, None, info)
    t = MultiViewTransform(ViewConfig.dino(num_local_views=2), info)
    state = torch.get_rng_state()
    path = save_view_grid(dataset, t, str(tmp_path / "sub" / "views.png"), num_images=4)
    assert torch.equal(state, torch.get_rng_state())  # global random state untouched
    side = info.image_size + 2  # make_grid pads 2 pixels
    with Image.open(path) as png:
        assert png.size == ((1 + 4) * side + 2, 4 * side + 2)
        pixels = torch.tensor(list(png.getdata()), dtype=torch.float32)
    assert pixels.std() > 10
    again = save_view_grid(dataset, t, str(tmp_path / "again.png"), num_images=4)
    assert Path(path).read_bytes() == Path(again).read_bytes()  # same seed, same picture
