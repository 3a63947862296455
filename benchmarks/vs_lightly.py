"""selfsup against lightly (the most used SSL library) on the same CPU work: images/s per step.

    pip install -e '.[bench]'        # lightly is an optional extra, never a runtime dependency
    python benchmarks/vs_lightly.py --methods simclr byol dino --steps 5 --rounds 2

For each method both sides train the same network on the same data with the same optimizer:
ResNet-18 with the small-image stem (3×3 conv, no max-pool) on 1-channel Fashion-MNIST
upsampled to 32×32 crops, batch 256, the same head sizes (lightly's CIFAR-10 example sizes), SGD
with momentum, and the paper's view recipe expressed in each library's own transform options.
Each side is used as its documentation shows:

* lightly: its transforms (``SimCLRTransform``, ``BYOLTransform``, ``DINOTransform``) per PIL
  image in DataLoader workers, its heads and losses, one forward per view, its momentum helpers;
* selfsup: the uint8 dataset in memory, ``BatchedMultiViewTransform`` on the batch in the training
  process, channels_last, 3×3 convolutions autotuned per layer shape (``use_winograd(...,
  autotune=True)``, as ``selfsup train`` does on CPU with ``cpu.convolution=auto``), the registered
  method (``build_method``) and its ``on_step_end``.

Two timings per side over ``--steps`` timed steps after ``--warmup`` (10 and 4 by default):
*model* (forward, backward, optimizer step and momentum update on views already in memory) and
*full* (the loop with its data pipeline; ``data_wait_share`` is the part of the step spent waiting
for views). lightly's full step is measured with each worker count of ``--lightly-workers`` and the
fastest is kept. Every measurement runs in a fresh child process, the sides alternating over
``--rounds`` rounds (selfsup, lightly, selfsup, lightly, …) so that drifts of the machine hit both
and neither inherits the other's process state. Every step's seconds are kept in the JSON; a figure
is the median over all timed steps of all rounds, with the range (min–max) of those steps.
``--precision bf16`` runs both sides under bf16 autocast (equal precision), as
``trainer.precision=bf16-mixed`` does.

The C allocator is part of each side's normal usage: ``selfsup train`` tunes glibc's malloc for
CPU training (``selfsup.ops.tune_cpu_allocator``), a lightly script leaves it as it is. With
``--allocator-controls`` each side also runs with the other's setting (selfsup on the system
allocator, lightly on the tuned one), which shows how much of the ratio the allocator is.
``--convolution-controls`` also runs selfsup with PyTorch's direct convolutions and with Winograd
forced (``cpu.convolution=direct`` / ``winograd``), the share of the ratio that the convolution
choice is. Without lightly installed, ``--sides selfsup`` times the selfsup side alone. One JSON
object, with the machine line (CPU, ISA flags, torch, which kernels ran).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Sequence

import torch
import torchvision
from PIL import Image
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).parent))
from _timing import MIN_ROUNDS, MIN_STEPS, MIN_WARMUP, fmt, pooled, rate  # noqa: E402

from selfsup.backbones import build_backbone  # noqa: E402
from selfsup.data import TensorImageDataset, load_dataset  # noqa: E402
from selfsup.methods import Progress, build_method  # noqa: E402
from selfsup.io import atomic_write_text  # noqa: E402
from selfsup.ops import AUTOTUNER, machine_info, tune_cpu_allocator, use_winograd  # noqa: E402
from selfsup.transforms import BatchedMultiViewTransform, ViewConfig  # noqa: E402

SIZE = 32  # crops of the 28×28 images, resized to 32×32 as in CIFAR-sized recipes
LOCAL_SIZE = 16
LOCAL_VIEWS = 6  # lightly's DINOTransform default
LR, MOMENTUM, WEIGHT_DECAY = 0.06, 0.9, 5e-4

# Head sizes of lightly's CIFAR-10 examples, used on both sides.
METHOD_ARGS = {
    "simclr": {"projection_hidden_dim": 512, "projection_dim": 128, "temperature": 0.5},
    "byol": {"projection_hidden_dim": 1024, "projection_dim": 256, "prediction_hidden_dim": 1024},
    "dino": {"out_dim": 2048, "head_hidden_dim": 512, "head_bottleneck_dim": 64},
}


def selfsup_views(method: str) -> ViewConfig:
    if method == "simclr":  # CIFAR recipe: no blur on 32-pixel images (SimCLR App. B.9)
        return ViewConfig.simclr(image_size=SIZE, blur_prob=(0.0, 0.0))
    if method == "byol":
        return ViewConfig.byol(image_size=SIZE)
    return ViewConfig.dino(image_size=SIZE, num_local_views=LOCAL_VIEWS, local_size=LOCAL_SIZE)


# ----------------------------------------------------------------------------- selfsup side
class SelfsupSide:
    def __init__(self, method: str, images: Tensor, info, batch: int, convolution: str = "auto",
                 bf16: bool = False) -> None:
        torch.manual_seed(0)
        backbone = build_backbone("resnet18", in_channels=1, small_stem=True)
        self.method = build_method(method, backbone, METHOD_ARGS[method]).to(memory_format=torch.channels_last)
        self.bf16 = bf16
        if convolution != "direct":  # what `selfsup train` does on CPU (cpu.convolution=auto)
            use_winograd(self.method, strict=True, autotune=convolution == "auto")
        self.optimizer = torch.optim.SGD([p for p in self.method.parameters() if p.requires_grad], lr=LR,
                                         momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        self.augment = BatchedMultiViewTransform(selfsup_views(method), info)
        self.dataset = TensorImageDataset(images, None, info)
        self.batch = batch
        self.step_count = 0

    def batches(self, workers: int = 0) -> Iterator[List[Tensor]]:
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=self.batch, shuffle=True, drop_last=True)
        for images, _ in loader:
            yield self.augment(images)

    def step(self, views: List[Tensor]) -> None:
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):  # trainer.precision=bf16-mixed
            out = self.method(views)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.method.on_before_optimizer_step(Progress(self.step_count, 1000))
        self.optimizer.step()
        self.step_count += 1
        self.method.on_step_end(out, Progress(self.step_count, 1000))


# ----------------------------------------------------------------------------- lightly side
def lightly_resnet18() -> nn.Module:
    """torchvision's ResNet-18 with the small-image stem, as lightly's CIFAR examples build it."""
    net = torchvision.models.resnet18()
    net.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


class PILDataset(torch.utils.data.Dataset):
    """Fashion-MNIST as PIL images through a lightly transform (how lightly's examples feed data)."""

    def __init__(self, images: Tensor, transform: Callable) -> None:
        self.images = images.numpy()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i, 0], mode="L"))


