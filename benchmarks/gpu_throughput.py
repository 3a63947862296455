"""selfsup's training step on a GPU, beside the hardware ceiling and a plain PyTorch step (issue 18).

One sub-command per measurement, each writing (and re-writing after every row, so that a timeout
keeps what was measured) one JSON file; ``benchmarks/gpu_suite.sh`` runs them all under timeouts
and ``benchmarks/gpu_section.py`` renders the merged JSON as a BENCHMARKS.md section.

    python benchmarks/gpu_throughput.py machine --output m.json
    python benchmarks/gpu_throughput.py models --config simclr-resnet50 [--compile] --output r.json
    python benchmarks/gpu_throughput.py default-job --data-dir /path/to/fashion-mnist --output d.json
    python benchmarks/gpu_throughput.py write-jpegs --dir /tmp/jpegs --images 20000
    python benchmarks/gpu_throughput.py folder --dir /tmp/jpegs --output f.json
    python benchmarks/gpu_throughput.py decode --dir /tmp/jpegs          # PIL vs torchvision.io, per image, 1 thread

Rows of ``models`` (bf16 autocast, channels_last for ResNets, 224-px global views, batch 256):
  * ceiling:     the backbone's forward + backward over all the step's views, nothing else;
  * plain:       a plain PyTorch eager SimCLR step (torchvision ResNet-50, MLP head, NT-Xent, SGD), views ready;
  * views-ready: selfsup's method step (forward, loss, backward, optimizer, momentum hooks), views ready;
  * full:        uint8 256-px images in GPU memory -> batched views (on a side stream, as the trainer
                 makes them) -> step;
  * full-split:  uint8 crops in GPU memory (what the folder loader delivers) -> colour ops -> step;
  * full-serial: as ``full`` but the views made on the default stream before the step (the old way).
Every timing: ``--warmup`` untimed steps, then ``--steps`` steps timed by CUDA events between step
starts (CPU clock off the GPU); median, quartiles, min and max, in images per second.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.config import OptimConfig
from selfsup.data import DatasetInfo, FolderDataset, ViewDataset
from selfsup.data.decode import DecodedFolder, read_image
from selfsup.data.folder import IMAGENET_MEAN, IMAGENET_STD
from selfsup.engine.compile import CompiledForward
from selfsup.engine.optim import build_optimizer, split_decay_groups
from selfsup.engine.overlap import ViewStream
from selfsup.methods import METHODS, DataSpec, Progress, build_backbone_for, build_method
from selfsup.transforms import BatchedMultiViewTransform, MultiViewTransform
from selfsup.transforms.split_views import CropFlipViews, PhotometricViews

# (method, backbone, backbone args, method args, optimizer): the configurations of issue 18.
CONFIGS = {
    "simclr-resnet50": ("simclr", "resnet50", {}, {}, "lars"),
    "byol-resnet50": ("byol", "resnet50", {}, {}, "lars"),
    "dino-resnet50": ("dino", "resnet50", {}, {}, "lars"),
    "dino-vit-small": ("dino", "vit-small", {"patch_size": 16}, {}, "adamw"),
    "ibot-vit-small": ("ibot", "vit-small", {"patch_size": 16}, {}, "adamw"),
}
# --smoke: the same code paths on a CPU in seconds.
SMOKE_BACKBONES = {"resnet50": ("resnet18", {"small_stem": True, "width": 0.125}),
                   "vit-small": ("vit-tiny", {"patch_size": 8, "image_size": 32, "depth": 1})}
SMOKE_METHOD_ARGS = {"dino": {"out_dim": 64, "head_hidden_dim": 32, "head_bottleneck_dim": 16},
                     "ibot": {"out_dim": 64, "patch_out_dim": 64, "head_hidden_dim": 32, "head_bottleneck_dim": 16},
                     "simclr": {"projection_hidden_dim": 32, "projection_dim": 16},
                     "byol": {"projection_hidden_dim": 32, "projection_dim": 16, "prediction_hidden_dim": 32}}
INFO = DatasetInfo("imagenet-like", 3, 0, 224, IMAGENET_MEAN, IMAGENET_STD)


# --------------------------------------------------------------------------- timing and output

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], Any], warmup: int, steps: int, device: torch.device) -> List[float]:
    """Seconds of each of ``steps`` calls of ``step`` after ``warmup`` untimed ones.

    On a GPU the clock is CUDA events recorded at each step's start on the default stream, so the CPU
    may queue steps ahead as in training (a host-side clock would time the launches, not the work).
    """
    for _ in range(warmup):
        step()
    sync(device)
    if device.type != "cuda":
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        return times
    events = [torch.cuda.Event(enable_timing=True) for _ in range(steps + 1)]
    for i in range(steps):
        events[i].record()
        step()
    events[-1].record()
    torch.cuda.synchronize(device)
    return [events[i].elapsed_time(events[i + 1]) / 1000 for i in range(steps)]


def rate(times: List[float], images: int) -> Dict[str, float]:
    """Images per second: median step, quartiles and extremes (a slow step is a low rate)."""
    q = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [times[0]] * 3
    return {"img_per_s": round(images / statistics.median(times), 1), "p25": round(images / q[2], 1),
            "p75": round(images / q[0], 1), "min": round(images / max(times), 1), "max": round(images / min(times), 1),
            "steps": len(times), "median_step_ms": round(1000 * statistics.median(times), 2)}


class Report:
    """One JSON file, re-written after every row."""

    def __init__(self, path: Optional[str], **fields: Any) -> None:
        self.path = Path(path) if path else None
        self.data: Dict[str, Any] = {**fields, "rows": []}

    def add(self, row: Dict[str, Any]) -> None:
        self.data["rows"].append(row)
        print(json.dumps(row), flush=True)
        self.write()

    def write(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, indent=1) + "\n")
            tmp.replace(self.path)


def guarded(report: Report, name: str, measure: Callable[[], Dict[str, Any]]) -> None:
    """Run one row; a failure (out of memory, an unsupported op) becomes a row with its one-line error."""
    try:
        report.add({"row": name, **measure()})
    except Exception as err:  # noqa: BLE001 - one row must not cost the others
        report.add({"row": name, "error": f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"})
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def autocast(device: torch.device, enabled: bool = True):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def machine() -> Dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    import torchvision

    return {"gpu": gpu, "gpu_count": torch.cuda.device_count(), "cuda": torch.version.cuda,
            "torch": torch.__version__, "torchvision": torchvision.__version__, "cpu": cpu,
            "cpu_cores": os.cpu_count(), "python": platform.python_version(),
            "line": f"{gpu}, torch {torch.__version__} (CUDA {torch.version.cuda}), {os.cpu_count()} CPU cores ({cpu})"}


# --------------------------------------------------------------------------- model rows

def views_config(method: str, size: int, local_size: Optional[int]):
    overrides = {"image_size": size}
    if local_size is not None:
        overrides["local_size"] = local_size
    return METHODS.get(method).default_views(**overrides)


def uint8_images(batch: int, side: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, side, side), generator=g, dtype=torch.uint8).to(device)


class SelfSupStep:
    """selfsup's step as the Lightning module runs it: forward (maybe compiled), backward, optimizer, hooks."""

    def __init__(self, method: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                 channels_last: bool, compile_setting: Any = False) -> None:
        self.method, self.optimizer, self.device, self.channels_last = method, optimizer, device, channels_last
        self.forward = CompiledForward(method, compile_setting)
        self.step_index = 0

    def __call__(self, views: List[torch.Tensor]) -> None:
        if self.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        progress = Progress(step=self.step_index, total_steps=10_000)
        with autocast(self.device):
            output = self.forward(views, None)
        self.optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        self.method.on_before_optimizer_step(progress)
        self.optimizer.step()
        self.method.on_step_end(output, progress)
        self.step_index += 1


