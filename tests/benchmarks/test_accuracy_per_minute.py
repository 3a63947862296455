"""benchmarks/accuracy_per_minute.py: every candidate is a valid recipe, and the table is built from
the runs' stored results (sorted by training minutes, raw pixels below, the command beside it)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from selfsup.bench import BenchSettings, EntryResult, _slug, entry_config

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def test_every_candidate_is_a_valid_config(tmp_path, benchmark_script):
    script = benchmark_script("accuracy_per_minute")
    labels = [c.label for c in script.CANDIDATES]
    assert len(set(labels)) == len(labels)
    for entry in script.CANDIDATES:
        config = entry_config(entry, BenchSettings(epochs=None), tmp_path / _slug(entry.label)).validate()
        assert config.method == entry.method and config.data == "fashion-mnist"
        assert any(o.startswith("epochs=") for o in entry.overrides), "each candidate sizes its own budget"
    second = script.with_seed(script.CANDIDATES[0], 1)
    assert entry_config(second, BenchSettings(epochs=None), tmp_path / "s").seed == 1


def test_unknown_candidate_is_refused_with_the_valid_ones(benchmark_script, capsys):
    script = benchmark_script("accuracy_per_minute")
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--only", "simclr τ=0.3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown candidate 'simclr τ=0.3'; valid: " in err and script.CANDIDATES[0].label in err


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="Fashion-MNIST not installed (make data)")
def test_table_comes_from_the_stored_results(tmp_path, benchmark_script):
    script = benchmark_script("accuracy_per_minute")
    root = tmp_path / "study" / "fashion-mnist"
    picked = script.CANDIDATES[:2]
    for minutes, entry in zip((7.5, 3.25), picked):
        folder = root / _slug(entry.label)
        folder.mkdir(parents=True)
        result = EntryResult(entry.label, entry.method, "done", "resnet18-tiny", minutes=minutes,
                             metrics={"knn_top1": 0.8312, "linear_top1": 0.8555, "fewshot0.1_linear_top1": 0.8},
                             floor={"knn_top1": 0.68, "linear_top1": 0.74, "fewshot0.1_linear_top1": 0.7},
                             curve=[{"minutes": minutes, "epoch": 6, "knn_top1": 0.8}])
        (folder / "result.json").write_text(json.dumps(asdict(result)))
    (root / "baselines.json").write_text(json.dumps({"pixels": {"knn_top1": 0.8178, "linear_top1": 0.8401}}))
    markdown = tmp_path / "BENCHMARKS.md"
    markdown.write_text("# B\n\n<!-- STUDY -->\nold\n<!-- /STUDY -->\n\nafter\n")
    argv = ["--only", *(e.label for e in picked), "--root", str(tmp_path / "study"), "--write", str(markdown)]
    assert script.main(argv) == 0
    text = markdown.read_text()
    assert "old" not in text and text.endswith("after\n")
    first, second = text.index(f"| {picked[1].label} |"), text.index(f"| {picked[0].label} |")
    assert first < second  # 3.25 training minutes before 7.5
    assert f"| {picked[1].label} | resnet18-tiny | 6 | 3.2 | 83.12 | 68.00 | 85.55 | 74.00 |" in text
    assert "| raw pixels | — | — | — | 81.78 | | 84.01 |" in text
    assert "Command: `python benchmarks/accuracy_per_minute.py --only" in text
