"""Context-encoder masks (Pathak et al. 2016): the central square, random rectangles, erosion."""

import pytest
import torch

from selfsup.transforms.pretext import centre_region_mask, erode_mask, random_rectangles_mask


# Tiny tensors: a second intra-op thread only adds synchronisation (conftest.single_thread).
pytestmark = pytest.mark.usefixtures("single_thread")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_centre_mask_is_the_central_square():
    mask = centre_region_mask(2, 28, 28, 0.5)
    assert mask.shape == (2, 1, 28, 28) and mask.dtype == torch.bool
    assert mask.sum() == 2 * 14 * 14 and mask[0, 0, 7:21, 7:21].all()


def test_random_rectangles_cover_at_most_a_quarter():
    mask = random_rectangles_mask(64, 28, 28, num_rectangles=4, generator=gen())
    coverage = mask.float().mean(dim=(1, 2, 3))
    assert (coverage > 0).all() and (coverage <= 0.25).all()
    assert not torch.equal(mask[0], mask[1])


def test_erosion_removes_the_border_band():
    mask = centre_region_mask(1, 12, 12, 0.5)  # rows/cols 3..8
    eroded = erode_mask(mask, 1)
    expected = torch.zeros_like(mask)
    expected[..., 4:8, 4:8] = True
    assert torch.equal(eroded, expected) and torch.equal(erode_mask(mask, 0), mask)
