"""Tests for selfsup.transforms.batched: each op against torchvision's functional op on single images
with the same parameters, the whole pipeline against a per-image torchvision re-composition, the
random parameters' distribution against views.py's transforms, and shapes/determinism/devices."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from selfsup.data import DatasetInfo
from selfsup.transforms import BatchedMultiViewTransform, MultiViewTransform, ViewConfig, blur_kernel_size
from selfsup.transforms import batched as B

GRAY = DatasetInfo("gray", 1, 10, 28, (0.2860,), (0.3530,))
COLOR = DatasetInfo("color", 3, 10, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
# Only the operation under test is random: no crop, flip, jitter, grayscale, blur or solarize.
PLAIN = dict(crop_scale=(1.0, 1.0), flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0,
             blur_prob=(0.0, 0.0), solarize_prob=(0.0, 0.0))
ATOL = 1e-5  # float32 rounding; hue and crops stay below 2e-6 in practice
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def images(info: DatasetInfo, batch: int, seed: int = 0, size: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    side = size or info.image_size
    return torch.randint(0, 256, (batch, info.num_channels, side, side), generator=g, dtype=torch.uint8)


def floats(batch: int, channels: int = 3, side: int = 20, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, channels, side, side, generator=torch.Generator().manual_seed(seed))


def assert_each_image(batched: torch.Tensor, reference, x: torch.Tensor, atol: float = ATOL) -> None:
    """``batched[i]`` equals ``reference(x[i], i)`` for every sample."""
    for i in range(len(x)):
        torch.testing.assert_close(batched[i], reference(x[i], i), atol=atol, rtol=0)


# --- Shapes, devices, determinism -----------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("info", [GRAY, COLOR], ids=["gray", "color"])
@pytest.mark.parametrize("preset", ["simclr", "byol", "dino"])
def test_shapes_dtype_device(info: DatasetInfo, preset: str, device: str) -> None:
    cfg = getattr(ViewConfig, preset)()
    t = BatchedMultiViewTransform(cfg, info).to(device)
    views = t(images(info, 5).to(device), generator=torch.Generator().manual_seed(0))
    local = round(info.image_size * 96 / 224)
    assert len(views) == cfg.num_global_views + cfg.num_local_views
    for k, view in enumerate(views):
        side = info.image_size if k < cfg.num_global_views else local
        assert view.shape == (5, info.num_channels, side, side) and view.dtype == torch.float32
        assert view.device.type == device and torch.isfinite(view).all()
    assert list(t.parameters()) == []


def test_multi_crop_counts_and_sizes() -> None:
    t = BatchedMultiViewTransform(ViewConfig.dino(image_size=64, num_local_views=3, local_size=24), COLOR)
    shapes = [tuple(v.shape) for v in t(images(COLOR, 4))]
    assert shapes == [(4, 3, 64, 64)] * 2 + [(4, 3, 24, 24)] * 3
    t = BatchedMultiViewTransform(ViewConfig.dino(), COLOR)
    assert (t.global_size, t.local_size, len(t(images(COLOR, 2)))) == (32, 14, 10)


def test_deterministic_under_generator_and_seed() -> None:
    t = BatchedMultiViewTransform(ViewConfig.byol(), COLOR)
    x = images(COLOR, 8)
    first = t(x, torch.Generator().manual_seed(3))
    second = t(x, torch.Generator().manual_seed(3))
    other = t(x, torch.Generator().manual_seed(4))
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not any(torch.equal(a, b) for a, b in zip(first, other))
    torch.manual_seed(5)  # no generator: the global one, like MultiViewTransform
    third = t(x)
    torch.manual_seed(5)
    assert all(torch.equal(a, b) for a, b in zip(third, t(x)))


def test_samples_and_views_get_their_own_parameters() -> None:
    # One image repeated: anything that differs between samples comes from per-sample parameters.
    t = BatchedMultiViewTransform(ViewConfig.simclr(), COLOR)
    views = t(images(COLOR, 1).expand(16, -1, -1, -1).contiguous(), torch.Generator().manual_seed(0))
    for view in views:
        flat = view.flatten(1)
        assert len({tuple(row.tolist()) for row in flat}) == 16
    assert not torch.equal(views[0], views[1])  # the two SimCLR views share one batch but not parameters


def test_rejects_wrong_input() -> None:
    t = BatchedMultiViewTransform(ViewConfig.simclr(), COLOR)
    with pytest.raises(ValueError, match="uint8"):
        t(images(COLOR, 2).float())
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        t(images(GRAY, 2))


# --- Each op against torchvision, one image at a time -----------------------------------------

@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", ["brightness", "contrast", "saturation"])
def test_blends_match_torchvision(name: str, channels: int) -> None:
    x = floats(12, channels)
    factors = torch.linspace(0.0, 2.0, 12)
    ours = getattr(B, f"adjust_{name}_")(x.clone(), factors)
    reference = getattr(TF, f"adjust_{name}")
    assert_each_image(ours, lambda image, i: reference(image, factors[i].item()), x)


def test_hue_matches_torchvision() -> None:
    x = floats(12)
    x[0, :, :5] = x[0, :1, :5]  # grey pixels (all channels equal)
    x[1, 1] = x[1, 0]  # ties between the largest channels
    x[2, 2] = x[2, 1]
    factors = torch.linspace(-0.5, 0.5, 12)
    ours = B.adjust_hue_(x.clone(), factors)
    assert_each_image(ours, lambda image, i: TF.adjust_hue(image, factors[i].item()), x)
    gray = floats(2, channels=1)
    assert torch.equal(B.adjust_hue_(gray.clone(), factors[:2]), gray)


def test_color_jitter_runs_each_sample_in_its_own_order() -> None:
    x = floats(24)
    g = torch.Generator().manual_seed(1)
    factors = torch.stack([torch.empty(24).uniform_(0.2, 1.8, generator=g) for _ in range(3)]
                          + [torch.empty(24).uniform_(-0.5, 0.5, generator=g)], dim=1)
    order = torch.rand(24, 4, generator=g).argsort(dim=1)
    factors[:4] = torch.tensor(B.IDENTITY)  # samples the jitter was not drawn for stay as they are
    ours = B.color_jitter_(x.clone(), factors, order)
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]

    def reference(image: torch.Tensor, i: int) -> torch.Tensor:
        for op in order[i].tolist():
            image = ops[op](image, factors[i, op].item())
        return image

    assert_each_image(ours, reference, x)
    assert torch.equal(ours[:4], x[:4])
    swapped = B.color_jitter_(x.clone(), factors, order.flip(1))  # the order matters, so this test can fail
    assert not torch.allclose(swapped[4:], ours[4:], atol=1e-3)


def test_grayscale_matches_torchvision() -> None:
    x = floats(4)
    ours = B.rgb_to_grayscale(x).expand_as(x)
    assert_each_image(ours, lambda image, i: TF.rgb_to_grayscale(image, num_output_channels=3), x)


@pytest.mark.parametrize("kernel_size", [3, 5, 11])
def test_blur_matches_torchvision(kernel_size: int) -> None:
    x = floats(6, side=24)
    sigmas = torch.tensor([0.1, 0.5, 1.0, 1.5, 2.0, 3.0])
    ours = B.gaussian_blur_(x.clone(), kernel_size, sigmas)
    reference = lambda image, i: TF.gaussian_blur(image, [kernel_size] * 2, [sigmas[i].item()] * 2)  # noqa: E731
    assert_each_image(ours, reference, x)


def test_solarize_matches_torchvision() -> None:
    x = floats(3)
    x[0, 0, 0, :3] = torch.tensor([0.5, 0.5 - 1e-7, 1.0])  # the threshold and its neighbour
    assert_each_image(B.solarize_(x.clone()), lambda image, i: TF.solarize(image, 0.5), x, atol=0)


def crop_boxes(side: int, count: int, max_side: int, seed: int = 0) -> torch.Tensor:
    """Random integer boxes (top, left, height, width) of sides 1..max_side inside side x side."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randint(1, max_side + 1, (count,), generator=g)
    w = torch.randint(1, max_side + 1, (count,), generator=g)
    top = (torch.rand(count, generator=g) * (side - h + 1)).floor()
    left = (torch.rand(count, generator=g) * (side - w + 1)).floor()
    return torch.stack([top, left, h, w], dim=1).float()


