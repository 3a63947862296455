"""The GPU benchmark's pieces that run anywhere: the section renderer on synthetic results, the timing
and report helpers, and the suite script's syntax (the suite itself runs on a GPU machine)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def row(name: str, rate: float, **extra):
    return {"row": name, "img_per_s": rate, "p25": rate * 0.98, "p75": rate * 1.01, "min": rate * 0.9,
            "max": rate * 1.05, "steps": 10, "median_step_ms": 1000 * 256 / rate, **extra}


def synthetic_parts():
    machine = {"gpu": "NVIDIA H200", "line": "NVIDIA H200, torch 2.11 (CUDA 12.8), 16 CPU cores (Xeon)"}
    simclr = {"config": "simclr-resnet50", "batch_size": 256, "image_size": 224, "machine": machine,
              "rows": [row("ceiling", 2468), row("plain", 2416), row("views-ready", 2403), row("full", 2380),
                       row("full-split", 2390), row("full-serial", 2060)]}
    compiled = {"config": "simclr-resnet50", "batch_size": 256, "image_size": 224, "compile": True,
                "rows": [{"row": "compile-time", "seconds": 71.5, "compiled": True},
                         row("views-ready+compile(default)", 2650), row("full-split+compile(default)", 2600)]}
    dino = {"config": "dino-resnet50", "batch_size": 256, "image_size": 224,
            "rows": [row("ceiling", 1000), {"row": "views-ready", "error": "OutOfMemoryError: CUDA out of memory"}]}
    job = {"job": "selfsup train", "rows": [
        {"row": "float32", "steps_per_s": 150.2, "median_step_ms": 6.6, "host_syncs_per_step": 0.0, "sync_sites": {}},
        {"row": "float32+sync-each-step", "steps_per_s": 47.0, "median_step_ms": 21.2, "host_syncs_per_step": 1.0,
         "sync_sites": {"gpu_throughput.py:300": 5}},
        {"row": "compile", "error": "BackendCompilerFailed: no compiler"}]}
    folder = {"folder": "/tmp/jpegs", "images": 20000, "workers": 16, "batch_size": 256, "limit": "loader-split",
              "cores_for_2400_img_per_s": 21.3,
              "rows": [{"row": "decode-torchvision", "img_per_s": 3900.0, "min": 3800.0, "max": 4000.0},
                       {"row": "loader-split", "img_per_s": 1800.0, "min": 1700.0, "max": 1900.0},
                       {**row("full-split", 1750), "data_wait_share": 0.25}]}
    decode = {"files": 200, "pil_ms_per_image": 5.6, "torchvision_ms_per_image": 2.7, "speedup": 2.07}
    return [{**machine, "cpu_cores": 16}, simclr, compiled, dino, job, folder, decode]


def test_renderer_merges_parts_and_renders_every_table(benchmark_script, tmp_path):
    section = benchmark_script("gpu_section")
    paths = []
    for i, part in enumerate(synthetic_parts()):
        paths.append(tmp_path / f"part{i}.json")
        paths[-1].write_text(json.dumps(part))
    (tmp_path / "broken.json").write_text("{not json")  # a part cut short by a timeout is skipped
    merged, markdown = tmp_path / "gpu_results.json", tmp_path / "gpu_section.md"
    assert section.main([*map(str, paths), str(tmp_path / "broken.json"), "--json", str(merged),
                         "--markdown", str(markdown)]) == 0
    text = markdown.read_text()
    assert "Machine: NVIDIA H200, torch 2.11 (CUDA 12.8), 16 CPU cores (Xeon)." in text
    assert "bash benchmarks/gpu_suite.sh" in text  # the command beside the tables
    simclr = next(line for line in text.splitlines() if line.startswith("| simclr-resnet50"))
    cells = [c.strip() for c in simclr.strip("|").split("|")]
    assert cells[1].startswith("2468 (") and cells[2].startswith("2416") and cells[-2] == "0.99" and cells[-1] == "0.99"
    assert "2650" in simclr and "2600" in simclr  # compiled rows join the eager ones
    assert "| dino-resnet50 | 1000 (" in text and "error" in text.split("| dino-resnet50")[1].splitlines()[0]
    assert "OutOfMemoryError" in text and "BackendCompilerFailed" in text and "torch.compile took 71.5 s" in text
    assert "| float32 | 150.2 | 6.60 | 0.0 | — |" in text
    assert "gpu_throughput.py:300 ×5" in text
    assert "Limiting stage: **loader-split**" in text and "21.3 cores" in text and "data wait 25 %" in text
    assert "(2.07× faster)" in text
    again = tmp_path / "again.md"  # the merged file re-renders to the same section
    section.main([str(merged), "--markdown", str(again)])
    assert again.read_text() == text


def test_renderer_copes_with_nothing_measured(benchmark_script, capsys):
    text = benchmark_script("gpu_section").render(benchmark_script("gpu_section").merge([]))
    assert "Machine: unknown" in text and "|" not in text


def test_rate_and_report_helpers(benchmark_script, tmp_path):
    bench = benchmark_script("gpu_throughput")
    stats = bench.rate([0.1, 0.2, 0.1, 0.1, 0.4], 256)
    assert stats["img_per_s"] == 2560.0 and stats["min"] == 640.0 and stats["max"] == 2560.0
    assert stats["p25"] <= stats["img_per_s"] <= stats["p75"]
    times = bench.time_steps(lambda: None, 2, 5, torch.device("cpu"))
    assert len(times) == 5 and all(t >= 0 for t in times)
    report = bench.Report(str(tmp_path / "r.json"), config="x")
    bench.guarded(report, "good", lambda: {"img_per_s": 1.0})
    bench.guarded(report, "bad", lambda: (_ for _ in ()).throw(RuntimeError("out of\nmemory")))
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert rows == [{"row": "good", "img_per_s": 1.0}, {"row": "bad", "error": "RuntimeError: out of memory"}]


def test_suite_script_parses():
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    subprocess.run([bash, "-n", str(ROOT / "benchmarks" / "gpu_suite.sh")], check=True)
