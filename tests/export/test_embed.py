"""``selfsup embed``: one row per image (relative path, label, features equal to a direct encoder
forward), resumable after a crash mid-way, npy + csv and Parquet outputs."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.cli import main
from selfsup.data import load_dataset
from selfsup.errors import ConfigError
from selfsup.evaluation import export_encoder, load_encoder
from selfsup.export.embeddings import output_paths, write_embeddings
from selfsup.transforms.eval import eval_transform


@pytest.fixture
def folder(tmp_path):
    """Two classes of small grey images of different sizes, one nested a level deeper."""
    rng = np.random.default_rng(0)
    for k in range(11):
        cls = "cats" if k % 2 else "dogs"
        path = tmp_path / "images" / cls / ("deep" if k == 3 else "") / f"{k:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        size = 24 + k
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(path)
    return tmp_path / "images"


@pytest.fixture
def encoder_file(tmp_path):
    torch.manual_seed(0)
    return export_encoder(load_encoder("random", "resnet18-tiny", {}, in_channels=1), tmp_path / "enc.pt")


def direct_features(encoder_file, folder, image_size=28):
    dataset = load_dataset(f"folder:{folder}", "train")
    transform = eval_transform(dataset.info, image_size)
    encoder = load_encoder(str(encoder_file)).encoder.eval()
    with torch.no_grad():
        return torch.cat([encoder(transform(dataset[i][0])[None]) for i in range(len(dataset))]).numpy(), dataset


def test_an_unreadable_file_keeps_its_row_with_nan_features(folder, encoder_file, tmp_path, capsys):
    """Row i stays file i: a truncated file's row is NaN (never another image's features), the
    others equal a direct forward, and the file is named in a warning."""
    expected, _ = direct_features(encoder_file, folder)
    bad = folder / "cats" / "05.png"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated: PIL and torchvision both refuse it
    out = tmp_path / "emb"
    assert main(["embed", "--checkpoint", str(encoder_file), "--data", f"folder:{folder}", "--output", str(out),
                 "--image-size", "28", "--chunk-size", "4", "--no-progress"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "emb.csv")))
    bad_row = [r["path"] for r in rows].index("cats/05.png")
    features = np.load(tmp_path / "emb.npy")
    assert np.isnan(features[bad_row]).all()
    good = [i for i in range(len(rows)) if i != bad_row]
    np.testing.assert_allclose(features[good], expected[good], atol=1e-5, rtol=0)
    warning = [line for line in capsys.readouterr().err.splitlines() if "NaN" in line]
    assert len(warning) == 1 and "cats/05.png (OSError: image file is truncated" in warning[0]


def test_embed_writes_one_row_per_image_matching_a_direct_forward(folder, encoder_file, tmp_path, capsys):
    out = tmp_path / "emb"
    assert main(["embed", "--checkpoint", str(encoder_file), "--data", f"folder:{folder}", "--output", str(out),
                 "--image-size", "28", "--chunk-size", "4", "--batch-size", "3", "--no-progress"]) == 0
    features = np.load(tmp_path / "emb.npy")
    expected, dataset = direct_features(encoder_file, folder)
    assert features.shape == (11, 128) and features.dtype == np.float32
    np.testing.assert_allclose(features, expected, atol=1e-5, rtol=0)
    rows = list(csv.DictReader(open(tmp_path / "emb.csv")))
    assert [r["index"] for r in rows] == [str(i) for i in range(11)]
    assert rows[0]["path"] == "cats/01.png" and "cats/deep/03.png" in [r["path"] for r in rows]
    assert all(r["class"] == r["path"].split("/")[0] and int(r["label"]) == ("dogs" == r["class"]) for r in rows)
    assert not (tmp_path / "emb.chunks").exists()  # chunks are removed once assembled


def test_a_killed_run_resumes_and_skips_finished_chunks(folder, encoder_file, tmp_path):
    dataset = load_dataset(f"folder:{folder}", "train")
    transform = eval_transform(dataset.info, 28)
    encoder = load_encoder(str(encoder_file)).encoder
    identity = {"encoder": "enc", "image_size": 28}
    out = tmp_path / "emb.npy"

    def crash_after_two(k):
        if k == 1:
            raise KeyboardInterrupt  # killed after two chunks were written

    with pytest.raises(KeyboardInterrupt):
        write_embeddings(encoder, dataset, transform, out, identity, chunk_size=3, progress=False,
                         on_chunk_written=crash_after_two)
    chunks = output_paths(out)["chunks"]
    assert sorted(p.name for p in chunks.glob("chunk-*.npy")) == ["chunk-000000.npy", "chunk-000001.npy"]
    assert not list(chunks.glob(".*tmp")) and not out.exists()  # no partial file anywhere
    with pytest.raises(ConfigError, match="another run"):  # other settings must not mix with these chunks
        write_embeddings(encoder, dataset, transform, out, {"encoder": "other"}, chunk_size=3, progress=False)
    seen = []
    result = write_embeddings(encoder, dataset, transform, out, identity, chunk_size=3, progress=False,
                              on_chunk_written=seen.append)
    assert seen == [2, 3] and result.computed_chunks == 2  # the finished chunks were skipped
    np.testing.assert_allclose(np.load(out), direct_features(encoder_file, folder)[0], atol=1e-5, rtol=0)


def test_parquet_output(folder, encoder_file, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow (the parquet extra) is not installed")
    assert main(["embed", "--checkpoint", str(encoder_file), "--data", f"folder:{folder}", "--output",
                 str(tmp_path / "emb.parquet"), "--format", "parquet", "--image-size", "28", "--no-progress"]) == 0
    table = pq.read_table(tmp_path / "emb.parquet").to_pydict()
    assert table["path"][0] == "cats/01.png" and table["class"][0] == "cats" and len(table["feature"]) == 11
    np.testing.assert_allclose(np.array(table["feature"]), np.load(tmp_path / "emb.npy"))


def test_parquet_without_pyarrow_is_a_one_line_error(folder, encoder_file, tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError("No module named 'pyarrow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    code = main(["embed", "--checkpoint", str(encoder_file), "--data", f"folder:{folder}", "--output",
                 str(tmp_path / "e"), "--format", "parquet", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "selfsup[parquet]" in err and err.count("\n") == 1


def test_channel_mismatch_is_a_one_line_error(folder, tmp_path, capsys):
    rgb = export_encoder(load_encoder("random", "resnet18-tiny", {}, in_channels=3), tmp_path / "rgb.pt")
    assert main(["embed", "--checkpoint", str(rgb), "--data", f"folder:{folder}", "--output", str(tmp_path / "e")]) == 2
    assert "3-channel" in capsys.readouterr().err
