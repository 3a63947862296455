"""``train(config)``: data → views → method → Lightning Trainer, with safe checkpoints."""

from __future__ import annotations

import dataclasses
import errno
import logging
import time
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from torch.utils.data import DataLoader, Subset

from selfsup.config import TrainConfig, _build
from selfsup.data import (SKIPPED_FILE, EpochShuffleSampler, FolderDataset, ImageDataset, LoaderGenerator, SkipLog,
                          TensorImageDataset, TransformDataset, ViewDataset, load_dataset, set_bad_image_policy)
from selfsup.data.decode import DecodedFolder
from selfsup.engine.checkpoint import AtomicCheckpointIO
from selfsup.engine.guard import DivergenceGuard
from selfsup.engine.lifecycle import check_resume_config, remove_stale_temporaries
from selfsup.engine.logs import build_loggers, check_loggers
from selfsup.engine.module import CHECKPOINT_KEY, KnnMonitorData, SelfSupervisedModule
from selfsup.engine.run_lock import RunLock, describe_output_dir_error, launched_rank
from selfsup.errors import ConfigError, DataError, SelfSupError
from selfsup.io import atomic_write_text, load_torch_file
from selfsup.ops import CpuSpeedups
from selfsup.methods import METHODS
from selfsup.transforms import MultiViewTransform, ViewConfig, eval_transform
from selfsup.transforms.split_views import CropFlipViews

log = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.ckpt"


@dataclass
class TrainResult:
    output_dir: Path
    last_checkpoint: Path
    epochs: int
    steps: int
    seconds: float
    metrics: Dict[str, float]


def resolve_views(config: TrainConfig) -> ViewConfig:
    """The method's augmentation preset with the config's ``views`` overrides applied."""
    preset = dataclasses.asdict(METHODS.get(config.method).default_views())
    preset.update(config.views)
    views = _build(ViewConfig, preset, prefix="views.")
    views.validate()
    return views


def _single_view(image: torch.Tensor) -> List[torch.Tensor]:
    """The uint8 image itself, for batches that are augmented later on the training device."""
    return [image]


def use_batched_augment(config: TrainConfig, dataset: ImageDataset) -> bool:
    """Batched augmentation needs images of one size: in-memory datasets have that."""
    if config.augment == "auto":
        return isinstance(dataset, TensorImageDataset)
    return config.augment == "batched"


def augment_mode(config: TrainConfig, dataset: ImageDataset) -> str:
    """Where the views are made: 'batched', 'split' or 'per-image' (``config.augment`` with 'auto' resolved).

    'auto' splits the views of image folders: the workers decode, crop and flip, the training
    device does the colour ops on whole batches. Per image, SimCLR's 224-px colour ops cost the
    workers more than decoding; batched they cost a fraction of a GPU step, and on one CPU thread
    the split path measured 1.8x less CPU time per image than the per-image one (25.0 vs 45.8 ms,
    decode included: ``benchmarks/split_views_cpu.py``).
    """
    if config.augment == "auto" and not isinstance(dataset, TensorImageDataset):
        return "split" if isinstance(dataset, FolderDataset) else "per-image"
    return "batched" if use_batched_augment(config, dataset) else config.augment


def build_train_loader(config: TrainConfig, dataset: ImageDataset, views: ViewConfig) -> DataLoader:
    """Batches of ``(views, labels, indices)``; with batched augmentation ``views`` is the
    single uint8 batch ``[(B, C, H, W)]`` that the module turns into views on its device; with
    split augmentation it is one uint8 crop batch per view, coloured on the device.

    Order and per-image views (or crops) are functions of (seed, epoch, index) alone
    (selfsup.data.sampling), and the loader draws nothing from the global generators, so
    ``--resume`` is exact with workers."""
    mode = augment_mode(config, dataset)
    if isinstance(dataset, FolderDataset):
        dataset = DecodedFolder(dataset)  # the same pixels, decoded by torchvision.io (selfsup.data.decode)
    if mode == "batched":
        transform: Any = _single_view
    else:
        transform = (CropFlipViews if mode == "split" else MultiViewTransform)(views, dataset.info)
    batched = mode == "batched"
    return DataLoader(
        # Batched views are drawn on the device from the (checkpointed) global stream: no per-image seeds.
        ViewDataset(dataset, transform, seed=None if batched else config.seed),
        batch_size=config.batch_size,
        sampler=EpochShuffleSampler(len(dataset), seed=config.seed),
        generator=LoaderGenerator(config.seed),  # the workers' base seed, not from the global stream
        drop_last=True,  # equal batches: BatchNorm and the contrastive denominators see B images
        num_workers=config.num_workers,
        persistent_workers=config.num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


class SamplerEpochOnResume(Callback):
    """Sets the sampler's epoch from the checkpoint when a run resumes.

    Lightning creates the first data iterator (and DataLoader workers start prefetching from it)
    while configuring optimizers, before it restores its loops and calls ``set_epoch``: without
    this the first resumed epoch would replay epoch 0's order and views.
    """

    def __init__(self, sampler: EpochShuffleSampler) -> None:
        self.sampler = sampler

    def on_load_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: Dict[str, Any]) -> None:
        progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
        self.sampler.set_epoch(progress.get("processed", checkpoint.get("epoch", -1) + 1))