class LightlySide:
    def __init__(self, method: str, images: Tensor, info, batch: int, bf16: bool = False) -> None:
        from lightly import loss as lloss
        from lightly.models import modules, utils
        from lightly import transforms as lt
        from lightly.utils.scheduler import cosine_schedule

        torch.manual_seed(0)
        self.method, self.batch, self.utils, self.cosine_schedule = method, batch, utils, cosine_schedule
        self.bf16 = bf16
        gray = {"mean": list(info.mean), "std": list(info.std)}
        self.backbone = lightly_resnet18()
        args = METHOD_ARGS[method]
        if method == "simclr":
            self.transform = lt.SimCLRTransform(input_size=SIZE, gaussian_blur=0.0, normalize=gray)
            self.head = modules.SimCLRProjectionHead(512, args["projection_hidden_dim"], args["projection_dim"])
            self.criterion = lloss.NTXentLoss(temperature=args["temperature"])
            params = list(self.backbone.parameters()) + list(self.head.parameters())
        elif method == "byol":
            self.transform = lt.BYOLTransform(
                view_1_transform=lt.BYOLView1Transform(input_size=SIZE, normalize=gray),
                view_2_transform=lt.BYOLView2Transform(input_size=SIZE, normalize=gray))
            self.head = modules.BYOLProjectionHead(512, args["projection_hidden_dim"], args["projection_dim"])
            self.predictor = modules.BYOLPredictionHead(args["projection_dim"], args["prediction_hidden_dim"],
                                                        args["projection_dim"])
            self.target_backbone, self.target_head = copy.deepcopy(self.backbone), copy.deepcopy(self.head)
            utils.deactivate_requires_grad(self.target_backbone)
            utils.deactivate_requires_grad(self.target_head)
            self.criterion = lloss.NegativeCosineSimilarity()
            params = [*self.backbone.parameters(), *self.head.parameters(), *self.predictor.parameters()]
        else:
            self.transform = lt.DINOTransform(global_crop_size=SIZE, local_crop_size=LOCAL_SIZE,
                                              n_local_views=LOCAL_VIEWS, normalize=gray)
            sizes = (512, args["head_hidden_dim"], args["head_bottleneck_dim"], args["out_dim"])
            self.head = modules.DINOProjectionHead(*sizes, freeze_last_layer=1)
            # A weight-normalised layer cannot be deep-copied: the teacher head is built, as in
            # lightly's DINO example, and given the student's weights.
            self.target_backbone, self.target_head = copy.deepcopy(self.backbone), modules.DINOProjectionHead(*sizes)
            self.target_head.load_state_dict(self.head.state_dict())
            utils.deactivate_requires_grad(self.target_backbone)
            utils.deactivate_requires_grad(self.target_head)
            self.criterion = lloss.DINOLoss(output_dim=args["out_dim"], warmup_teacher_temp_epochs=5)
            params = [*self.backbone.parameters(), *self.head.parameters()]
        self.optimizer = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        self.dataset = PILDataset(images, self.transform)
        self.step_count = 0

    def batches(self, workers: int = 0) -> Iterator[List[Tensor]]:
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=self.batch, shuffle=True, drop_last=True,
                                             num_workers=workers, persistent_workers=False)
        for views in loader:
            yield views

    def step(self, views: List[Tensor]) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):  # Lightning's bf16-mixed does this
            loss = self.loss(views)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.method == "dino":
            self.head.cancel_last_layer_gradients(current_epoch=0)
        self.optimizer.step()
        self.step_count += 1

    def loss(self, views: List[Tensor]) -> Tensor:
        momentum = self.cosine_schedule(self.step_count, 1000, 0.996, 1.0)
        if self.method == "simclr":
            z0, z1 = self.head(self.backbone(views[0])), self.head(self.backbone(views[1]))
            loss = self.criterion(z0, z1)
        elif self.method == "byol":
            self.utils.update_momentum(self.backbone, self.target_backbone, m=momentum)
            self.utils.update_momentum(self.head, self.target_head, m=momentum)
            p0, p1 = (self.predictor(self.head(self.backbone(v))) for v in views[:2])
            with torch.no_grad():
                t0, t1 = (self.target_head(self.target_backbone(v)) for v in views[:2])
            loss = 0.5 * (self.criterion(p0, t1) + self.criterion(p1, t0))
        else:
            self.utils.update_momentum(self.backbone, self.target_backbone, m=momentum)
            self.utils.update_momentum(self.head, self.target_head, m=momentum)
            with torch.no_grad():
                teacher = [self.target_head(self.target_backbone(v)) for v in views[:2]]
            student = [self.head(self.backbone(v)) for v in views]
            loss = self.criterion(teacher, student, epoch=0)
        return loss