@pytest.mark.parametrize("antialias", [True, False])
def test_resized_crop_matches_torchvision(antialias: bool) -> None:
    # Upsampling crops (sides <= 16 -> 16) match both; antialias=False aliases when downscaling, which
    # views.py never does (antialias=True), so the downscaling crops are compared with antialias=True.
    x = floats(16, side=20)
    boxes = crop_boxes(20, 16, max_side=16 if not antialias else 20)
    boxes[0] = torch.tensor([0.0, 0.0, 20.0, 20.0])  # the whole image, downscaled
    if not antialias:
        boxes[0] = torch.tensor([2.0, 3.0, 16.0, 16.0])  # same size: a pure crop
    flips = torch.arange(16) % 2 == 1
    ours = B.resized_crop(x, boxes, flips, 16)

    def reference(image: torch.Tensor, i: int) -> torch.Tensor:
        top, left, h, w = boxes[i].int().tolist()
        out = TF.resized_crop(image, top, left, h, w, [16, 16], antialias=antialias)
        return TF.horizontal_flip(out) if flips[i] else out

    assert_each_image(ours, reference, x)


def test_resized_crop_gain_and_repeated_batches() -> None:
    x = floats(3, side=12) * 255
    boxes = crop_boxes(12, 6, max_side=12)
    flips = torch.tensor([False, True] * 3)
    ours = B.resized_crop(x, boxes, flips, 9, gain=1 / 255)  # 6 crops of 3 images: crop n from image n % 3
    single = torch.cat([B.resized_crop(x[[n % 3]] / 255, boxes[[n]], flips[[n]], 9) for n in range(6)])
    torch.testing.assert_close(ours, single, atol=ATOL, rtol=0)


