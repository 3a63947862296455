"""Unreadable image files: the skip/error policy in training, and ``selfsup data check``.

Planted files: a truncated JPEG, a zero-byte PNG, a text file named .jpg, and two PNG headers
declaring 30000×30000 (PIL's own bomb limit) and 12000×12000 pixels (over selfsup's limit, under
PIL's) — headers only, so they cost a few bytes.
"""

import logging
import struct
import zlib
from pathlib import Path

import lightning  # noqa: F401  imported outside any test's capture: its log handler must not outlive one
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_image_folder
from selfsup.cli import main
from selfsup.data import MAX_IMAGE_PIXELS, FolderDataset, SkipLog, UnreadableImage, load_dataset
from selfsup.data.images import PathList, check_image, find_unreadable, open_image
from selfsup.errors import ConfigError, DataError

TINY = ["--backbone", "resnet18", "--set", "backbone_args={small_stem: true, width: 0.125}",
        "--set", "views.image_size=16", "--set", "method_args={projection_hidden_dim: 32, projection_dim: 16}",
        "--set", "trainer.progress_bar=false", "--set", "optim.warmup_epochs=0", "--set", "monitor.knn_k=5",
        "--set", "monitor.knn_train_samples=64", "--set", "monitor.knn_test_samples=16"]