# ----------------------------------------------------------------------------- timing
def time_model(side, steps: int, warmup: int) -> List[float]:
    """Seconds of each timed model step (views fixed in memory)."""
    views = next(side.batches())
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        side.step(views)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def time_full(side, steps: int, warmup: int, workers: int) -> Dict[str, object]:
    times, waits = [], []
    batches = side.batches(workers)
    for i in range(warmup + steps):
        start = time.perf_counter()
        views = next(batches)
        got = time.perf_counter()
        side.step(views)
        if i >= warmup:
            times.append(time.perf_counter() - start)
            waits.append(got - start)
    del batches  # shuts the loader's workers down before the other side runs
    return {"img_per_s": side.batch / statistics.median(times), "data_wait_share": sum(waits) / sum(times),
            "step_s": times, "wait_s": waits}


NORMAL_ALLOCATOR = {"selfsup": "tuned", "lightly": "system"}  # what each side's own usage gets
NORMAL_CONVOLUTION = {"selfsup": "auto", "lightly": "direct"}
SIDES = ("selfsup", "lightly")
DIRECT_CONTROL = "selfsup/tuned/direct-convolution"
WINOGRAD_CONTROL = "selfsup/tuned/winograd-convolution"


def measure(name: str, method: str, allocator: str, convolution: str, args: argparse.Namespace) -> Dict[str, object]:
    """One side's model and full timings, in this (fresh) process: every step's seconds and the medians."""
    state = tune_cpu_allocator() if allocator == "tuned" else "system"
    torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist", "train", args.data_dir)
    images = torch.stack([data[i][0] for i in range(min(args.subset, len(data)))])
    bf16 = args.precision == "bf16"
    if name == "selfsup":
        side = SelfsupSide(method, images, data.info, args.batch_size, convolution, bf16)
    else:
        side = LightlySide(method, images, data.info, args.batch_size, bf16)
    model_steps = time_model(side, args.steps, args.warmup)
    workers = [0] if name == "selfsup" else args.lightly_workers
    fulls = {w: time_full(side, args.steps, args.warmup, w) for w in workers}
    best = max(fulls, key=lambda w: fulls[w]["img_per_s"])
    model = args.batch_size / statistics.median(model_steps)
    print(f"[{method}] {name} ({allocator} allocator, {convolution} convolution, {args.precision}): model "
          f"{model:.1f} img/s, full {fulls[best]['img_per_s']:.1f} img/s ({best} workers, data wait "
          f"{100 * fulls[best]['data_wait_share']:.1f} %)", file=sys.stderr, flush=True)
    return {"model_img_per_s": model, "full_img_per_s": fulls[best]["img_per_s"],
            "data_wait_share": fulls[best]["data_wait_share"], "workers": best, "allocator": state,
            "convolution": convolution, "precision": args.precision,
            "autotune": AUTOTUNER.summary() if name == "selfsup" and convolution == "auto" else None,
            "model_step_s": [round(t, 5) for t in model_steps],
            "full_step_s": [round(t, 5) for t in fulls[best]["step_s"]],
            "full_wait_s": [round(t, 5) for t in fulls[best]["wait_s"]]}


