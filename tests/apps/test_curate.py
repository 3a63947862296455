"""DINOv2-style curation: near-duplicate removal and retrieval, on features and on generated images."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from selfsup.apps.curation import curate, deduplicate, image_folder, near_duplicate_groups, retrieve, training_info
from selfsup.cli import main
from selfsup.errors import ConfigError, DataError
from selfsup.evaluation import export_encoder, load_encoder


def unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def test_near_duplicate_groups_are_connected_components():
    # 0 ~ 2 and 2 ~ 4 (a chain: 0 and 4 are less similar but in one group); 1 and 3 are alone.
    a = torch.tensor([1.0, 0.0, 0.0])
    b = F.normalize(torch.tensor([1.0, 0.12, 0.0]), dim=0)
    c = F.normalize(torch.tensor([1.0, 0.24, 0.0]), dim=0)
    features = torch.stack([a, unit([0.0, 1.0, 0.0])[0], b, unit([0.0, 0.0, 1.0])[0], c])
    assert float(features[0] @ features[4]) < 0.985 < float(features[0] @ features[2])
    groups = near_duplicate_groups(features, threshold=0.985)
    assert groups.tolist() == [0, 1, 0, 3, 0]
    assert deduplicate(features, 0.985).tolist() == [0, 1, 3]
    assert deduplicate(features, 0.9999).tolist() == [0, 1, 2, 3, 4]
    assert near_duplicate_groups(features, 0.985, chunk_size=2).tolist() == groups.tolist()


def test_retrieve_k_nearest_and_threshold():
    pool = unit([1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.9, 0.2], [0, 0, 1])
    queries = unit([1, 0.05, 0], [0, 1, 0.1])
    assert retrieve(queries, pool, per_query=1).tolist() == [0, 2]
    assert retrieve(queries, pool, per_query=2).tolist() == [0, 1, 2, 3]
    assert retrieve(queries, pool, threshold=0.994).tolist() == [0, 1, 2]  # similarities 0.999, 0.998, 0.995
    assert retrieve(queries, pool, per_query=1, threshold=0.994).tolist() == [0, 2]
    assert retrieve(queries, pool, per_query=2, threshold=0.9985).tolist() == [0]
    with pytest.raises(ConfigError, match="per_query"):
        retrieve(queries, pool)
    with pytest.raises(ConfigError, match="per_query=0"):
        retrieve(queries, pool, per_query=0)


def _save(path: Path, pixels: np.ndarray) -> None:
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L").save(path)


def planted_folders(root: Path):
    """A pool of 24 distinct smooth patterns, 3 planted near-copies of pool images (±1 grey level
    of noise), and a noisy version of each of 3 curated images, which are not in the pool."""
    rng = np.random.default_rng(0)

    def pattern():
        low = Image.fromarray(rng.uniform(0, 255, size=(4, 4)).astype(np.uint8))
        return np.asarray(low.resize((16, 16), Image.BILINEAR), dtype=np.float64)

    pool, seeds = root / "pool", root / "seeds"
    pool.mkdir()
    seeds.mkdir()
    bases = [pattern() for _ in range(24)]
    for i, base in enumerate(bases):
        _save(pool / f"img{i:02d}.png", base)
    for i in range(3):
        _save(pool / f"dup{i}.png", bases[i] + rng.normal(0, 1, base.shape))
    for i in range(3):
        seed = pattern()
        _save(seeds / f"seed{i}.png", seed)
        _save(pool / f"near{i}.png", seed + rng.normal(0, 8, seed.shape))
    return pool, seeds


def test_curate_removes_planted_duplicates_and_keeps_near_neighbours(tmp_path):
    pool, seeds = planted_folders(tmp_path)
    encoder = load_encoder("random", "resnet18-tiny", {}, in_channels=1).encoder
    result = curate(encoder, image_folder(str(pool)), image_folder(f"folder:{seeds}"), per_query=1,
                    dedup_threshold=0.99, image_size=16)
    assert (result.num_uncurated, result.num_after_dedup, result.num_queries) == (30, 27, 3)
    assert sorted(p.name for p in result.selected) == ["near0.png", "near1.png", "near2.png"]
    # With every image retrieved, each planted pair still appears once.
    wide = curate(encoder, image_folder(str(pool)), image_folder(str(seeds)), per_query=27,
                  dedup_threshold=0.99, image_size=16)
    names = [p.name for p in wide.selected]
    assert len(names) == 27
    assert all((f"img{i:02d}.png" in names) != (f"dup{i}.png" in names) for i in range(3))
    kept_all = curate(encoder, image_folder(str(pool)), image_folder(str(seeds)), per_query=30,
                      dedup_threshold=None, image_size=16)
    assert len(kept_all.selected) == 30


def test_curate_command_writes_the_file_list(tmp_path, capsys):
    pool, seeds = planted_folders(tmp_path)
    checkpoint = export_encoder(load_encoder("random", "resnet18-tiny", {}, in_channels=1), tmp_path / "enc.pt")
    assert training_info(checkpoint) is None  # an exported plain backbone records no training data
    output = tmp_path / "out" / "selected.txt"
    code = main(["curate", "--checkpoint", str(checkpoint), "--uncurated", f"folder:{pool}", "--curated", str(seeds),
                 "--per-query", "1", "--dedup-threshold", "0.99", "--image-size", "16", "--output", str(output)])
    assert code == 0
    lines = output.read_text().splitlines()
    assert sorted(Path(line).name for line in lines) == ["near0.png", "near1.png", "near2.png"]
    assert all(Path(line).is_absolute() and Path(line).is_file() for line in lines)
    assert "3 near-duplicates removed" in capsys.readouterr().out


def test_curate_command_bad_input(tmp_path, capsys):
    code = main(["curate", "--checkpoint", "random", "--uncurated", str(tmp_path / "missing"),
                 "--curated", str(tmp_path), "--output", str(tmp_path / "x.txt")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "missing" in err and "does not exist" in err and len(err.splitlines()) == 1
    with pytest.raises(DataError, match="names no folder"):
        image_folder("folder:")