def build_knn_monitor(config: TrainConfig, dataset: ImageDataset, views: ViewConfig) -> Optional[KnnMonitorData]:
    """Fixed random subsets of the labelled train and test splits, un-augmented."""
    monitor = config.monitor
    if monitor.knn_every <= 0 or dataset.info.num_classes == 0:
        return None
    try:
        test_set = load_dataset(config.eval_data or config.data, "test", config.data_dir, config.download)
    except DataError as err:
        log.warning("kNN monitor off: %s", err)
        return None
    set_bad_image_policy(test_set, config.on_bad_image, Path(config.output_dir) / SKIPPED_FILE)
    transform = eval_transform(dataset.info, views.image_size)
    generator = torch.Generator().manual_seed(config.seed)

    def subset(ds: ImageDataset, size: int) -> Subset:
        order = torch.randperm(len(ds), generator=generator)[: min(size, len(ds))]
        return Subset(TransformDataset(ds, transform), order.tolist())

    return KnnMonitorData(
        train=subset(dataset, monitor.knn_train_samples),
        test=subset(test_set, monitor.knn_test_samples),
        num_classes=dataset.info.num_classes,
    )


def read_checkpoint_config(path: str | Path) -> Dict[str, Any]:
    """The training config stored in a selfsup checkpoint."""

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint '{path}' does not exist")
    checkpoint = load_torch_file(path, "a selfsup training checkpoint")
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint:
        raise ConfigError(f"'{path}' is not a selfsup training checkpoint (no '{CHECKPOINT_KEY}' entry)")
    return checkpoint[CHECKPOINT_KEY]