def build_selfsup(config: str, args: argparse.Namespace, device: torch.device):
    method_name, backbone_name, backbone_args, method_args, optimizer_name = CONFIGS[config]
    if args.smoke:
        backbone_name, backbone_args = SMOKE_BACKBONES[backbone_name]
        method_args = SMOKE_METHOD_ARGS.get(method_name, {})
    torch.manual_seed(0)
    backbone = build_backbone_for(method_name, backbone_name, backbone_args, 3, method_args)
    method = build_method(method_name, backbone, method_args, DataSpec(INFO, 0)).to(device)
    channels_last = not backbone_name.startswith("vit")
    if channels_last:
        method.to(memory_format=torch.channels_last)
    method.train()
    decay, no_decay = split_decay_groups(list(method.named_parameters()), True)
    optimizer = build_optimizer(OptimConfig(name=optimizer_name), [{"params": decay},
                                                                  {"params": no_decay, "weight_decay": 0.0}],
                                args.batch_size)
    return method_name, method, optimizer, channels_last


class PlainSimCLR(nn.Module):
    """A SimCLR step written the plain way: torchvision ResNet, MLP head, NT-Xent (Chen et al. 2020)."""

    def __init__(self, smoke: bool) -> None:
        super().__init__()
        import torchvision

        self.backbone = (torchvision.models.resnet18 if smoke else torchvision.models.resnet50)(weights=None)
        width = self.backbone.fc.in_features
        self.backbone.fc = nn.Identity()
        self.head = nn.Sequential(nn.Linear(width, 2048), nn.BatchNorm1d(2048), nn.ReLU(inplace=True),
                                  nn.Linear(2048, 128))

    def loss(self, a: torch.Tensor, b: torch.Tensor, targets: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
        """NT-Xent: view ``i``'s positive is ``targets[i]`` (its other view), every other view a negative."""
        z = F.normalize(self.head(self.backbone(torch.cat([a, b]))).float(), dim=1)
        logits = z @ z.t() / temperature
        logits.fill_diagonal_(float("-inf"))
        return F.cross_entropy(logits, targets)


def cmd_models(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    batch = args.batch_size
    report = Report(args.output, config=args.config, batch_size=batch, image_size=args.image_size,
                    compile=args.compile, device=str(device), precision="bf16-mixed", machine=machine())
    method_name, method, optimizer, channels_last = build_selfsup(args.config, args, device)
    cfg = views_config(method_name, args.image_size, args.local_size)
    augment = BatchedMultiViewTransform(cfg, INFO).to(device)
    colour = PhotometricViews(cfg, INFO).to(device)
    images = uint8_images(batch, args.source_size, device)
    ready = [v.contiguous() for v in augment(images)]  # one batch of real views, held on the device
    crops = [uint8_images(batch, v.shape[-1], device, seed=k) for k, v in enumerate(ready)]
    report.data["views"] = [list(v.shape) for v in ready]
    compile_setting = args.compile_mode if args.compile else False
    step = SelfSupStep(method, optimizer, device, channels_last, compile_setting)
    suffix = f"+compile({args.compile_mode})" if args.compile else ""
    stream = ViewStream()

    if args.compile:  # the first calls compile: time them apart
        start = time.perf_counter()
        guarded(report, "compile-time", lambda: (step(ready), sync(device),
                                                {"seconds": round(time.perf_counter() - start, 1),
                                                 "compiled": step.forward._proven})[-1])
        if args.only_compile:  # filling the Inductor cache for a later run
            return 0
    else:
        def ceiling() -> Dict[str, Any]:
            backbone = method.backbone
            groups: Dict[int, List[torch.Tensor]] = {}
            for v in ready:
                groups.setdefault(v.shape[-1], []).append(v)
            inputs = [torch.cat(g) for g in groups.values()]
            if channels_last:
                inputs = [x.contiguous(memory_format=torch.channels_last) for x in inputs]

            def run() -> None:
                with autocast(device):
                    loss = sum(backbone(x).float().mean() for x in inputs)
                loss.backward()
                backbone.zero_grad(set_to_none=True)
            return rate(time_steps(run, args.warmup, args.steps, device), batch)

        guarded(report, "ceiling", ceiling)
        if method_name == "simclr":
            def plain() -> Dict[str, Any]:
                model = PlainSimCLR(args.smoke).to(device).to(memory_format=torch.channels_last)
                sgd = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9, weight_decay=1e-6)
                a, b = (v.contiguous(memory_format=torch.channels_last) for v in ready[:2])
                targets = torch.cat([torch.arange(batch, 2 * batch), torch.arange(0, batch)]).to(device)

                def run() -> None:
                    with autocast(device):
                        loss = model.loss(a, b, targets)
                    sgd.zero_grad(set_to_none=True)
                    loss.backward()
                    sgd.step()
                result = rate(time_steps(run, args.warmup, args.steps, device), batch)
                del model, sgd
                return result
            guarded(report, "plain", plain)
    guarded(report, "views-ready" + suffix, lambda: rate(time_steps(lambda: step(ready), args.warmup, args.steps,
                                                                    device), batch))
    guarded(report, "full" + suffix, lambda: rate(time_steps(
        lambda: step(list(stream.run(lambda: augment(images), device))), args.warmup, args.steps, device), batch))
    guarded(report, "full-split" + suffix, lambda: rate(time_steps(
        lambda: step(list(stream.run(lambda: colour(crops), device))), args.warmup, args.steps, device), batch))
    if not args.compile and method_name == "simclr":
        guarded(report, "full-serial", lambda: rate(time_steps(lambda: step(augment(images)), args.warmup,
                                                               args.steps, device), batch))
        guarded(report, "views-only", lambda: rate(time_steps(lambda: augment(images), args.warmup, args.steps,
                                                              device), batch))
    return 0


# --------------------------------------------------------------------------- the default job

class StepClock:
    """A Lightning callback: wall time of training steps after ``warmup``, and host syncs of a few steps.

    Steps/s is ``(n - warmup) / (end - start)`` with the GPU synchronised at the end, so queued work
    counts. Host syncs are counted with ``torch.cuda.set_sync_debug_mode("warn")`` over ``probe``
    steps (PyTorch warns at each synchronising CUDA call) and located by the warning's Python frame.
    """

    def __init__(self, warmup: int, probe: int = 5) -> None:
        self.warmup, self.probe = warmup, min(probe, warmup - warmup // 2 - 1)  # probes stay in the warm-up
        self.starts: List[float] = []
        self.end = 0.0
        self.syncs: Dict[str, int] = {}
        self.probed = 0
        self._catch: Any = None

    def callback(self):
        from lightning.pytorch.callbacks import Callback

        clock = self

        class _Clock(Callback):
            # A probe runs from the end of one step to the end of the next, so that it also sees the
            # next batch's copy and views (made between the two, in transfer_batch_to_device).
            def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
                clock.starts.append(time.perf_counter())

            def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
                if clock._catch is not None:
                    torch.cuda.set_sync_debug_mode("default")
                    for record in clock._records:
                        if "synchroniz" in str(record.message):
                            where = f"{Path(record.filename).name}:{record.lineno}"
                            clock.syncs[where] = clock.syncs.get(where, 0) + 1
                    clock._catch.__exit__(None, None, None)
                    clock._catch = None
                    clock.probed += 1
                first = clock.warmup // 2
                if torch.cuda.is_available() and first <= len(clock.starts) < first + clock.probe:
                    clock._catch = warnings.catch_warnings(record=True)
                    clock._records = clock._catch.__enter__()
                    warnings.simplefilter("always")
                    torch.cuda.set_sync_debug_mode("warn")

            def on_train_end(self, trainer, module) -> None:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                clock.end = time.perf_counter()

        return _Clock()

    def result(self) -> Dict[str, Any]:
        timed = self.starts[self.warmup:]
        gaps = [b - a for a, b in zip(timed, timed[1:] + [self.end])]
        out = {"steps_per_s": round(len(timed) / (self.end - timed[0]), 1), "timed_steps": len(timed),
               "median_step_ms": round(1000 * statistics.median(gaps), 2),
               "p25_step_ms": round(1000 * statistics.quantiles(gaps, n=4, method="inclusive")[0], 2),
               "p75_step_ms": round(1000 * statistics.quantiles(gaps, n=4, method="inclusive")[2], 2)}
        if self.probed:
            out["host_syncs_per_step"] = round(sum(self.syncs.values()) / self.probed, 2)
            out["sync_sites"] = dict(sorted(self.syncs.items(), key=lambda kv: -kv[1])[:8])
        return out


class SyncEveryStep:
    """The old per-step host syncs, put back for comparison: the loss read as a Python float each step."""

    def callback(self):
        from lightning.pytorch.callbacks import Callback

        class _Sync(Callback):
            def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
                float(outputs["loss"])
        return _Sync()


DEFAULT_JOB_VARIANTS = {
    "float32": [],
    "bf16-mixed": ["trainer.precision=bf16-mixed"],
    "float32+sync-each-step": [],
    "compile": ["trainer.compile=true"],
    "compile-reduce-overhead": ["trainer.compile=reduce-overhead"],
}


def cmd_default_job(args: argparse.Namespace) -> int:
    from selfsup.config import make_config, parse_override
    from selfsup.engine import train

    report = Report(args.output, job="selfsup train (defaults: simclr, resnet18-tiny, fashion-mnist, batch 256)",
                    machine=machine())
    variants = args.variants.split(",")
    for name in variants:
        def measure() -> Dict[str, Any]:
            clock = StepClock(args.warmup)
            settings = [f"output_dir={tempfile.mkdtemp(prefix='selfsup-default-job-')}", "epochs=1",
                        f"trainer.limit_train_batches={args.warmup + args.steps}", "monitor.knn_every=0",
                        *DEFAULT_JOB_VARIANTS[name]]
            if args.data_dir:
                settings.append(f"data_dir={args.data_dir}")
            if args.smoke:
                settings += ["batch_size=16", "num_workers=0", "trainer.accelerator=cpu"]
            if args.accelerator:
                settings.append(f"trainer.accelerator={args.accelerator}")
            config = make_config(overrides=[parse_override(s) for s in settings])
            callbacks = [clock.callback()] + ([SyncEveryStep().callback()] if "sync-each-step" in name else [])
            start = time.perf_counter()
            result = train(config, callbacks=callbacks)
            return {"variant": name, "settings": DEFAULT_JOB_VARIANTS[name], "steps": result.steps,
                    "wall_s": round(time.perf_counter() - start, 1), **clock.result()}
        guarded(report, name, measure)
    return 0


# --------------------------------------------------------------------------- image folders

def _write_jpegs(task) -> int:
    """Worker: JPEGs ``first..last`` of ImageNet-like sizes and photo-like content (smooth + grain)."""
    import numpy as np
    from PIL import Image

    folder, first, last, small = task
    written = 0
    for i in range(first, last):
        rng = np.random.default_rng(i)
        if small:
            w, h = int(rng.integers(48, 80)), int(rng.integers(40, 64))
        else:  # ImageNet's photos: mostly 500 x 375 / 375 x 500 / 500 x 333, some larger
            w, h = [(500, 375), (375, 500), (500, 333), (500, 400), (640, 480)][int(rng.integers(0, 5))]
        coarse = rng.integers(0, 256, (h // 16 + 2, w // 16 + 2, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.int16)
        grain = rng.integers(-12, 13, (h, w, 1), dtype=np.int16)
        pixels = np.clip(smooth + grain, 0, 255).astype(np.uint8)
        partial = Path(folder) / f".{i:06d}.jpg"  # hidden (FolderDataset skips it) until complete
        Image.fromarray(pixels).save(partial, quality=90)
        partial.rename(Path(folder) / f"{i:06d}.jpg")
        written += 1
    return written


def cmd_write_jpegs(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    existing = len(list(folder.glob("*.jpg")))
    if existing >= args.images:
        print(f"{existing} JPEGs already in {folder}")
        return 0
    start = time.perf_counter()
    processes = args.processes or os.cpu_count() or 1
    chunk = max(1, args.images // (processes * 8))
    tasks = [(str(folder), a, min(a + chunk, args.images), args.smoke) for a in range(0, args.images, chunk)]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        written = sum(pool.imap_unordered(_write_jpegs, tasks))
    seconds = time.perf_counter() - start
    print(f"wrote {written} JPEGs to {folder} in {seconds:.1f} s with {processes} processes")
    return 0


class _Files(torch.utils.data.Dataset):
    """Decode only: the file's pixels, nothing else (``decoder`` 'torchvision' or 'pil')."""

    def __init__(self, files: List[Path], decoder: str) -> None:
        self.files, self.decoder = files, decoder

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> int:
        if self.decoder == "pil":
            from PIL import Image
            from torchvision.transforms.v2.functional import pil_to_tensor

            with Image.open(self.files[i]) as image:
                return pil_to_tensor(image.convert("RGB")).shape[1]
        return read_image(self.files[i], gray=False).shape[1]


def _count(batch: List[Any]) -> int:
    return len(batch)


def shared_memory_workers(workers: int, batch_bytes: int, prefetch: int = 2) -> int:
    """Workers whose batches in flight fit in half of /dev/shm (containers often have little of it):
    each worker keeps up to ``prefetch`` batches there."""
    try:
        free = shutil.disk_usage("/dev/shm").free
    except OSError:
        return workers
    return max(1, min(workers, int(0.5 * free) // max(1, prefetch * batch_bytes)))


def loader_rate(dataset, batch: int, workers: int, waves: int = 2, collate=None, pin: bool = False,
                item_bytes: int = 0) -> Dict[str, Any]:
    """Images/s of a DataLoader alone, over ``waves`` x ``workers`` batches after a first wave.

    Each worker makes whole batches, so batches arrive in waves of ``workers``: the first wave
    (worker start-up, all workers finishing together) is the warm-up, and the rate is taken over
    whole waves; the spread is the slowest and fastest wave.
    """
    asked = workers
    workers = shared_memory_workers(workers, batch * item_bytes) if workers else 0
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True,
                                         num_workers=workers, collate_fn=collate, pin_memory=pin,
                                         persistent_workers=False, prefetch_factor=2 if workers else None)
    per_wave = max(1, workers)
    if len(loader) < (waves + 1) * per_wave:
        raise ValueError(f"{len(loader)} batches; the measurement needs {(waves + 1) * per_wave}: write more images")
    iterator = iter(loader)
    for _ in range(per_wave):
        next(iterator)
    wave_times = []
    for _ in range(waves):
        start = time.perf_counter()
        for _ in range(per_wave):
            next(iterator)
        wave_times.append(time.perf_counter() - start)
    del iterator
    images = per_wave * batch
    out = {"img_per_s": round(images * waves / sum(wave_times), 1), "min": round(images / max(wave_times), 1),
           "max": round(images / min(wave_times), 1), "batches": waves * per_wave, "workers": workers}
    if workers < asked:
        out["workers_capped_by_dev_shm"] = True
    return out


def cmd_folder(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    workers = args.workers or os.cpu_count() or 1
    report = Report(args.output, folder=args.dir, workers=workers, batch_size=args.batch_size,
                    image_size=args.image_size, machine=machine())
    folder = FolderDataset(args.dir)
    report.data["images"] = len(folder)
    files = list(folder.files)
    batch = args.batch_size
    cfg = views_config("simclr", args.image_size, None)
    guarded(report, "decode-torchvision", lambda: loader_rate(_Files(files, "torchvision"), batch, workers,
                                                              collate=_count))
    guarded(report, "decode-pil", lambda: loader_rate(_Files(files, "pil"), batch, workers, collate=_count))
    decoded = DecodedFolder(folder)
    side = args.image_size
    crop_bytes, view_bytes = 2 * 3 * side * side, 2 * 4 * 3 * side * side  # two uint8 crops / float32 views
    with contextlib.suppress(OSError):
        report.data["dev_shm_free_gb"] = round(shutil.disk_usage("/dev/shm").free / 2**30, 1)
    guarded(report, "loader-split", lambda: loader_rate(ViewDataset(decoded, CropFlipViews(cfg, folder.info)), batch,
                                                        workers, pin=device.type == "cuda", item_bytes=crop_bytes))
    guarded(report, "loader-per-image", lambda: loader_rate(ViewDataset(decoded, MultiViewTransform(cfg, folder.info)),
                                                            batch, workers, waves=1, item_bytes=view_bytes))

    def full() -> Dict[str, Any]:
        _, method, optimizer, channels_last = build_selfsup("simclr-resnet50", args, device)
        step = SelfSupStep(method, optimizer, device, channels_last)
        colour = PhotometricViews(cfg, folder.info).to(device)
        stream = ViewStream()
        full_workers = shared_memory_workers(workers, batch * crop_bytes) if workers else 0
        loader = torch.utils.data.DataLoader(ViewDataset(decoded, CropFlipViews(cfg, folder.info)), batch_size=batch,
                                             shuffle=True, drop_last=True, num_workers=full_workers,
                                             pin_memory=device.type == "cuda", prefetch_factor=2 if workers else None)
        iterator = iter(loader)
        waits: List[float] = []

        def run() -> None:
            start = time.perf_counter()
            crops, _, _ = next(iterator)
            waits.append(time.perf_counter() - start)
            step(list(stream.run(lambda: colour([c.to(device, non_blocking=True) for c in crops]), device)))

        warmup, steps = max(args.warmup, full_workers), max(args.steps, 2 * full_workers)  # whole waves of batches
        times = time_steps(run, warmup, steps, device)
        wait_share = sum(waits[warmup:]) / sum(times)
        return {**rate(times, batch), "workers": full_workers, "data_wait_share": round(min(1.0, wait_share), 3)}

    guarded(report, "full-split", full)
    rows = {r["row"]: r for r in report.data["rows"] if "img_per_s" in r}
    stages = {name: rows[name]["img_per_s"] for name in ("decode-torchvision", "loader-split") if name in rows}
    if "full-split" in rows:
        stages["step"] = rows["full-split"]["img_per_s"]
    if stages:
        limit = min(stages, key=stages.get)
        report.data["limit"] = limit
        if "loader-split" in rows:
            per_core = rows["loader-split"]["img_per_s"] / rows["loader-split"]["workers"]
            report.data["cores_for_2400_img_per_s"] = round(2400 / per_core, 1)
        report.write()
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    """Per-image decode time, PIL vs torchvision.io, one thread, the same files."""
    torch.set_num_threads(1)
    files = sorted(Path(args.dir).glob("*.jpg"))[: args.images]
    if not files:
        print(f"no JPEGs in {args.dir}", file=sys.stderr)
        return 1
    result: Dict[str, Any] = {"files": len(files)}
    for name in ("pil", "torchvision"):
        dataset = _Files(files, name)
        for i in range(min(len(files), 4)):
            dataset[i]
        times = []
        for _ in range(3):
            start = time.perf_counter()
            for i in range(len(files)):
                dataset[i]
            times.append((time.perf_counter() - start) / len(files))
        result[f"{name}_ms_per_image"] = round(1000 * statistics.median(times), 3)
    result["speedup"] = round(result["pil_ms_per_image"] / result["torchvision_ms_per_image"], 2)
    print(json.dumps(result))
    if args.output:
        Report(args.output, **result).write()
    return 0


def cmd_machine(args: argparse.Namespace) -> int:
    report = Report(args.output, **machine())
    print(json.dumps(report.data))
    report.write()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--output", help="write the JSON here")
    common.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    common.add_argument("--warmup", type=int, default=4)
    common.add_argument("--steps", type=int, default=10)
    common.add_argument("--batch-size", type=int, default=256)
    common.add_argument("--image-size", type=int, default=224)
    common.add_argument("--smoke", action="store_true", help="tiny models and images: the code paths on a CPU")
    m = sub.add_parser("models", parents=[common], help="ceiling / plain / selfsup rows of one configuration")
    m.add_argument("--config", choices=sorted(CONFIGS), required=True)
    m.add_argument("--local-size", type=int, default=None, help="local crop side (default 96/224 of --image-size)")
    m.add_argument("--source-size", type=int, default=256, help="side of the uint8 images the full rows crop")
    m.add_argument("--compile", action="store_true", help="rows with trainer.compile instead of the eager ones")
    m.add_argument("--compile-mode", default="default", help="torch.compile mode for --compile")
    m.add_argument("--only-compile", action="store_true", help="with --compile: compile, time it, stop")
    d = sub.add_parser("default-job", parents=[common], help="`selfsup train` defaults: steps/s per variant")
    d.add_argument("--data-dir", default=os.environ.get("FMNIST_DIR"))
    d.add_argument("--variants", default="float32,bf16-mixed,float32+sync-each-step")
    d.add_argument("--accelerator", default=None)
    w = sub.add_parser("write-jpegs", parents=[common], help="ImageNet-like JPEGs, written in parallel")
    w.add_argument("--dir", required=True)
    w.add_argument("--images", type=int, default=20000)
    w.add_argument("--processes", type=int, default=0, help="default: all cores")
    f = sub.add_parser("folder", parents=[common], help="decode / loader / full step on a JPEG folder")
    f.add_argument("--dir", required=True)
    f.add_argument("--workers", type=int, default=0, help="DataLoader workers (default: all cores)")
    c = sub.add_parser("decode", parents=[common], help="per-image decode time, PIL vs torchvision.io")
    c.add_argument("--dir", required=True)
    c.add_argument("--images", type=int, default=200)
    sub.add_parser("machine", parents=[common], help="the machine line")
    args = p.parse_args(argv)
    if args.smoke:
        args.batch_size = min(args.batch_size, 8)
        args.image_size = min(args.image_size, 32)
        if getattr(args, "local_size", None) is None and args.command == "models":
            args.local_size = 16
        if args.command == "models":
            args.source_size = min(args.source_size, 40)
    command = {"models": cmd_models, "default-job": cmd_default_job, "write-jpegs": cmd_write_jpegs,
               "folder": cmd_folder, "decode": cmd_decode, "machine": cmd_machine}[args.command]
    return command(args)


if __name__ == "__main__":
    sys.exit(main())