def measure_in_child(name: str, method: str, allocator: str, convolution: str,
                     args: argparse.Namespace) -> Dict[str, object]:
    """``measure`` in a fresh interpreter, given the options a measurement reads."""
    cmd = [sys.executable, os.path.abspath(__file__), "--measure", name, method, allocator, convolution, "--sides", name,
           "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--subset", str(args.subset), "--precision", args.precision,
           "--lightly-workers", *map(str, args.lightly_workers)]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(method: str, args: argparse.Namespace) -> Dict[str, object]:
    # (run key, side, allocator, convolution); the keys of normal usage are "side/allocator".
    plan = [(f"{name}/{NORMAL_ALLOCATOR[name]}", name, NORMAL_ALLOCATOR[name], NORMAL_CONVOLUTION[name])
            for name in args.sides]
    if args.allocator_controls:
        plan += [("selfsup/system", "selfsup", "system", "auto"), ("lightly/tuned", "lightly", "tuned", "direct")]
    if args.convolution_controls:
        plan += [(DIRECT_CONTROL, "selfsup", "tuned", "direct"), (WINOGRAD_CONTROL, "selfsup", "tuned", "winograd")]
    plan = [entry for entry in plan if entry[1] in args.sides]
    runs: Dict[str, List[Dict[str, object]]] = {key: [] for key, *_ in plan}
    for _ in range(args.rounds):  # selfsup, lightly, (controls), selfsup, lightly, …: each in a fresh process
        for key, name, alloc, convolution in plan:
            runs[key].append(measure_in_child(name, method, alloc, convolution, args))

    def summary(key: str) -> Dict[str, object]:
        model, full = rate(pooled(runs[key], "model_step_s"), args.batch_size), \
            rate(pooled(runs[key], "full_step_s"), args.batch_size)
        waits, steps = pooled(runs[key], "full_wait_s"), pooled(runs[key], "full_step_s")
        return {"model_img_per_s": model["median"], "full_img_per_s": full["median"],
                "model_spread": [model["min"], model["max"]], "full_spread": [full["min"], full["max"]],
                "data_wait_share": round(sum(waits) / sum(steps), 3), "steps": full["steps"]}

    def ratio(ours: Dict[str, float], theirs: Dict[str, float], kind: str) -> float:
        return round(ours[f"{kind}_img_per_s"] / theirs[f"{kind}_img_per_s"], 2)

    result: Dict[str, object] = {name: summary(f"{name}/{NORMAL_ALLOCATOR[name]}") for name in args.sides}
    if "lightly" not in args.sides:
        for key in runs:
            if key != "selfsup/tuned":
                result[key] = summary(key)
        result["runs"] = runs
        return result
    result["ratio_model"] = ratio(result["selfsup"], result["lightly"], "model")
    result["ratio_full"] = ratio(result["selfsup"], result["lightly"], "full")
    if args.allocator_controls:
        ours_system, theirs_tuned = summary("selfsup/system"), summary("lightly/tuned")
        result["controls"] = {
            "selfsup_system_allocator": ours_system, "lightly_tuned_allocator": theirs_tuned,
            "ratio_full_both_system": ratio(ours_system, result["lightly"], "full"),
            "ratio_full_both_tuned": ratio(result["selfsup"], theirs_tuned, "full"),
        }
    if args.convolution_controls:
        direct, forced = summary(DIRECT_CONTROL), summary(WINOGRAD_CONTROL)
        result["convolution_control"] = {"selfsup_direct_convolution": direct,
                                         "ratio_full_direct_convolution": ratio(direct, result["lightly"], "full"),
                                         "selfsup_winograd_convolution": forced,
                                         "ratio_full_winograd_convolution": ratio(forced, result["lightly"], "full")}
    result["runs"] = runs
    return result


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["simclr", "byol", "dino"], choices=sorted(METHOD_ARGS))
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=MIN_STEPS, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=MIN_WARMUP, help="untimed steps before them")
    p.add_argument("--rounds", type=int, default=MIN_ROUNDS, help="alternations selfsup → lightly per method")
    p.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES),
                   help="which sides to time (selfsup alone needs no lightly)")
    p.add_argument("--precision", choices=["32", "bf16"], default="32",
                   help="both sides in float32, or both under bf16 autocast (CPUs with native bf16)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--lightly-workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers tried for lightly")
    p.add_argument("--allocator-controls", action="store_true",
                   help="also run selfsup on the system allocator and lightly on the tuned one")
    p.add_argument("--convolution-controls", action="store_true",
                   help="also run selfsup with PyTorch's direct convolutions and with Winograd forced")
    p.add_argument("--subset", type=int, default=20000, help="training images loaded (enough for the steps)")
    p.add_argument("--data-dir")
    p.add_argument("--output", help="also write the JSON here")
    p.add_argument("--measure", nargs=4, metavar=("SIDE", "METHOD", "ALLOCATOR", "CONVOLUTION"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    lightly_version = None
    if "lightly" in args.sides:
        try:
            import lightly

            lightly_version = lightly.__version__
        except ImportError:
            print("vs_lightly: lightly is not installed, so its side cannot run: pip install -e '.[bench]' "
                  "(or pip install lightly); --sides selfsup times selfsup alone", file=sys.stderr)
            return 2
    if args.measure:  # a child: one side, one method, one allocator and convolution setting
        name, method, allocator, convolution = args.measure
        print(json.dumps(measure(name, method, allocator, convolution, args)))
        return 0
    torch.set_num_threads(args.threads)
    machine = machine_info(args.threads)
    print(f"machine: {machine['line']}", file=sys.stderr, flush=True)
    result = {
        "command": "python benchmarks/vs_lightly.py " + " ".join(argv),
        "machine": machine["line"], "machine_info": machine, "threads": args.threads,
        "torch": torch.__version__, "lightly": lightly_version, "batch_size": args.batch_size,
        "image_size": SIZE, "backbone": "resnet18, small-image stem, 1 input channel",
        "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds, "precision": args.precision,
        "allocators": dict(NORMAL_ALLOCATOR), "convolutions": dict(NORMAL_CONVOLUTION),
        "methods": {m: compare(m, args) for m in args.methods},
    }
    text = json.dumps(result, indent=2)
    print(text)
    for name, row in result["methods"].items():  # the figures, with their spread
        for side in args.sides:
            low, high = row[side]["full_spread"]
            full = fmt({"median": row[side]["full_img_per_s"], "min": low, "max": high})
            print(f"{name} {side}: full step {full} img/s, median (min–max)", file=sys.stderr)
    if args.output:
        atomic_write_text(args.output, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
