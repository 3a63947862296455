"""Tests for selfsup.data: named datasets, IDX parsing, image folders, wrappers."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.data import (DatasetInfo, FolderDataset, TransformDataset, ViewDataset, dataset_names,
                          load_dataset, read_idx)
from selfsup.errors import ConfigError, DataError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX as described at yann.lecun.com/exdb/mnist: 0, 0, type 0x08, ndim, big-endian dims, bytes."""
    data = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as f:
        f.write(data)


def write_png(path: Path, mode: str = "RGB", size: tuple[int, int] = (10, 12), value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color=value if mode == "L" else (value, 255 - value, 7)).save(path)


# --- Fashion-MNIST and IDX ------------------------------------------------------------------


@pytest.mark.parametrize("split,n", [("train", 60000), ("test", 10000)])
def test_fashion_mnist_loads(split: str, n: int) -> None:
    if not FASHION_DIR.is_dir():
        pytest.skip(f"{FASHION_DIR} absent (apt-get install dataset-fashion-mnist)")
    ds = load_dataset("fashion-mnist", split=split)
    assert len(ds) == n and ds.labels.shape == (n,) and ds.labels.dtype == torch.int64
    image, label = ds[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.uint8
    assert isinstance(label, int) and 0 <= label <= 9
    assert sorted(ds.labels.unique().tolist()) == list(range(10))
    assert ds.info.num_channels == 1 and ds.info.num_classes == 10 and ds.info.image_size == 28
    assert image.float().std() > 0  # not a blank image


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_idx_roundtrip(tmp_path: Path, suffix: str) -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels)
    np.testing.assert_array_equal(read_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}"), images)
    ds = load_dataset("fashion-mnist", split="test", data_dir=str(tmp_path))
    assert len(ds) == 5 and ds.labels.tolist() == [3, 1, 4, 1, 5]
    assert torch.equal(ds[2][0], torch.from_numpy(images[2]).unsqueeze(0))


def test_idx_truncated_names_file(tmp_path: Path) -> None:
    path = tmp_path / "bad-idx3-ubyte"
    write_idx(path, np.zeros((2, 4, 4), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataError, match="bad-idx3-ubyte"):
        read_idx(path)


def test_fashion_mnist_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.*dataset-fashion-mnist") as err:
        load_dataset("fashion-mnist", data_dir=str(tmp_path))
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)


def test_bad_split_names_split() -> None:
    with pytest.raises(DataError, match=r"'validation'.*train, test"):
        load_dataset("fashion-mnist", split="validation")


def test_unknown_name_lists_valid_names() -> None:
    assert {"cifar10", "cifar100", "fashion-mnist", "folder:PATH", "stl10"} <= set(dataset_names())
    with pytest.raises(ConfigError, match=r"imagenet.*cifar10.*fashion-mnist.*folder:PATH"):
        load_dataset("imagenet")


@pytest.mark.parametrize("name,folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
                                         ("stl10", "stl10_binary")])
def test_torchvision_dataset_missing_offline(tmp_path: Path, name: str, folder: str) -> None:
    with pytest.raises(DataError, match=folder) as err:
        load_dataset(name, data_dir=str(tmp_path), download=False)
    assert str(tmp_path) in str(err.value) and "data.download=true" in str(err.value)


# --- folder:PATH -----------------------------------------------------------------------------


def test_folder_labelled(tmp_path: Path) -> None:
    write_png(tmp_path / "dog" / "a.png", value=10)
    write_png(tmp_path / "dog" / "b.PNG", value=20)
    write_png(tmp_path / "cat" / "c.png", "L", size=(7, 5))  # grey image in a colour dataset
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.info.classes == ("cat", "dog") and ds.info.num_classes == 2 and ds.info.num_channels == 3
    assert len(ds) == 3 and ds.labels.tolist() == [0, 1, 1]
    image, label = ds[0]  # cat/c.png, grey, sorted first: still RGB because the other images are
    assert label == 0 and image.shape == (3, 5, 7) and image.dtype == torch.uint8


