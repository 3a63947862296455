"""benchmarks/throughput_table.py writes the README's throughput block from measured rows: the
table and the sentences under it, no figure typed by hand."""

from __future__ import annotations

import json


def row(backbone, augment, channels_last, allocator, model, full, wait=0.01, convolution="auto"):
    return {"backbone": backbone, "augment": augment, "workers": 0 if augment == "batched" else 2,
            "allocator": allocator, "convolution": convolution, "channels_last": channels_last, "compile": False,
            "model_img_per_s": model, "model_spread": [model - 1, model + 2], "data_img_per_s": 20000.0,
            "full_img_per_s": full, "full_spread": [full - 1, full + 1], "data_wait_share": wait, "rounds": 2}


def test_block_and_summary_come_from_the_rows(tmp_path, benchmark_script):
    script = benchmark_script("throughput_table")
    large, tiny = script.LARGE, script.TINY
    rows = [
        row(large, "batched", False, "tuned", 16.0, 15.0), row(large, "batched", True, "tuned", 20.0, 19.5),
        row(large, "per-image", False, "tuned", 15.0, 14.0), row(large, "per-image", True, "tuned", 19.0, 18.0),
        row(large, "batched", True, "system", 16.0, 15.0), row(large, "batched", True, "tuned", 12.0, 13.0, convolution="direct"),
        row(large, "batched", True, "tuned", 21.0, 19.5, convolution="winograd"),
        row(tiny, "batched", False, "tuned", 600.0, 580.0, 0.02), row(tiny, "batched", True, "tuned", 900.0, 800.0, 0.03),
        row(tiny, "per-image", False, "tuned", 500.0, 300.0), row(tiny, "per-image", True, "tuned", 780.0, 400.0),
        row(tiny, "batched", True, "system", 880.0, 640.0, 0.025),
        row(tiny, "batched", True, "tuned", 890.0, 790.0, 0.03, convolution="direct"),
        row(tiny, "batched", True, "tuned", 700.0, 632.0, 0.03, convolution="winograd"),
    ]
    saved = tmp_path / "rows.json"
    machine = {"line": "AMD EPYC (x86_64), 2 logical CPUs, 2 torch threads; AVX2 FMA AVX-512; torch 2.x, "
                       "ATen CPU kernels AVX512; selfsup Winograd kernels: avx512 build"}
    saved.write_text(json.dumps({"steps": 10, "warmup": 4, "large_steps": 10, "rounds": 2, "batch_size": 256,
                                 "machine": machine, "rows": rows}))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{script.BEGIN}\nold table, 123 img/s\n{script.END}\n\nafter\n")
    assert script.main(["--rows", str(saved), "--write", str(readme)]) == 0
    text = readme.read_text()
    assert "old table" not in text and text.endswith("after\n") and text.count(script.BEGIN) == 1
    assert "| resnet18, small stem | batched (0 workers) | on | system | auto | 16 (15–18) | 20000 | 15 (14–16) | 1.0 % |" in text
    assert "| resnet18, small stem | batched (0 workers) | on | tuned | direct | 12 (11–14) | 20000 | 13 (12–14) | 1.0 % |" in text
    assert ("`python benchmarks/throughput_table.py --steps 10 --warmup 4 --large-steps 10 --rounds 2 --write README.md`"
            in text)
    assert "Machine: AMD EPYC (x86_64), 2 logical CPUs" in text and "Winograd kernels: avx512 build" in text
    assert "median (min–max) over 10 timed steps after 4 warm-up steps (10 for the full-width ResNet-18) in each of 2 rounds" in text
    assert "give 800 img/s, 2.0× the per-image loop" in text
    assert "data wait of 1.0–3.0 %" in text
    assert "by 1.50× on `resnet18-tiny` and 1.25× on ResNet-18" in text
    assert "the ResNet-18 full step is 1.30× as fast" in text and "the `resnet18-tiny` one is 1.25× as fast" in text
    assert "direct ones the ResNet-18 full step is 1.50× as fast and the `resnet18-tiny` one is unchanged" in text
    assert ("(`cpu.convolution=winograd`) the ResNet-18 full step is 1.50× as fast and the `resnet18-tiny` one "
            "is 0.80× as fast (slower) against direct") in text
    assert "trains at 20 img/s" in text
    assert script.effect(0.97) == "is unchanged within the noise of these timings (0.97×)"
    assert script.effect(0.8) == "is 0.80× as fast (slower)"