# --- The whole pipeline against a per-image torchvision composition ---------------------------

@pytest.mark.parametrize("info", [GRAY, COLOR], ids=["gray", "color"])
def test_pipeline_matches_torchvision_composition(info: DatasetInfo) -> None:
    cfg = ViewConfig(jitter=(0.8, 0.8, 0.8, 0.2), jitter_prob=0.7, grayscale_prob=0.5, blur_prob=(0.5, 0.5),
                     solarize_prob=(0.5, 0.5), crop_scale=(0.08, 1.0))
    t = BatchedMultiViewTransform(cfg, info)
    x = images(info, 32)
    spec = t.specs[0]
    p = t.sample_params(spec, 32, info.image_size, info.image_size, torch.Generator().manual_seed(0))
    assert p.sigmas.gt(0).any() and p.solarize.any() and p.flips.any()
    assert p.grayscale.any() == (info.num_channels == 3)
    ours = t.apply_view(x.float(), p, spec, gain=1 / 255)
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    k = blur_kernel_size(spec.size, cfg.blur_kernel_frac)

    def reference(image: torch.Tensor, i: int) -> torch.Tensor:
        top, left, h, w = p.boxes[i].int().tolist()
        out = TF.resized_crop(image.float() / 255, top, left, h, w, [spec.size] * 2, antialias=True)
        out = TF.horizontal_flip(out) if p.flips[i] else out
        if not torch.equal(p.factors[i], torch.tensor(B.IDENTITY)):
            for op in p.order[i].tolist():
                out = ops[op](out, p.factors[i, op].item())
        out = TF.rgb_to_grayscale(out, num_output_channels=3) if p.grayscale[i] else out
        out = TF.gaussian_blur(out, [k, k], [p.sigmas[i].item()] * 2) if p.sigmas[i] > 0 else out
        out = TF.solarize(out, 0.5) if p.solarize[i] else out
        return TF.normalize(out, info.mean, info.std)

    assert_each_image(ours, reference, x, atol=1e-4)  # normalising divides errors by std ~0.25


