"""Rotation targets (Gidaris et al. 2018): the four copies and their labels."""

import pytest
import torch

from selfsup.errors import ConfigError
from selfsup.transforms.pretext import rotate_batch


def test_rotating_back_by_the_label_gives_the_original():
    images = torch.randn(3, 2, 8, 8)
    rotated, labels = rotate_batch(images)
    assert rotated.shape == (12, 2, 8, 8) and labels.dtype == torch.int64
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    for row in range(12):
        back = torch.rot90(rotated[row], -int(labels[row]), dims=(1, 2))
        assert torch.equal(back, images[row % 3])
    # 90° counter-clockwise: the first row of the original becomes the first column, bottom-up.
    assert torch.equal(rotated[3, 0, :, 0], images[0, 0, 0].flip(0))


def test_rotation_rejects_non_square_views():
    with pytest.raises(ConfigError, match="square"):
        rotate_batch(torch.randn(2, 1, 8, 6))
