"""Relative-location pairs (Doersch et al. 2015): patch crops, neighbour offsets and gaps, and the
chromatic-aberration guards."""

import itertools
import math

import pytest
import torch

from selfsup.errors import ConfigError
from selfsup.transforms.pretext import (NEIGHBOUR_OFFSETS, crop_patches, drop_colour_channels, project_out_green_magenta,
                                        sample_patch_pairs)


# Tiny tensors: a second intra-op thread only adds synchronisation (conftest.single_thread).
pytestmark = pytest.mark.usefixtures("single_thread")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_crop_patches_matches_slicing():
    images = torch.randn(2, 3, 10, 12)
    top, left = torch.tensor([[0, 5], [3, 1]]), torch.tensor([[8, 2], [0, 7]])
    patches = crop_patches(images, top, left, 4)
    assert patches.shape == (2, 2, 3, 4, 4)
    for b, k in itertools.product(range(2), range(2)):
        t, l = int(top[b, k]), int(left[b, k])
        assert torch.equal(patches[b, k], images[b, :, t:t + 4, l:l + 4])


def test_neighbour_offset_matches_the_label_and_patches_keep_their_gap():
    patch, gap, jitter = 5, 3, 1
    images = torch.randn(400, 2, 24, 24)
    pairs = sample_patch_pairs(images, patch, gap, jitter, generator=gen())
    assert pairs.centre.shape == pairs.neighbour.shape == (400, 2, patch, patch)
    assert set(pairs.labels.tolist()) == set(range(8))
    stride = patch + gap
    for b in range(400):
        cy, cx = pairs.centre_origin[b].tolist()
        ny, nx = pairs.neighbour_origin[b].tolist()
        assert torch.equal(pairs.centre[b], images[b, :, cy:cy + patch, cx:cx + patch])
        assert torch.equal(pairs.neighbour[b], images[b, :, ny:ny + patch, nx:nx + patch])
        assert 0 <= min(cy, cx, ny, nx) and max(cy, cx, ny, nx) + patch <= 24
        for step, delta in zip(NEIGHBOUR_OFFSETS[int(pairs.labels[b])], (ny - cy, nx - cx)):
            if step == 0:
                assert abs(delta) <= 2 * jitter
            else:  # the neighbour lies in the label's direction, one grid cell (± jitter) away
                assert math.copysign(1, delta) == step and stride - 2 * jitter <= abs(delta) <= stride + 2 * jitter
        # gap >= 2·jitter: the two patches never touch along the offset's axis
        assert max(abs(ny - cy), abs(nx - cx)) >= patch + gap - 2 * jitter > patch


def test_patch_grid_that_does_not_fit_is_a_config_error():
    with pytest.raises(ConfigError, match="canvas_size"):
        sample_patch_pairs(torch.randn(2, 1, 20, 20), 6, 2, 1)


def test_colour_dropping_keeps_one_channel_and_noises_the_others():
    patches = torch.randn(64, 3, 6, 6) * 3
    out = drop_colour_channels(patches, generator=gen())
    kept = (out == patches).flatten(2).all(dim=2)  # (N, 3)
    assert kept.sum(dim=1).eq(1).all()
    assert set(kept.float().argmax(dim=1).tolist()) == {0, 1, 2}
    for n in range(64):
        keep = int(kept[n].float().argmax())
        scale = 0.01 * patches[n, keep].std()
        dropped = [c for c in range(3) if c != keep]
        assert out[n, dropped].std() < 3 * scale  # ~1/100 of the kept channel's std
    gray = torch.randn(4, 1, 6, 6)
    assert drop_colour_channels(gray) is gray and project_out_green_magenta(gray) is gray


def test_projection_removes_the_green_magenta_component():
    patches = torch.randn(4, 3, 5, 5)
    out = project_out_green_magenta(patches)
    axis = torch.tensor([-1.0, 2.0, -1.0]) / math.sqrt(6)
    assert torch.allclose(torch.einsum("nchw,c->nhw", out, axis), torch.zeros(4, 5, 5), atol=1e-5)
    grey = torch.ones(1, 3, 2, 2)  # equal RGB has no green-magenta component
    assert torch.allclose(project_out_green_magenta(grey), grey)
