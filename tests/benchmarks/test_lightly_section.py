"""benchmarks/lightly_section.py renders the lightly comparison from the JSON files, never by hand."""

from __future__ import annotations

import json


def side(model, full, wait, workers):
    summary = {"model_img_per_s": model, "full_img_per_s": full, "data_wait_share": wait,
               "model_spread": [model - 1, model + 1], "full_spread": [full - 2, full + 1], "steps": 20}
    return summary, [{"model_img_per_s": model, "full_img_per_s": full, "data_wait_share": wait, "workers": workers,
                      "model_step_s": [256 / model] * 10, "full_step_s": [256 / full] * 10}]


def test_section_is_computed_from_the_json_and_kept_in_benchmarks_md(tmp_path, benchmark_script):
    ours, our_runs = side(20.0, 30.0, 0.01, 0)
    theirs, their_runs = side(16.0, 15.0, 0.2, 2)
    throughput = {"command": "python benchmarks/vs_lightly.py", "threads": 2,
                  "machine": "AMD EPYC (x86_64), 2 logical CPUs, 2 torch threads; AVX2 FMA AVX-512 AVX512_BF16; "
                             "torch 2.x, ATen CPU kernels AVX512; selfsup Winograd kernels: avx512 build",
                  "steps": 10, "warmup": 4, "rounds": 2, "precision": "32",
                  "torch": "2.x", "lightly": "1.x", "batch_size": 256, "image_size": 32, "backbone": "resnet18",
                  "methods": {"simclr": {"selfsup": ours, "lightly": theirs, "ratio_model": 1.25, "ratio_full": 2.0,
                                         "runs": {"selfsup/tuned": our_runs, "lightly/system": their_runs},
                                         "controls": {"selfsup_system_allocator": side(18.0, 25.0, 0.01, 0)[0],
                                                      "lightly_tuned_allocator": side(17.0, 16.0, 0.2, 2)[0],
                                                      "ratio_full_both_system": 1.67, "ratio_full_both_tuned": 1.88},
                                         "convolution_control": {
                                             "selfsup_direct_convolution": side(15.0, 24.0, 0.01, 0)[0],
                                             "ratio_full_direct_convolution": 1.6,
                                             "selfsup_winograd_convolution": side(14.0, 21.0, 0.01, 0)[0],
                                             "ratio_full_winograd_convolution": 1.4}}}}
    race = {"settings": {"minutes": 15.0, "threads": 2, "lightly_workers": 2, "backbone": "resnet18-tiny", "batch": 256,
                         "machine": "2 cores", "command": "python benchmarks/race_vs_lightly.py"},
            "selfsup": {"steps": 900, "epochs": 3.84, "knn_top1": 0.79, "linear_top1": 0.82, "allocator": "tuned",
                        "convolution": "auto"},
            "lightly": {"steps": 400, "epochs": 1.7, "knn_top1": 0.755, "linear_top1": 0.80},
            "floor": {"knn_top1": 0.68, "linear_top1": 0.74}}
    (tmp_path / "t.json").write_text(json.dumps(throughput))
    (tmp_path / "r.json").write_text(json.dumps(race))
    root, output = tmp_path / "bench", tmp_path / "BENCHMARKS.md"
    root.mkdir()
    (root / "methods-2ep.md").write_text("## Every method, same budget\n")
    main = benchmark_script("lightly_section").main
    assert main(["--throughput", str(tmp_path / "t.json"), "--race", str(tmp_path / "r.json"),
                 "--root", str(root), "--output", str(output)]) == 0
    text = output.read_text()
    assert text.index("## Every method") < text.index("## Against lightly")
    assert ("| simclr | 20.0 (19.0–21.0) | 30.0 (28.0–31.0) | 1.0 % | 16.0 (15.0–17.0) | 15.0 (13.0–16.0) (2) | "
            "20.0 % | 1.25× | 2.00× | yes |") in text
    assert "Full step at least 1.5× lightly's: 1 of 1 methods (simclr)." in text
    assert ("| simclr | 25.0 (23.0–26.0) | 30.0 (28.0–31.0) | 15.0 (13.0–16.0) | 16.0 (14.0–17.0) | 1.67× | 2.00× | "
            "1.88× |") in text
    assert ("| simclr | 24.0 (22.0–25.0) | 21.0 (19.0–22.0) | 30.0 (28.0–31.0) | 15.0 (13.0–16.0) | 1.25× | 1.60× | "
            "2.00× |") in text
    assert "Machine: AMD EPYC (x86_64), 2 logical CPUs, 2 torch threads; AVX2 FMA AVX-512 AVX512_BF16;" in text
    assert "median (min–max) over 10 timed steps after 4 warm-up steps in each of 2 rounds" in text
    assert "float32 on both sides" in text
    assert "| selfsup | tuned | auto | 900 | 3.8 | 79.00 | 82.00 |" in text
    assert "| lightly | system | direct | 400 | 1.7 | 75.50 | 80.00 |" in text
    assert "+3.50 points (selfsup ahead)" in text
    assert "Command: `python benchmarks/vs_lightly.py`" in text


def test_missing_results_say_which_command_makes_them(tmp_path, benchmark_script):
    root, output = tmp_path / "bench", tmp_path / "BENCHMARKS.md"
    main = benchmark_script("lightly_section").main
    assert main(["--throughput", str(tmp_path / "none.json"), "--race", str(tmp_path / "none2.json"),
                 "--root", str(root), "--output", str(output)]) == 0
    text = output.read_text()
    assert "Not measured yet: `python benchmarks/vs_lightly.py" in text
    assert "Not measured yet: `python benchmarks/race_vs_lightly.py" in text
