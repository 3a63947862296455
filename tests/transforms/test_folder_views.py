"""Split views (crop + flip per image in the workers, colour batched on the device) and the file decoder:
exact geometry against views.py, the colour half against torchvision with the same parameters, the
whole pipeline against views.py in distribution, shapes/dtypes on variable and tiny images, bad
input refused, and torchvision.io decoding against PIL."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from selfsup.data import DatasetInfo, FolderDataset
from selfsup.data.decode import DecodedFolder, read_image
from selfsup.errors import DataError
from selfsup.transforms import MultiViewTransform, ViewConfig, blur_kernel_size
from selfsup.transforms import batched as B
from selfsup.transforms.split_views import CropFlipViews, PhotometricViews

COLOR = DatasetInfo("color", 3, 0, 16, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
GRAY = DatasetInfo("gray", 1, 0, 16, (0.5,), (0.5,))
NO_COLOUR = dict(jitter_prob=0.0, grayscale_prob=0.0, blur_prob=(0.0, 0.0), solarize_prob=(0.0, 0.0))


def photo(channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (channels, height, width), generator=g, dtype=torch.uint8)


def split_views(cfg: ViewConfig, info: DatasetInfo, images: list[torch.Tensor],
                generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """What the loader and the module do: crops per image, collated per view, coloured as a batch."""
    crops = CropFlipViews(cfg, info)
    collated = [torch.stack(view) for view in zip(*(crops(image) for image in images))]
    return PhotometricViews(cfg, info)(collated, generator)


# --- Shapes, dtypes, sizes --------------------------------------------------------------------------

@pytest.mark.parametrize("info", [COLOR, GRAY], ids=["color", "gray"])
@pytest.mark.parametrize("preset", ["simclr", "byol", "dino"])
def test_shapes_and_dtypes_for_variable_size_images(info: DatasetInfo, preset: str) -> None:
    cfg = getattr(ViewConfig, preset)(image_size=32)
    sizes = [(375, 500), (500, 333), (40, 41), (1, 1), (1, 300), (300, 2), (3, 3)]  # tiny and extreme too
    images = [photo(info.num_channels, h, w, seed=i) for i, (h, w) in enumerate(sizes)]
    crops = CropFlipViews(cfg, info)
    local = round(32 * 96 / 224)
    for image in images:
        for k, crop in enumerate(crops(image)):
            side = 32 if k < cfg.num_global_views else local
            assert crop.dtype == torch.uint8 and crop.shape == (info.num_channels, side, side)
    views = split_views(cfg, info, images, torch.Generator().manual_seed(0))
    assert len(views) == cfg.num_global_views + cfg.num_local_views
    for k, view in enumerate(views):
        side = 32 if k < cfg.num_global_views else local
        assert view.dtype == torch.float32 and view.shape == (len(images), info.num_channels, side, side)
        assert torch.isfinite(view).all()


def test_bad_inputs_are_refused() -> None:
    cfg = ViewConfig.simclr(image_size=16)
    with pytest.raises(ValueError, match="uint8 image"):
        CropFlipViews(cfg, COLOR)(photo(3, 20, 20).float())
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        CropFlipViews(cfg, COLOR)(photo(1, 20, 20))
    colour = PhotometricViews(cfg, COLOR)
    crops = [photo(3, 16, 16).unsqueeze(0)] * 2
    with pytest.raises(ValueError, match="one per view"):
        colour(crops[:1])
    with pytest.raises(ValueError, match=r"\(B, 3, 16, 16\)"):
        colour([crops[0], photo(3, 20, 20).unsqueeze(0)])
    with pytest.raises(ValueError, match="uint8 crops"):
        colour([c.float() for c in crops])


# --- The two halves against views.py ------------------------------------------------------------------

@pytest.mark.parametrize("preset", ["simclr", "dino"])
def test_geometry_is_views_py_exactly(preset: str) -> None:
    # Without colour ops, views.py draws only crop and flip, in the same order as CropFlipViews: under one
    # seed both make the same views, up to float rounding of the normalisation.
    cfg = getattr(ViewConfig, preset)(image_size=24, **NO_COLOUR, local_blur_prob=0.0)
    image = photo(3, 37, 61, seed=3)
    torch.manual_seed(7)
    reference = MultiViewTransform(cfg, COLOR)(image)
    torch.manual_seed(7)
    crops = CropFlipViews(cfg, COLOR)(image)
    ours = PhotometricViews(cfg, COLOR)([c.unsqueeze(0) for c in crops], torch.Generator().manual_seed(0))
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a[0], b, atol=1e-5, rtol=0)
    torch.manual_seed(8)  # another seed, other crops: the comparison above can fail
    other = CropFlipViews(cfg, COLOR)(image)
    assert not all(torch.equal(a, b) for a, b in zip(crops, other))


@pytest.mark.parametrize("info", [COLOR, GRAY], ids=["color", "gray"])
def test_colour_half_matches_torchvision_with_the_same_parameters(info: DatasetInfo) -> None:
    cfg = ViewConfig(image_size=16, jitter=(0.8, 0.8, 0.8, 0.2), jitter_prob=0.7, grayscale_prob=0.5,
                     blur_prob=(0.5, 0.5), solarize_prob=(0.5, 0.5))
    colour = PhotometricViews(cfg, info)
    crops = torch.stack([photo(info.num_channels, 16, 16, seed=i) for i in range(32)])
    spec = colour.specs[0]
    params = colour.sample_params(spec, 32, 16, 16, torch.Generator().manual_seed(0))
    assert params.sigmas.gt(0).any() and params.solarize.any()
    ours = colour.apply_photometric_(crops.float().mul_(1 / 255), params, spec)
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    k = blur_kernel_size(16, cfg.blur_kernel_frac)
    for i in range(32):
        out = TF.to_dtype(crops[i], torch.float32, scale=True)  # views.py's ToDtype after the uint8 crop
        if not torch.equal(params.factors[i], torch.tensor(B.IDENTITY)):
            for op in params.order[i].tolist():
                out = ops[op](out, params.factors[i, op].item())
        out = TF.rgb_to_grayscale(out, num_output_channels=3) if params.grayscale[i] else out
        out = TF.gaussian_blur(out, [k, k], [params.sigmas[i].item()] * 2) if params.sigmas[i] > 0 else out
        out = TF.solarize(out, 0.5) if params.solarize[i] else out
        torch.testing.assert_close(ours[i], TF.normalize(out, info.mean, info.std), atol=1e-4, rtol=0)


def ks_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    values = torch.cat([a, b]).unique()
    cdf = lambda s: torch.searchsorted(s.sort().values, values, right=True) / len(s)  # noqa: E731
    return (cdf(a) - cdf(b)).abs().max().item()


@pytest.mark.parametrize("preset", ["simclr", "byol"])
def test_matches_per_image_pipeline_in_distribution(preset: str) -> None:
    # Pixel statistics of many views of one non-square photo: split pipeline vs views.py per image.
    info = DatasetInfo("small", 3, 0, 12, COLOR.mean, COLOR.std)
    cfg = getattr(ViewConfig, preset)()
    image = photo(3, 15, 22, seed=2)
    torch.manual_seed(0)
    ours = split_views(cfg, info, [image] * 1500, torch.Generator().manual_seed(0))
    per_image = MultiViewTransform(cfg, info)
    torch.manual_seed(1)
    theirs = [torch.stack(views) for views in zip(*(per_image(image) for _ in range(400)))]
    for a_views, b_views in zip(ours, theirs):
        for stat in (lambda v: v.mean(dim=(1, 2, 3)), lambda v: v.std(dim=(1, 2, 3)),
                     lambda v: v.mean(dim=(2, 3))[:, 0] - v.mean(dim=(2, 3))[:, 2],
                     lambda v: v[:, :, :, :6].mean(dim=(1, 2, 3)) - v[:, :, :, 6:].mean(dim=(1, 2, 3))):
            a, b = stat(a_views), stat(b_views)
            assert abs(a.mean() - b.mean()) < 5 * math.sqrt(a.var() / len(a) + b.var() / len(b))
            assert ks_distance(a, b) < 1.95 * math.sqrt(1 / len(a) + 1 / len(b))


def test_distribution_test_can_fail() -> None:
    # The same statistics tell a pipeline with another colour strength apart.
    info = DatasetInfo("small", 3, 0, 12, COLOR.mean, COLOR.std)
    image = photo(3, 15, 22, seed=2)
    torch.manual_seed(0)
    ours = split_views(ViewConfig.simclr(jitter=(0.1, 0.1, 0.1, 0.0)), info, [image] * 1500)[0]
    torch.manual_seed(1)
    per_image = MultiViewTransform(ViewConfig.simclr(), info)
    theirs = torch.stack([per_image(image)[0] for _ in range(400)])
    a, b = ours.std(dim=(1, 2, 3)), theirs.std(dim=(1, 2, 3))
    assert ks_distance(a, b) > 1.95 * math.sqrt(1 / len(a) + 1 / len(b))


# --- Decoding files --------------------------------------------------------------------------------------

def natural(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8))
    return np.asarray(base.resize((width, height), Image.BILINEAR))


def pil_read(path: Path, mode: str) -> torch.Tensor:
    with Image.open(path) as image:
        return TF.pil_to_tensor(image.convert(mode))


@pytest.mark.parametrize("suffix, mode", [(".jpg", "RGB"), (".png", "RGB"), (".png", "RGBA"), (".png", "P"),
                                          (".bmp", "RGB"), (".webp", "RGB"), (".jpg", "L"), (".png", "L")])
def test_read_image_equals_pil(tmp_path: Path, suffix: str, mode: str) -> None:
    path = tmp_path / f"image{suffix}"
    Image.fromarray(natural(37, 53)).convert(mode).save(path, **({"quality": 90} if suffix == ".jpg" else {}))
    for gray in (False, True):
        ours = read_image(path, gray)
        reference = pil_read(path, "L" if gray else "RGB")
        assert ours.dtype == torch.uint8 and ours.shape == reference.shape == ((1 if gray else 3), 37, 53)
        if gray and mode not in ("L",):
            # libjpeg/libpng grey conversion vs PIL's integer luma: at most one level apart.
            assert (ours.int() - reference.int()).abs().max() <= 1
        else:
            assert torch.equal(ours, reference)


def test_read_image_refuses_broken_files(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    Image.fromarray(natural(20, 20)).save(good)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(good.read_bytes()[:40])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_text("not an image")
    for path in (broken, empty, text):
        with pytest.raises(DataError, match="cannot read image"):
            read_image(path, gray=False)


def test_decoded_folder_serves_the_folder(tmp_path: Path) -> None:
    for k, name in enumerate(("cats", "dogs")):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.fromarray(natural(30 + i, 40 + k, seed=i)).save(tmp_path / name / f"{i}.jpg", quality=90)
    folder = FolderDataset(tmp_path)
    decoded = DecodedFolder(folder)
    assert len(decoded) == len(folder) == 6 and decoded.info == folder.info and torch.equal(decoded.labels,
                                                                                          folder.labels)
    for i in range(6):
        image, label = decoded[i]
        expected, expected_label = folder[i]
        assert label == expected_label and torch.equal(image, expected)
