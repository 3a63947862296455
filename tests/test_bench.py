"""`selfsup bench`: trains each entry, evaluates against the floors, writes the table, resumes."""

from __future__ import annotations

import json

from selfsup.cli import main

TINY = ["batch_size=8", "num_workers=0", "backbone=resnet18", "backbone_args={small_stem: true, width: 0.125}",
        "views.image_size=16", "optim.warmup_epochs=0", "trainer.limit_train_batches=2",
        "monitor.knn_train_samples=16", "monitor.knn_test_samples=8", "monitor.knn_k=5"]


def bench_args(data, root, output, *extra):
    args = ["bench", "--data", f"folder:{data}", "--epochs", "1", "--root", str(root), "--output", str(output),
            "--knn-k", "5", "--linear-epochs", "5"]
    for setting in TINY:
        args += ["--set", setting]
    return args + list(extra)


def test_bench_writes_the_table_and_reuses_finished_entries(shapes_folder, tmp_path, monkeypatch):
    output = tmp_path / "BENCHMARKS.md"
    args = bench_args(shapes_folder, tmp_path / "bench", output, "--methods", "simclr")
    assert main(args) == 0
    text = output.read_text()
    assert "| simclr | resnet18 | 1 |" in text and "raw pixels" in text and "supervised resnet18 1 epochs" in text
    assert "Command: `selfsup bench --methods simclr --data folder:" in text
    entry = next((tmp_path / "bench").rglob("result.json"))
    result = json.loads(entry.read_text())
    assert result["status"] == "done" and 0 <= result["metrics"]["knn_top1"] <= 1 and result["curve"]
    assert "fewshot0.1_linear_top1" in result["metrics"] and "knn_top1" in result["floor"]

    # A second run finds the finished entry and does not train again.
    calls = []
    monkeypatch.setattr("selfsup.engine.train", lambda *a, **k: calls.append(a))
    assert main(args) == 0
    assert calls == [] and "| simclr | resnet18 |" in output.read_text()


def test_bench_reports_an_entry_that_cannot_run(shapes_folder, tmp_path):
    output = tmp_path / "BENCHMARKS.md"
    args = bench_args(shapes_folder, tmp_path / "bench", output, "--methods", "simclr", "--no-supervised",
                      "--set", "batch_size=4096")
    assert main(args) == 0
    assert "not run: batch_size 4096 is larger than the dataset" in output.read_text()


def test_unknown_method_is_a_one_line_error(tmp_path, capsys):
    assert main(["bench", "--methods", "nope", "--root", str(tmp_path)]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err


def test_ablation_ranking_is_computed_from_the_results():
    from selfsup.bench import EntryResult
    from selfsup.commands.bench import ranking

    results = [EntryResult("m=0.9", "moco", "done", metrics={"linear_top1": 0.70, "knn_top1": 0.66}),
               EntryResult("m=0.999", "moco", "done", metrics={"linear_top1": 0.81, "knn_top1": 0.60}),
               EntryResult("m=0", "moco", "not run: diverged")]
    assert ranking(results) == "m=0.999 (81.0) > m=0.9 (70.0)"
    assert ranking(results, "knn_top1") == "m=0.9 (66.0) > m=0.999 (60.0)"


def test_budget_is_epochs_or_the_recipes_own_and_keeps_results_apart(tmp_path):
    import argparse

    import pytest

    from selfsup.bench import BenchEntry, BenchSettings, entry_config
    from selfsup.commands.bench import assemble, budget, budget_name

    assert budget("3") == 3 and budget("recipe") is None
    for bad in ("0", "two", "-1"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"'{bad}' is not a budget"):
            budget(bad)
    assert budget_name(2) == "2ep" and budget_name(None) == "recipe"
    # 'recipe' leaves the recipe's epochs (npid: 10, simclr: 6); a number overrides them.
    npid = BenchEntry("npid", "npid")
    assert entry_config(npid, BenchSettings(epochs=None), tmp_path / "a").epochs == 10
    assert entry_config(npid, BenchSettings(epochs=2), tmp_path / "b").epochs == 2
    # Sections of every budget are kept and ordered: common budgets by epochs, then the recipes'.
    for name in ("methods-recipe", "methods-10ep", "methods-2ep", "moco-momentum-2ep", "vs-lightly"):
        (tmp_path / f"{name}.md").write_text(f"## {name}\n")
    assemble(tmp_path, tmp_path / "BENCHMARKS.md")
    text = (tmp_path / "BENCHMARKS.md").read_text()
    order = [text.index(f"## {n}") for n in ("methods-2ep", "methods-10ep", "methods-recipe", "moco-momentum-2ep", "vs-lightly")]
    assert order == sorted(order)
