"""Accuracy per CPU-minute: selfsup's SimCLR against lightly's, each trained for the same wall-clock budget.

    pip install -e '.[bench]'
    python benchmarks/race_vs_lightly.py --minutes 15 --output runs/race_vs_lightly.json

Both sides train SimCLR on the 60 000 Fashion-MNIST training images for ``--minutes`` of wall
clock, then are evaluated by the same code (selfsup's weighted kNN, k = 200, and the linear
protocol on frozen features of all 60 000 / 10 000 images), beside the random-init floor of the
same network. What is the same on both sides: the network (selfsup's ``resnet18-tiny``, built
once from one seed), the head sizes (512 → 128), the temperature (0.2), the view recipe of
``configs/fashion-mnist/simclr.yaml`` (crop scale 0.2–1, jitter 0.4/0.4/0.4/0.1 with p 0.8,
grayscale p 0.2, flip, no blur), the batch (256), the optimizer (LARS, lr 0.4, weight decay 1e-5,
no decay on biases and norms) and the schedule. The schedule is a function of the elapsed share
of the budget (linear warm-up over the first 5 %, then cosine to 0), so each side anneals fully
whatever its speed. What differs is each library's own pipeline in its normal usage:

* selfsup: the uint8 dataset in memory, ``BatchedMultiViewTransform`` on whole batches in the
  training process, channels_last, the registered ``simclr`` method (its NT-Xent and head), and
  as ``selfsup train`` does on CPU, the C allocator tuned for training (``tune_cpu_allocator``) and
  3×3 convolutions autotuned per layer shape (``use_winograd(..., autotune=True)``, ``cpu.convolution=auto``);
* lightly: ``SimCLRTransform`` per PIL image in ``--lightly-workers`` DataLoader workers (its
  documented usage), its ``SimCLRProjectionHead`` and ``NTXentLoss``.

Each side runs in its own child process (``--side``), one after the other, so neither shares
the cores with the other; results are kept in ``--output`` and a finished side is not re-run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).parent))
from vs_lightly import PILDataset  # noqa: E402

from selfsup.backbones import build_backbone  # noqa: E402
from selfsup.config import OptimConfig  # noqa: E402
from selfsup.data import TensorImageDataset, load_dataset  # noqa: E402
from selfsup.engine.optim import build_optimizer, split_decay_groups  # noqa: E402
from selfsup.evaluation.suite import EvalSettings, evaluate_encoder  # noqa: E402
from selfsup.io import atomic_write_text  # noqa: E402
from selfsup.methods import Progress, build_method  # noqa: E402
from selfsup.ops import machine_line, tune_cpu_allocator, use_winograd  # noqa: E402
from selfsup.transforms import BatchedMultiViewTransform, ViewConfig  # noqa: E402

BACKBONE = "resnet18-tiny"
BATCH = 256
TEMPERATURE, HIDDEN, OUT = 0.2, 512, 128
CROP_SCALE, JITTER, JITTER_PROB, GRAY_PROB = (0.2, 1.0), (0.4, 0.4, 0.4, 0.1), 0.8, 0.2
OPTIM = OptimConfig(name="lars", lr=0.4, lr_scaling="linear", weight_decay=1e-5)
WARMUP_SHARE = 0.05


def lr_factor(elapsed_share: float) -> float:
    """Warm-up then cosine, as a function of the share of the time budget already used."""
    if elapsed_share < WARMUP_SHARE:
        return max(elapsed_share / WARMUP_SHARE, 1e-3)
    progress = min(1.0, (elapsed_share - WARMUP_SHARE) / (1.0 - WARMUP_SHARE))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_backbone(in_channels: int) -> nn.Module:
    torch.manual_seed(0)  # the same initial network on both sides
    return build_backbone(BACKBONE, in_channels=in_channels)


def optimizer_for(module: nn.Module) -> torch.optim.Optimizer:
    decay, no_decay = split_decay_groups(module.named_parameters(), OPTIM.exclude_bias_and_norm)
    return build_optimizer(OPTIM, [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], BATCH)


class SelfsupSimCLR:
    """selfsup as its documentation shows: in-memory uint8 data, batched views, the registered method."""

    def __init__(self, train: TensorImageDataset) -> None:
        backbone = make_backbone(train.info.num_channels)
        self.method = build_method("simclr", backbone, {"temperature": TEMPERATURE, "projection_hidden_dim": HIDDEN,
                                                         "projection_dim": OUT})
        self.method = self.method.to(memory_format=torch.channels_last)
        switched = use_winograd(self.method, autotune=True)  # as `selfsup train` does on CPU (cpu.convolution=auto)
        self.convolution = "auto" if switched else "direct"
        views = ViewConfig.simclr(image_size=train.info.image_size, crop_scale=CROP_SCALE, jitter=JITTER,
                                  jitter_prob=JITTER_PROB, grayscale_prob=GRAY_PROB, blur_prob=(0.0, 0.0))
        self.augment = BatchedMultiViewTransform(views, train.info)
        self.train, self.num_images = train, len(train)
        self.optimizer = optimizer_for(self.method)
        self.steps = 0

    def encoder(self) -> nn.Module:
        return self.method.encoder()

    def batches(self) -> Iterator[List[Tensor]]:
        while True:
            loader = torch.utils.data.DataLoader(self.train, batch_size=BATCH, shuffle=True, drop_last=True)
            for images, _ in loader:
                yield [v.contiguous(memory_format=torch.channels_last) for v in self.augment(images)]

    def step(self, views: List[Tensor]) -> float:
        out = self.method(views)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.optimizer.step()
        self.steps += 1
        self.method.on_step_end(out, Progress(self.steps, self.steps + 1))
        return out.loss.detach().item()


class LightlySimCLR:
    """lightly as its documentation shows: PIL views in DataLoader workers, its head and loss."""

    def __init__(self, train: TensorImageDataset, workers: int) -> None:
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead
        from lightly.transforms import SimCLRTransform

        info = train.info
        self.backbone = make_backbone(info.num_channels)
        self.head = SimCLRProjectionHead(self.backbone.feature_dim, HIDDEN, OUT)
        self.criterion = NTXentLoss(temperature=TEMPERATURE)
        # lightly's jitter strengths are cj_strength × (0.8, 0.8, 0.8, 0.2): 0.5 gives (0.4, 0.4, 0.4, 0.1).
        transform = SimCLRTransform(input_size=info.image_size, cj_prob=JITTER_PROB, cj_strength=0.5,
                                    min_scale=CROP_SCALE[0], random_gray_scale=GRAY_PROB, gaussian_blur=0.0,
                                    normalize={"mean": list(info.mean), "std": list(info.std)})
        self.dataset, self.num_images = PILDataset(train.images, transform), len(train)
        self.model = nn.Sequential(self.backbone, self.head)
        self.optimizer = optimizer_for(self.model)
        self.workers = workers

    def encoder(self) -> nn.Module:
        return self.backbone

    def batches(self) -> Iterator[List[Tensor]]:
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=BATCH, shuffle=True, drop_last=True,
                                             num_workers=self.workers, persistent_workers=self.workers > 0)
        while True:
            yield from loader

    def step(self, views: List[Tensor]) -> float:
        loss = self.criterion(self.model(views[0]), self.model(views[1]))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach().item()


def train_for(side, seconds: float, log: Callable[[str], None]) -> Dict[str, float]:
    peaks = [group["lr"] for group in side.optimizer.param_groups]
    batches = side.batches()
    start = time.perf_counter()
    steps, loss = 0, float("nan")
    while (elapsed := time.perf_counter() - start) < seconds:
        for group, peak in zip(side.optimizer.param_groups, peaks):
            group["lr"] = peak * lr_factor(elapsed / seconds)
        loss = side.step(next(batches))
        steps += 1
        if steps % 50 == 0:
            log(f"  {elapsed / 60:5.1f} min  step {steps}  loss {loss:.3f}")
    return {"steps": steps, "epochs": steps * BATCH / side.num_images,
            "train_minutes": (time.perf_counter() - start) / 60, "final_loss": loss}


def evaluate(encoder: nn.Module, train, test) -> Dict[str, float]:
    metrics = evaluate_encoder(encoder, train, test, ("knn", "linear"), EvalSettings())
    return {"knn_top1": metrics["knn_top1"], "linear_top1": metrics["linear_top1"]}


def run_side(args: argparse.Namespace) -> Dict[str, object]:
    allocator = tune_cpu_allocator() if args.side == "selfsup" else "system"
    torch.set_num_threads(args.threads)
    train = load_dataset("fashion-mnist", "train", args.data_dir)
    test = load_dataset("fashion-mnist", "test", args.data_dir)
    log = lambda message: print(f"[{args.side}] {message}", file=sys.stderr, flush=True)  # noqa: E731
    if args.side == "floor":
        return evaluate(make_backbone(train.info.num_channels), train, test)
    side = SelfsupSimCLR(train) if args.side == "selfsup" else LightlySimCLR(train, args.lightly_workers)
    result: Dict[str, object] = {**train_for(side, args.minutes * 60, log), "allocator": allocator,
                                 "convolution": getattr(side, "convolution", "direct")}
    result.update(evaluate(side.encoder(), train, test))
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=15.0, help="training wall clock per side")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--lightly-workers", type=int, default=2, help="DataLoader workers of lightly's pipeline")
    p.add_argument("--data-dir")
    p.add_argument("--output", default="runs/race_vs_lightly.json", help="results, kept between invocations")
    p.add_argument("--side", choices=["selfsup", "lightly", "floor"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.side:  # child process: one side, JSON on stdout
        print(json.dumps(run_side(args)))
        return 0

    output = Path(args.output)
    results = json.loads(output.read_text()) if output.exists() else {}
    if results.get("settings", {}).get("minutes") not in (None, args.minutes):
        results = {}  # another budget: start over
    results["settings"] = {"minutes": args.minutes, "threads": args.threads, "lightly_workers": args.lightly_workers,
                           "backbone": BACKBONE, "batch": BATCH, "machine": machine_line(args.threads),
                           "command": "python benchmarks/race_vs_lightly.py " + " ".join(argv or sys.argv[1:])}
    for side in ("selfsup", "lightly", "floor"):
        if side in results:
            continue
        cmd = [sys.executable, __file__, "--side", side, "--minutes", str(args.minutes), "--threads", str(args.threads),
               "--lightly-workers", str(args.lightly_workers)] + (["--data-dir", args.data_dir] if args.data_dir else [])
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
        results[side] = json.loads(done.stdout.strip().splitlines()[-1])
        atomic_write_text(output, json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
