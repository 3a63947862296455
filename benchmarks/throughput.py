"""Images per second of one training step, with and without the data pipeline.

    python benchmarks/throughput.py --method simclr --backbone resnet18 \
        --backbone-args '{"small_stem": true}' --image-size 32 --batch-size 256

Three timings, each the median over ``--steps`` steps after ``--warmup`` steps (4 and 10 by
default), with their spread (min–max over the steps; every step's seconds are in the JSON):
  * model:  forward + backward + optimizer step on views already in memory;
  * data:   the data pipeline alone (loader → views, batched or per image);
  * full:   the training loop as it runs, loader included; ``data_wait_share`` is the fraction
            of the full step spent waiting for the next batch.
The CPU speed-ups are set as ``selfsup train`` sets them by default (tuned allocator, 3×3
convolutions autotuned per layer shape: ``--convolution auto``), or by the options. Prints one JSON
object (and writes it with --output) with the machine line (CPU, ISA flags, torch, which kernels
ran). Images/s counts images, not views. One process measures one setting: compare settings with
``benchmarks/throughput_table.py``, which interleaves them in fresh processes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import MIN_STEPS, MIN_WARMUP, rate  # noqa: E402

from selfsup.backbones import build_backbone  # noqa: E402
from selfsup.config import OptimConfig  # noqa: E402
from selfsup.data import ViewDataset, load_dataset  # noqa: E402
from selfsup.engine.optim import build_optimizer, split_decay_groups  # noqa: E402
from selfsup.methods import METHODS, build_method  # noqa: E402
from selfsup.ops import AUTOTUNER, machine_info, tune_cpu_allocator, use_winograd  # noqa: E402
from selfsup.transforms import BatchedMultiViewTransform, MultiViewTransform  # noqa: E402


def build(args: argparse.Namespace, dataset):
    torch.manual_seed(0)
    backbone = build_backbone(args.backbone, in_channels=dataset.info.num_channels, **json.loads(args.backbone_args))
    method = build_method(args.method, backbone, json.loads(args.method_args))
    decay, no_decay = split_decay_groups(method.named_parameters(), True)
    optimizer = build_optimizer(OptimConfig(name=args.optimizer), [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], args.batch_size)
    return method, optimizer


def train_step(method, optimizer, views, channels_last: bool, bf16: bool = False) -> None:
    if channels_last:
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # as trainer.precision=bf16-mixed
        loss = method(views).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _single_view(image: torch.Tensor) -> List[torch.Tensor]:
    return [image]


def measure(args: argparse.Namespace, channels_last: bool) -> Dict[str, float]:
    dataset = load_dataset(args.data, "train", args.data_dir)
    views_cfg = METHODS.get(args.method).default_views(image_size=args.image_size)
    batched = args.augment == "batched"
    per_image = _single_view if batched else MultiViewTransform(views_cfg, dataset.info)
    augment = BatchedMultiViewTransform(views_cfg, dataset.info) if batched else None
    loader = torch.utils.data.DataLoader(
        ViewDataset(dataset, per_image), batch_size=args.batch_size,
        shuffle=True, drop_last=True, num_workers=args.num_workers, persistent_workers=args.num_workers > 0,
    )

    def next_views(iterator) -> List[torch.Tensor]:
        views = next(iterator)[0]
        return augment(views[0]) if augment is not None else views

    method, optimizer = build(args, dataset)
    method.train()
    if channels_last:
        method.to(memory_format=torch.channels_last)
    if args.convolution != "direct":  # as selfsup's trainer does on CPU (cpu.convolution)
        use_winograd(method, strict=True, autotune=args.convolution == "auto")
    if args.compile:
        # torch.compile (Inductor's C++/OpenMP code on a CPU) on the backbone, where the time goes;
        # compilation happens in the warm-up steps, which are not timed.
        method.backbone = torch.compile(method.backbone)
    total = args.warmup + args.steps

    # data pipeline alone
    data_times, it = [], iter(loader)
    for i in range(total):
        start = time.perf_counter()
        fixed_views = next_views(it)
        if i >= args.warmup:
            data_times.append(time.perf_counter() - start)

    # model alone, on one batch of real views held in memory
    model_times = []
    for i in range(total):
        start = time.perf_counter()
        train_step(method, optimizer, fixed_views, channels_last, args.precision == "bf16")
        if i >= args.warmup:
            model_times.append(time.perf_counter() - start)

    # the full loop
    full_times, waits, it = [], [], iter(loader)
    for i in range(total):
        start = time.perf_counter()
        views = next_views(it)
        got = time.perf_counter()
        train_step(method, optimizer, views, channels_last, args.precision == "bf16")
        if i >= args.warmup:
            full_times.append(time.perf_counter() - start)
            waits.append(got - start)
    model, data, full = (rate(t, args.batch_size) for t in (model_times, data_times, full_times))
    return {
        "channels_last": channels_last,
        "compile": args.compile,
        "model_img_per_s": model["median"],
        "data_img_per_s": data["median"],
        "full_img_per_s": full["median"],
        "model_spread": [model["min"], model["max"]],
        "full_spread": [full["min"], full["max"]],
        "data_wait_share": round(sum(waits) / sum(full_times), 3),
        "model_step_s": [round(t, 5) for t in model_times],
        "data_step_s": [round(t, 5) for t in data_times],
        "full_step_s": [round(t, 5) for t in full_times],
        "full_wait_s": [round(t, 5) for t in waits],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="simclr")
    p.add_argument("--method-args", default="{}", help="JSON, e.g. '{\"temperature\": 0.5}'")
    p.add_argument("--backbone", default="resnet18-tiny")
    p.add_argument("--backbone-args", default="{}", help="JSON, e.g. '{\"small_stem\": true}'")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--data-dir")
    p.add_argument("--image-size", type=int, default=None, help="view size (default: the dataset's)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--optimizer", default="lars", choices=["lars", "sgd", "adamw"])
    p.add_argument("--augment", choices=["batched", "per-image"], default="batched",
                   help="views from whole uint8 batches (tensor ops) or per image in DataLoader workers")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--steps", type=int, default=MIN_STEPS)
    p.add_argument("--warmup", type=int, default=MIN_WARMUP)
    p.add_argument("--channels-last", choices=["on", "off", "both"], default="both")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone (measured, off by default)")
    p.add_argument("--allocator", choices=["tuned", "system"], default="tuned",
                   help="glibc malloc tuned for training as selfsup's trainer does (default), or left alone")
    p.add_argument("--convolution", choices=["auto", "winograd", "direct"], default="auto",
                   help="3×3 stride-1 convolutions: per layer shape the faster of Winograd and PyTorch's, as "
                        "selfsup's trainer does (auto, the default), always Winograd, or always PyTorch's")
    p.add_argument("--precision", choices=["32", "bf16"], default="32",
                   help="float32 steps, or bf16 autocast as trainer.precision=bf16-mixed")
    p.add_argument("--output", help="also write the JSON here")
    args = p.parse_args(argv)
    allocator = tune_cpu_allocator() if args.allocator == "tuned" else "system"
    torch.set_num_threads(args.threads)
    modes = {"on": [True], "off": [False], "both": [False, True]}[args.channels_last]
    runs = [measure(args, m) for m in modes]
    result = {
        "method": args.method, "backbone": args.backbone, "backbone_args": json.loads(args.backbone_args),
        "data": args.data, "image_size": args.image_size, "batch_size": args.batch_size,
        "augment": args.augment, "num_workers": args.num_workers, "threads": args.threads, "allocator": allocator,
        "convolution": args.convolution, "precision": args.precision,
        "convolution_autotune": AUTOTUNER.summary() if args.convolution == "auto" else None,
        "torch": torch.__version__, "machine": machine_info(args.threads), "runs": runs,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