class EpochCheckpoints(ModelCheckpoint):
    """``last.ckpt`` every epoch plus the ``save_top_k`` most recent epoch checkpoints
    (``trainer.keep_checkpoints``). Two changes to Lightning's ModelCheckpoint: with
    ``save_top_k=0`` it would write last.ckpt only when training ends (a kill would lose the whole
    run), and the bookkeeping of kept files is restored on resume only under the same
    ``save_top_k`` (Lightning's would index a missing k-th file); files kept under another value
    stay on disk."""

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode, every_n_epochs=self._every_n_epochs,
                                        save_top_k=self.save_top_k)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self.save_top_k == 0 and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def resume_checkpoint(output_dir: Path) -> Optional[Path]:
    """What ``--resume`` continues from: the newer of ``last.ckpt`` (every epoch end) and the
    ``hpc_ckpt_N.ckpt`` Lightning saves when SLURM signals a job before its time limit (see
    examples/slurm/train.sbatch); None when the folder holds neither."""
    found = [p for p in [output_dir / LAST_CHECKPOINT, *output_dir.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def runs_on_cpu(accelerator: str) -> bool:
    """Whether Lightning's ``accelerator`` setting trains on the CPU here."""
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()
                                    and not torch.backends.mps.is_available())


def check_precision(precision: str) -> None:
    """``trainer.precision`` against the values Lightning accepts, listed in one line."""
    try:
        from lightning.fabric.connector import _PRECISION_INPUT_STR, _PRECISION_INPUT_STR_ALIAS
    except ImportError:  # Lightning moved them: its own error will do
        return
    # 'auto' is selfsup's own: bf16 where this CPU measures it faster (selfsup.ops.precision).
    valid = ["auto", *typing.get_args(_PRECISION_INPUT_STR), *typing.get_args(_PRECISION_INPUT_STR_ALIAS)]
    if valid and str(precision) not in valid:
        raise ConfigError(f"unknown trainer.precision '{precision}'; valid choices: {', '.join(valid)}")


@dataclass
class RunPlan:
    """What :func:`prepare_run` found: the folder, and for ``--resume`` where the run restarts."""

    output_dir: Path
    last: Path
    resume: bool
    start_step: int = 0
    resume_from: Optional[Path] = None
    """The checkpoint ``--resume`` continues from (see :func:`resume_checkpoint`)."""


def checkpoint_step(path: Path) -> int:
    """The global step stored in a Lightning checkpoint (memory-mapped: the weights are not read)."""
    return int(load_torch_file(path, "a selfsup training checkpoint", mmap=True).get("global_step", 0))


def prepare_run(config: TrainConfig, resume: bool = False) -> RunPlan:
    """Every check that needs no write: settings Lightning or the method would refuse late, and
    for ``resume`` the requested config against the checkpoint's (see
    :data:`~selfsup.engine.lifecycle.RESUMABLE_KEYS`). Nothing in the output folder changes."""
    config.validate()
    output_dir = Path(config.output_dir)
    last = output_dir / LAST_CHECKPOINT
    check_precision(config.trainer.precision)
    METHODS.get(config.method).make_config(config.method_args)
    check_loggers(config.trainer.logger)
    resume_from = resume_checkpoint(output_dir) if resume else None
    if resume and resume_from is None:
        raise ConfigError(f"--resume: no checkpoint '{last}' to resume from; drop --resume to start a new run")
    if not resume and last.is_file():
        raise ConfigError(
            f"'{output_dir}' already holds a run ({LAST_CHECKPOINT}); pass --resume to continue it "
            f"or choose another --output-dir"
        )
    if not resume:
        return RunPlan(output_dir, last, resume)
    check_resume_config(read_checkpoint_config(resume_from)["config"], config, resume_from)
    return RunPlan(output_dir, last, resume, start_step=checkpoint_step(resume_from), resume_from=resume_from)


def os_error_line(output_dir: Path, err: OSError) -> str:
    """One line for an OSError that stopped training: the run folder's problem (full disk, read
    only, …) unless the error names a file elsewhere (then the error itself)."""
    in_folder = err.filename is None or Path(str(err.filename)).resolve().is_relative_to(output_dir.resolve())
    if in_folder or err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return "training stopped: " + describe_output_dir_error(output_dir, err)
    return f"training stopped: {err}"


def train(config: TrainConfig, resume: bool = False, callbacks: Sequence[Callback] = (),
          plan: Optional[RunPlan] = None) -> TrainResult:
    """Pre-train ``config.method`` and return where the checkpoints are.

    With ``resume`` the run continues from ``output_dir/last.ckpt``: same step, same learning
    rate schedule, same optimizer state and RNG streams as if it had never stopped. The run holds
    the folder's :class:`~selfsup.engine.run_lock.RunLock` throughout (rank 0 only under DDP);
    ``plan`` is :func:`prepare_run`'s result when the caller already has it.
    """
    config.validate()
    plan = plan if plan is not None else prepare_run(config, resume)
    rank_zero = launched_rank() == 0
    with RunLock(plan.output_dir, enabled=rank_zero):
        try:
            return _train_in_folder(config, plan, callbacks, rank_zero)
        except OSError as err:
            raise SelfSupError(os_error_line(plan.output_dir, err)) from err


def _train_in_folder(config: TrainConfig, plan: RunPlan, callbacks: Sequence[Callback], rank_zero: bool) -> TrainResult:
    output_dir, last, resume = plan.output_dir, plan.last, plan.resume
    if not resume and last.is_file():  # again, now that the folder is ours
        raise ConfigError(f"'{output_dir}' already holds a run ({LAST_CHECKPOINT}); pass --resume to continue it")
    if rank_zero:
        remove_stale_temporaries(output_dir)
    L.seed_everything(config.seed, workers=True, verbose=False)
    dataset = load_dataset(config.data, config.split, config.data_dir, config.download)
    set_bad_image_policy(dataset, config.on_bad_image, output_dir / SKIPPED_FILE)
    views = resolve_views(config)
    loader = build_train_loader(config, dataset, views)
    if len(loader) == 0:
        raise ConfigError(
            f"batch_size {config.batch_size} is larger than the dataset ({len(dataset)} images); use a smaller --batch-size"
        )
    module = SelfSupervisedModule(
        config, dataset.info, build_knn_monitor(config, dataset, views),
        batch_views=views if augment_mode(config, dataset) in ("batched", "split") else None,
        num_samples=len(dataset),
        split_views=augment_mode(config, dataset) == "split",
    )
    cpu_speedups = CpuSpeedups(config, module.method.backbone, views.image_size or dataset.info.image_size,
                               runs_on_cpu(config.trainer.accelerator))  # selfsup.ops: the CPU speed-ups

    keep = config.trainer.keep_checkpoints
    checkpointing = EpochCheckpoints(
        dirpath=output_dir,
        filename="epoch={epoch:03d}",
        auto_insert_metric_name=False,
        every_n_epochs=1,
        # The N most recent epochs: ranked by epoch, highest kept (Lightning needs a monitor for N > 1).
        save_top_k=keep,
        monitor="epoch" if keep > 0 else None,
        mode="max",
        save_last=True,
        # The run holds the folder (RunLock): a name that exists is this run's own file, to be
        # replaced, never a reason for Lightning's "last-v1.ckpt".
        enable_version_counter=False,
    )
    checkpoint_io = AtomicCheckpointIO()
    guard = DivergenceGuard(checkpoint_io, resumed_from=plan.resume_from,
                            sentinel_keys=tuple(f"method.{name}" for name in module.method.sentinel_buffers))
    loggers, logger_callbacks = build_loggers(config.trainer.logger, output_dir, plan.start_step, resume,
                                              rank_zero)
    try:
        run_callbacks = [guard, checkpointing, cpu_speedups, SamplerEpochOnResume(loader.sampler), *logger_callbacks]
        trainer = _lightning_trainer(config, output_dir, [*run_callbacks, *callbacks], loggers, checkpoint_io,
                                     precision=cpu_speedups.precision)  # trainer.precision, 'auto' resolved
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:  # Lightning's MisconfigurationException is a ValueError
        raise ConfigError(f"Lightning refused the trainer settings: {str(err).strip().splitlines()[0]}") from err
    if rank_zero:  # only now, with the run validated: config.yaml always describes the checkpoints
        atomic_write_text(output_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    # config.yaml is ours: the folder is expected to be non-empty. The LeafSpec notice is
    # Lightning's own use of a deprecated torch API, nothing a user can act on.
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")
    start = time.perf_counter()
    trainer.fit(module, loader, ckpt_path=str(plan.resume_from) if plan.resume_from is not None else None)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    if skipped := SkipLog(output_dir / SKIPPED_FILE).entries():
        log.warning("%d unreadable image file(s) skipped, listed in %s", len(skipped), output_dir / SKIPPED_FILE)
    return TrainResult(
        output_dir=output_dir,
        last_checkpoint=last,
        epochs=trainer.current_epoch,
        steps=trainer.global_step,
        seconds=time.perf_counter() - start,
        metrics=metrics,
    )


def _lightning_trainer(config: TrainConfig, output_dir: Path, callbacks: List[Callback], loggers: List[Any],
                       checkpoint_io: AtomicCheckpointIO, precision: str) -> L.Trainer:
    tc = config.trainer
    return L.Trainer(
        max_epochs=config.epochs,
        accelerator=tc.accelerator,
        devices=tc.devices,
        num_nodes=tc.num_nodes,
        strategy=tc.strategy,
        precision=precision,
        sync_batchnorm=tc.sync_batchnorm,
        deterministic=tc.deterministic,
        gradient_clip_val=config.optim.gradient_clip or None,
        limit_train_batches=tc.limit_train_batches,
        log_every_n_steps=tc.log_every_n_steps,
        enable_progress_bar=tc.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        # The progress bar reads the step's loss (a host sync) at each refresh: on a GPU, refresh
        # at the logging interval so that the CPU can queue steps ahead of the GPU.
        callbacks=callbacks + ([TQDMProgressBar(refresh_rate=1 if runs_on_cpu(tc.accelerator)
                                                else max(1, tc.log_every_n_steps))] if tc.progress_bar else []),
        logger=loggers or False,
        plugins=[checkpoint_io],
        default_root_dir=output_dir,
    )