def png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width × height`` RGB pixels, with a token IDAT (never decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def plant_bad_files(folder: Path) -> dict:
    """Bad files among the good ones of ``folder`` (class sub-folders); returns {path: expected reason}."""
    circle, square = folder / "circle", folder / "square"
    pixels = np.random.default_rng(0).integers(0, 255, size=(40, 48), dtype=np.uint8)
    Image.fromarray(pixels, "L").save(circle / "truncated.jpg", quality=90)
    data = (circle / "truncated.jpg").read_bytes()
    (circle / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (circle / "000-empty.png").write_bytes(b"")  # sorts first in its class
    (square / "notes.jpg").write_text("these are my notes, not a picture\n")
    (square / "bomb.png").write_bytes(png_header(30000, 30000))
    (square / "huge.png").write_bytes(png_header(12000, 12000))
    return {circle / "truncated.jpg": "truncated", circle / "000-empty.png": "cannot identify",
            square / "notes.jpg": "cannot identify", square / "bomb.png": "DecompressionBombError",
            square / "huge.png": f"exceeds the limit of {MAX_IMAGE_PIXELS}"}


@pytest.fixture
def planted(tmp_path: Path):
    """shapes train/ (14 + 14 good images, 5 bad: 33 = 3 batches of 11) and test/ (clean)."""
    root = tmp_path / "planted"
    write_image_folder(root / "train", per_class=14, seed=0)
    write_image_folder(root / "test", per_class=6, seed=1)
    return root, plant_bad_files(root / "train")


@pytest.fixture(autouse=True)
def one_log_handler():
    """main() adds a stderr handler to the 'selfsup' logger per call: keep only this test's one."""
    logger = logging.getLogger("selfsup")
    logger.handlers.clear()
    yield
    logger.handlers.clear()


def read_list(path: Path) -> list:
    return [line.split("\t") for line in path.read_text().splitlines()]


def test_each_planted_file_is_unreadable_with_its_reason(planted):
    root, bad = planted
    for path, reason in bad.items():
        assert reason in check_image(path), path
        with pytest.raises(UnreadableImage, match=str(path)):
            open_image(path)
    assert check_image(root / "train" / "circle" / "000.png") is None
    files = sorted(p for p in (root / "train").rglob("*") if p.is_file())
    assert {Path(p) for p, _ in find_unreadable(files, workers=2)} == set(bad)  # in parallel, same answer
    assert {Path(p) for p, _ in find_unreadable(files, workers=1)} == set(bad)


def test_skip_replaces_with_next_readable_and_error_names_the_file(planted, tmp_path):
    root, bad = planted
    dataset = load_dataset(f"folder:{root}")  # a bad file sorted first does not stop construction
    files = list(dataset.files)
    empty = files.index(root / "train" / "circle" / "000-empty.png")
    with pytest.raises(UnreadableImage, match="000-empty.png.*selfsup data check") as error:
        dataset[empty]
    assert "\n" not in str(error.value)
    dataset.on_bad_image, dataset.skip_log = "skip", SkipLog(tmp_path / "skipped.txt")
    image, label = dataset[empty]
    assert torch.equal(image, dataset[empty + 1][0]) and label == 0
    last_bad = max(files.index(p) for p in bad)  # replacement wraps around past the last file
    assert dataset[last_bad][0].shape[0] == 1
    dataset[empty]
    assert [row[0] for row in read_list(tmp_path / "skipped.txt")].count(str(files[empty])) == 1
    everything_bad = tmp_path / "all-bad"
    everything_bad.mkdir()
    (everything_bad / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match="none of 1 sampled files"):
        FolderDataset(everything_bad)


def _record_many(path: str) -> None:
    log = SkipLog(path)
    for i in range(50):
        log.record(f"/data/{i % 5}.jpg", "broken")


def test_skip_log_lists_each_file_once_across_processes(tmp_path):
    import multiprocessing

    log_path = tmp_path / "skipped.txt"
    workers = [multiprocessing.get_context("fork").Process(target=_record_many, args=(str(log_path),))
               for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert [w.exitcode for w in workers] == [0] * 4
    assert sorted(row[0] for row in read_list(log_path)) == [f"/data/{i}.jpg" for i in range(5)]


def test_path_list_packs_paths(tmp_path):
    paths = [tmp_path / "a.png", tmp_path / "naïve é" / "b.jpg", Path("/x/c.JPEG")]
    packed = PathList(paths)
    assert len(packed) == 3 and list(packed) == paths and packed[-1] == paths[-1] and packed[::2] == paths[::2]
    with pytest.raises(IndexError):
        packed[3]
    assert len(PathList([])) == 0


def test_on_bad_image_is_validated():
    from selfsup.config import make_config

    with pytest.raises(ConfigError, match="unknown on_bad_image 'ignore'; valid choices: error, skip"):
        make_config(overrides=[{"on_bad_image": "ignore"}])
    assert make_config().on_bad_image == "skip"


def test_train_skips_planted_files_and_lists_them_once(capfd, planted, tmp_path):
    root, bad = planted
    out = tmp_path / "run"
    code = main(["train", "--data", f"folder:{root}", "--epochs", "2", "--batch-size", "11", "--num-workers", "2",
                 "--output-dir", str(out), "--no-eval", *TINY])
    err = capfd.readouterr().err  # file-descriptor capture: the workers' warnings too
    assert code == 0, err[-3000:]
    listed = read_list(out / "skipped.txt")
    assert sorted(Path(p) for p, _ in listed) == sorted(bad)  # every planted file, once, over 2 epochs + kNN
    for path, reason in listed:
        assert bad[Path(path)] in reason
        assert err.count(f"skipped unreadable image {path} ") == 1  # warned once, not per batch
    assert "5 unreadable image file(s) skipped" in err and "Traceback" not in err


def test_train_with_error_policy_stops_with_one_line(capsys, planted, tmp_path):
    root, bad = planted
    code = main(["train", "--data", f"folder:{root}", "--epochs", "1", "--batch-size", "11", "--num-workers", "2",
                 "--output-dir", str(tmp_path / "run"), "--no-eval", "--set", "on_bad_image=error", *TINY])
    err = capsys.readouterr().err
    assert code == 2
    line = [row for row in err.splitlines() if row.startswith("selfsup: error:")]
    assert len(line) == 1 and "Traceback" not in err and "DataLoader worker" not in line[0]
    assert line[0].startswith("selfsup: error: cannot read image ")
    assert any(f"image {path}: " in line[0] for path in bad)


def test_data_check_lists_exactly_the_planted_files(capsys, planted, tmp_path):
    root, bad = planted
    report = tmp_path / "unreadable.txt"
    code = main(["data", "check", f"folder:{root}", "--workers", "2", "--output", str(report)])
    out = capsys.readouterr().out
    assert code == 1
    assert f"below {root}: {len(bad)} unreadable" in out and "checked 45 image files" in out
    assert sorted(Path(p) for p, _ in read_list(report)) == sorted(bad)
    for path in bad:
        assert f"  {path}: " in out
    for path in bad:
        path.unlink()
    assert main(["data", "check", f"folder:{root}", "--workers", "1"]) == 0
    assert "0 unreadable" in capsys.readouterr().out
    assert main(["data", "check", f"folder:{tmp_path / 'missing'}"]) == 2
    assert "selfsup: error: image folder" in capsys.readouterr().err


def test_frame_pairs_follow_the_policy(tmp_path):
    from selfsup.data import set_bad_image_policy

    for video in ("v1", "v2"):
        (tmp_path / "videos" / video).mkdir(parents=True)
        for t in range(3):
            Image.new("RGB", (12, 10), (40 * t, 0, 0)).save(tmp_path / "videos" / video / f"{t:05d}.png")
    broken = tmp_path / "videos" / "v1" / "00002.png"
    broken.write_bytes(broken.read_bytes()[:30])  # truncated: the target of pair 1
    dataset = load_dataset(f"frames:{tmp_path / 'videos'}")
    assert len(dataset) == 4 and len(dataset.frames) == 6
    with pytest.raises(UnreadableImage, match="00002.png"):
        dataset[1]
    set_bad_image_policy(dataset, "skip", tmp_path / "skipped.txt")
    torch.manual_seed(0)
    pair, _ = dataset[1]  # pair 2 instead: v2's frame 1 with its reference, frame 0
    assert pair.shape == (6, 10, 12) and int(pair[0, 0, 0]) == 0 and int(pair[3, 0, 0]) == 40
    assert [Path(row[0]) for row in read_list(tmp_path / "skipped.txt")] == [broken]
