"""Exact ``--resume`` with DataLoader workers on ``folder:`` data (views drawn per image in workers).

Views, order and replacements of skipped files are functions of (seed, epoch, index) alone
(selfsup.data.sampling), so a run stopped and resumed matches an uninterrupted one bit for bit,
whatever the number of workers.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.data import EpochShuffleSampler, ViewDataset, load_dataset
from selfsup.engine import train
from engine.test_engine import CrashAfterFirstEpoch, _weights, tiny_config


def write_mixed_folder(root: Path, per_class: int = 12, seed: int = 0) -> Path:
    """Two classes of RGB noise-and-square images of different sizes, alternately JPEG and PNG."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = (int(s) for s in rng.integers(18, 41, size=2))
            pixels = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
            pixels[h // 4: 3 * h // 4, w // 4: 3 * w // 4, label] = 230
            Image.fromarray(pixels, "RGB").save(root / name / f"{i:03d}.{'jpg' if i % 2 else 'png'}")
    return root


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    write_mixed_folder(tmp_path / "mixed" / "train", seed=0)
    write_mixed_folder(tmp_path / "mixed" / "test", per_class=4, seed=1)
    return tmp_path / "mixed"


def _assert_same_weights(a_path: Path, b_path: Path) -> None:
    a, b = _weights(a_path), _weights(b_path)
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} of {len(a)} tensors differ, e.g. {differ[:3]}"


@pytest.mark.parametrize("augment", ["per-image", "batched"])
def test_resume_with_two_workers_is_exact(mixed_folder, shapes_folder, tmp_path, augment):
    data = mixed_folder if augment == "per-image" else shapes_folder  # batched views need equal sizes
    settings = ("epochs=3", "num_workers=2", f"augment={augment}")
    straight = tmp_path / "straight"
    train(tiny_config(data, straight, *settings))
    split = tmp_path / "split"
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        train(tiny_config(data, split, *settings), callbacks=[CrashAfterFirstEpoch()])
    assert torch.load(split / "last.ckpt", weights_only=True)["global_step"] == 3
    assert train(tiny_config(data, split, *settings), resume=True).steps == 9
    _assert_same_weights(straight / "last.ckpt", split / "last.ckpt")


def test_workers_do_not_change_the_run(mixed_folder, tmp_path):
    """0 and 2 workers give the same weights: nothing depends on which process draws a view."""
    for workers in (0, 2):
        train(tiny_config(mixed_folder, tmp_path / f"w{workers}", "num_workers=" + str(workers),
                          "augment=per-image", "monitor.knn_every=0"))
    _assert_same_weights(tmp_path / "w0" / "last.ckpt", tmp_path / "w2" / "last.ckpt")


def test_views_are_a_function_of_seed_epoch_and_index(mixed_folder):
    dataset = load_dataset(f"folder:{mixed_folder}")
    views = ViewDataset(dataset, lambda image: [torch.rand(3), image.float().mean().reshape(1)], seed=5)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    first = views[(2, 7)][0]
    assert torch.equal(torch.get_rng_state(), before)  # the caller's stream is untouched
    torch.manual_seed(123)  # another global state: same views
    assert all(torch.equal(x, y) for x, y in zip(first, views[(2, 7)][0]))
    assert not torch.equal(first[0], views[(3, 7)][0][0]) and not torch.equal(first[0], views[(2, 8)][0][0])
    assert not torch.equal(first[0], ViewDataset(dataset, views.transform, seed=6)[(2, 7)][0][0])


def test_epoch_sampler_order_depends_on_seed_and_epoch_only():
    sampler = EpochShuffleSampler(10, seed=3)
    sampler.set_epoch(4)
    pairs = list(sampler)
    assert [e for e, _ in pairs] == [4] * 10 and sorted(i for _, i in pairs) == list(range(10))
    again = EpochShuffleSampler(10, seed=3)
    again.set_epoch(4)
    assert list(again) == pairs and len(again) == 10
    sampler.set_epoch(5)
    assert [i for _, i in sampler] != [i for _, i in pairs]