# --- Distributions --------------------------------------------------------------------------------

def within(observed: float, p: float, n: int) -> bool:
    """``observed`` is a Bernoulli(p) frequency over n draws, within 5 sigma (exact for p in {0, 1})."""
    return abs(observed - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-9


def test_parameter_frequencies_follow_config() -> None:
    n = 20000
    cfg = ViewConfig.byol(flip_prob=0.3, jitter_prob=0.6, grayscale_prob=0.25)
    t = BatchedMultiViewTransform(cfg, COLOR)
    g = torch.Generator().manual_seed(0)
    for spec, blur, solarize in zip(t.specs, cfg.blur_prob, cfg.solarize_prob):  # BYOL: (1.0, 0.1), (0.0, 0.2)
        p = t.sample_params(spec, n, 32, 32, g)
        jittered = (p.factors != torch.tensor(B.IDENTITY)).any(dim=1)
        for observed, expected in [(p.flips, 0.3), (jittered, 0.6), (p.grayscale, 0.25), (p.sigmas > 0, blur),
                                   (p.solarize, solarize)]:
            assert within(observed.float().mean().item(), expected, n), (observed.float().mean(), expected)
        blurred = p.sigmas[p.sigmas > 0]
        assert blurred.min() >= cfg.blur_sigma[0] and blurred.max() <= cfg.blur_sigma[1]
        lo, hi = cfg.blur_sigma  # uniform: mean (lo + hi) / 2, std (hi - lo) / sqrt(12)
        assert abs(blurred.mean().item() - (lo + hi) / 2) < 5 * (hi - lo) / math.sqrt(12 * len(blurred))
        b, c, s, h = cfg.jitter  # ColorJitter's ranges, uniform
        for j, (lo, hi) in enumerate([(max(0, 1 - b), 1 + b), (max(0, 1 - c), 1 + c), (max(0, 1 - s), 1 + s), (-h, h)]):
            f = p.factors[jittered, j]
            assert lo <= f.min() and f.max() <= hi and abs(f.mean().item() - (lo + hi) / 2) < 0.01 * (hi - lo + 1)
        slots = torch.stack([(p.order == op).float().mean(dim=0) for op in range(4)])  # (op, slot)
        assert all(within(v, 0.25, n) for v in slots.flatten().tolist())


def test_gray_images_draw_no_colour_ops() -> None:
    t = BatchedMultiViewTransform(ViewConfig.simclr(jitter_prob=1.0, grayscale_prob=1.0), GRAY)
    p = t.sample_params(t.specs[0], 500, 28, 28)
    assert not p.grayscale.any()
    assert (p.factors[:, B.SATURATION] == 1).all() and (p.factors[:, B.HUE] == 0).all()
    assert (p.factors[:, B.BRIGHTNESS] != 1).all()


def torchvision_boxes(n: int, height: int, width: int, scale: tuple[float, float]) -> torch.Tensor:
    crop = v2.RandomResizedCrop(8, scale=scale)
    torch.manual_seed(0)
    params = [crop.make_params([torch.empty(3, height, width)]) for _ in range(n)]
    return torch.tensor([[q["top"], q["left"], q["height"], q["width"]] for q in params], dtype=torch.float32)


def ks_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (largest gap between the empirical CDFs)."""
    values = torch.cat([a, b]).unique()
    cdf = lambda s: torch.searchsorted(s.sort().values, values, right=True) / len(s)  # noqa: E731
    return (cdf(a) - cdf(b)).abs().max().item()


@pytest.mark.parametrize("height,width,scale", [(32, 32, (0.08, 1.0)), (28, 28, (0.4, 1.0)), (6, 40, (0.5, 1.0))])
def test_crop_boxes_follow_torchvision(height: int, width: int, scale: tuple[float, float]) -> None:
    # (6, 40): most candidates do not fit, so the central fallback crop is drawn often.
    n = 3000
    u = torch.rand(n, 2 * B.CROP_ATTEMPTS + 2, generator=torch.Generator().manual_seed(1))
    ours = B.sample_boxes(u, height, width, scale)
    theirs = torchvision_boxes(n, height, width, scale)
    top, left, h, w = ours.unbind(dim=1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()
    assert (h >= 1).all() and (w >= 1).all() and torch.equal(ours, ours.round())
    if height == width:  # the fallback is the whole image: every area lies in scale, up to rounding the sides
        slack = 0.5 * (h + w) + 1
        assert (h * w >= scale[0] * height * width - slack).all() and (h * w <= scale[1] * height * width).all()
    critical = 1.95 * math.sqrt(2 / n)  # alpha = 0.001
    for ours_col, theirs_col in zip(ours.T, theirs.T):  # top, left, height, width
        assert ks_distance(ours_col, theirs_col) < critical
    assert ks_distance(h * w, theirs[:, 2] * theirs[:, 3]) < critical
    assert abs((ours == theirs[0]).all(dim=1).float().mean() - (theirs == theirs[0]).all(dim=1).float().mean()) < 0.05


def test_pipeline_applies_ops_with_configured_frequencies() -> None:
    # A horizontal ramp 0, 36, ..., 252 leaves a trace of each op: flipping reverses it, solarizing folds its
    # bright half below 0.5, brightness moves its middle, and blurring lifts its black edge (reflect padding)
    # while keeping the (linear) middle.
    n, side = 2000, 8
    info = DatasetInfo("ramp", 1, 0, side, (0.0,), (1.0,))  # normalising with (0, 1) keeps [0, 1] values
    x = (torch.arange(side) * 36).to(torch.uint8).view(1, 1, 1, side).expand(n, 1, side, side).contiguous()
    g = torch.Generator().manual_seed(0)

    def views(**overrides) -> list[torch.Tensor]:
        return BatchedMultiViewTransform(ViewConfig(**{**PLAIN, **overrides}, blur_sigma=(2.0, 2.0)), info)(x, g)

    for view in views(flip_prob=0.3):
        assert within((view[:, 0, 0, 0] > view[:, 0, 0, -1]).float().mean().item(), 0.3, n)
    for view, p in zip(views(solarize_prob=(0.4, 0.0)), (0.4, 0.0)):
        assert within((view.amax(dim=(1, 2, 3)) <= 0.5).float().mean().item(), p, n)
    for view, p in zip(views(blur_prob=(0.35, 1.0), jitter_prob=0.45, jitter=(0.5, 0.0, 0.0, 0.0)), (0.35, 1.0)):
        assert within((view[:, 0, 0, 0] > 1e-6).float().mean().item(), p, n)  # blurred
        assert within(((view[:, 0, 0, 3] - 108 / 255).abs() > 1e-5).float().mean().item(), 0.45, n)  # jittered


def test_matches_per_image_pipeline_in_distribution() -> None:
    # Pixel statistics of many views of one image, batched vs views.py's per-image pipeline.
    image = images(COLOR, 1, seed=2, size=12)
    info = DatasetInfo("small", 3, 0, 12, COLOR.mean, COLOR.std)
    cfg = ViewConfig.byol()
    batched = BatchedMultiViewTransform(cfg, info)(image.expand(3000, -1, -1, -1).contiguous(),
                                                    torch.Generator().manual_seed(0))
    per_image = MultiViewTransform(cfg, info)
    torch.manual_seed(0)
    singles = [torch.stack(views) for views in zip(*(per_image(image[0]) for _ in range(400)))]
    for ours, theirs in zip(batched, singles):
        for stat in (lambda v: v.mean(dim=(1, 2, 3)), lambda v: v.std(dim=(1, 2, 3)),
                     lambda v: v.mean(dim=(2, 3))[:, 0] - v.mean(dim=(2, 3))[:, 2]):
            a, b = stat(ours), stat(theirs)
            assert abs(a.mean() - b.mean()) < 5 * math.sqrt(a.var() / len(a) + b.var() / len(b))
            assert ks_distance(a, b) < 1.95 * math.sqrt(1 / len(a) + 1 / len(b))