def test_folder_labels_survive_spawn_pickling(tmp_path: Path) -> None:
    """DDP's spawn pickles the dataset with torch's reducers, which move tensors to shared memory.

    A numpy view of ``labels`` kept for fast indexing then pointed at freed memory: every process
    read garbage labels (a 2-CPU DDP run failed with "Target 140526552554688 is out of bounds").
    """
    import io
    import pickle
    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing  # noqa: F401  registers torch's reducers with ForkingPickler

    for k in range(40):
        write_png(tmp_path / f"class{k % 4}" / f"{k}.png", value=k)
    ds = load_dataset(f"folder:{tmp_path}")
    expected = [k // 10 for k in range(40)]
    buffer = io.BytesIO()
    ForkingPickler(buffer, pickle.HIGHEST_PROTOCOL).dump(ds)
    _ = [torch.randn(4096) for _ in range(64)]  # reuse whatever memory the move freed
    copy = pickle.loads(buffer.getvalue())
    assert [ds[i][1] for i in range(40)] == expected
    assert [copy[i][1] for i in range(40)] == expected


def test_folder_rgb_and_gray_channels(tmp_path: Path) -> None:
    write_png(tmp_path / "rgb" / "x" / "a.png", value=10, size=(10, 12))
    write_png(tmp_path / "rgb" / "x" / "b.png", "L", size=(9, 8), value=200)
    ds = FolderDataset(tmp_path / "rgb")
    assert ds.info.num_channels == 3 and ds.info.mean == (0.485, 0.456, 0.406)
    assert ds[0][0].shape == (3, 12, 10) and ds[1][0].shape == (3, 8, 9)  # grey converted to RGB
    assert torch.equal(ds[0][0][:, 0, 0], torch.tensor([10, 245, 7], dtype=torch.uint8))
    write_png(tmp_path / "gray" / "a.png", "L", value=77)
    write_png(tmp_path / "gray" / "b.jpeg", "L", value=100)
    gray = FolderDataset(tmp_path / "gray")
    assert gray.info.num_channels == 1 and gray.info.std == (0.5,)
    assert gray[0][0].shape == (1, 12, 10) and int(gray[0][0][0, 0, 0]) == 77


def test_folder_unlabeled(tmp_path: Path) -> None:
    for i in range(3):
        write_png(tmp_path / f"{i}.png", value=i)
    ds = load_dataset(f"folder:{tmp_path}", split="train")
    assert len(ds) == 3 and ds.labels is None and ds.info.num_classes == 0
    assert ds[1][1] == -1
    with pytest.raises(DataError, match=rf"'test'.*{tmp_path}"):
        load_dataset(f"folder:{tmp_path}", split="test")


def test_folder_split_subfolders(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            write_png(tmp_path / split / ("a" if i % 2 else "b") / f"{i}.png")
    assert len(load_dataset(f"folder:{tmp_path}", split="train")) == 3
    val = load_dataset(f"folder:{tmp_path}", split="val")
    assert len(val) == 2 and val.info.classes == ("a", "b")
    with pytest.raises(DataError, match=r"'test'.*found: train, val"):
        load_dataset(f"folder:{tmp_path}", split="test")


def test_folder_empty_names_folder(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match=str(tmp_path / "empty")):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'missing'}")


def test_folder_corrupt_image_names_file(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png")
    write_png(tmp_path / "b.png")
    ds = load_dataset(f"folder:{tmp_path}")
    (tmp_path / "b.png").write_bytes(b"\x89PNG not really")  # broken after construction
    with pytest.raises(DataError, match="b.png"):
        ds[1]
    with pytest.raises(DataError, match="b.png"):
        ds.verify()
    (tmp_path / "a.png").write_bytes(b"garbage")  # a bad first file fails at construction
    with pytest.raises(DataError, match="a.png"):
        load_dataset(f"folder:{tmp_path}")


# --- wrappers --------------------------------------------------------------------------------


def test_view_and_transform_datasets(tmp_path: Path) -> None:
    write_png(tmp_path / "a" / "0.png", value=1)
    write_png(tmp_path / "b" / "1.png", value=2)
    ds = load_dataset(f"folder:{tmp_path}")
    views = ViewDataset(ds, lambda x: [x.float(), x.float() + 1])
    (v1, v2), label, index = views[1]
    assert label == 1 and index == 1 and torch.equal(v2, v1 + 1) and len(views) == 2
    image, label = TransformDataset(ds, lambda x: x.float() / 255)[0]
    assert image.dtype == torch.float32 and label == 0
    assert isinstance(views.info, DatasetInfo)
