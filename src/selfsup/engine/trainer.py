"""``train(config)``: data → views → method → Lightning Trainer, with safe checkpoints."""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader, Subset

from selfsup.config import TrainConfig, _build
from selfsup.data import (SKIPPED_FILE, EpochShuffleSampler, ImageDataset, LoaderGenerator, SkipLog,
                          TensorImageDataset, TransformDataset, ViewDataset, load_dataset, set_bad_image_policy)
from selfsup.engine.allocator import tune_cpu_allocator
from selfsup.engine.checkpoint import AtomicCheckpointIO
from selfsup.engine.module import CHECKPOINT_KEY, KnnMonitorData, SelfSupervisedModule
from selfsup.errors import ConfigError, DataError
from selfsup.ops import use_winograd
from selfsup.methods import METHODS
from selfsup.transforms import MultiViewTransform, ViewConfig, eval_transform

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


def build_train_loader(config: TrainConfig, dataset: ImageDataset, views: ViewConfig) -> DataLoader:
    """Batches of ``(views, labels, indices)``; with batched augmentation ``views`` is the
    single uint8 batch ``[(B, C, H, W)]`` that the module turns into views on its device.

    Order and per-image views are functions of (seed, epoch, index) alone (selfsup.data.sampling),
    and the loader draws nothing from the global generators, so ``--resume`` is exact with workers."""
    batched = use_batched_augment(config, dataset)
    transform = _single_view if batched else MultiViewTransform(views, dataset.info)
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
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if CHECKPOINT_KEY not in checkpoint:
        raise ConfigError(f"'{path}' is not a selfsup training checkpoint (no '{CHECKPOINT_KEY}' entry)")
    return checkpoint[CHECKPOINT_KEY]


def runs_on_cpu(accelerator: str) -> bool:
    """Whether Lightning's ``accelerator`` setting trains on the CPU here."""
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()
                                    and not torch.backends.mps.is_available())


def train(config: TrainConfig, resume: bool = False, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Pre-train ``config.method`` and return where the checkpoints are.

    With ``resume`` the run continues from ``output_dir/last.ckpt``: same step, same learning
    rate schedule, same optimizer state and RNG streams as if it had never stopped.
    """
    config.validate()
    output_dir = Path(config.output_dir)
    last = output_dir / LAST_CHECKPOINT
    if resume and not last.is_file():
        raise ConfigError(f"--resume: no checkpoint '{last}' to resume from; drop --resume to start a new run")
    if not resume and last.is_file():
        raise ConfigError(
            f"'{output_dir}' already holds a run ({LAST_CHECKPOINT}); pass --resume to continue it "
            f"or choose another --output-dir"
        )
    if config.trainer.cpu_allocator == "tuned" and runs_on_cpu(config.trainer.accelerator):
        tune_cpu_allocator()  # before the loader's workers fork, so that they inherit it
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
        batch_views=views if use_batched_augment(config, dataset) else None,
        num_samples=len(dataset),
    )
    if config.trainer.cpu_convolution == "winograd" and runs_on_cpu(config.trainer.accelerator):
        use_winograd(module.method)  # 3×3 stride-1 convolutions of float32 CPU steps (selfsup.ops.winograd)

    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    checkpointing = ModelCheckpoint(
        dirpath=output_dir,
        filename="epoch={epoch:03d}",
        auto_insert_metric_name=False,
        every_n_epochs=1,
        save_top_k=-1,
        save_last=True,
    )
    tc = config.trainer
    trainer = L.Trainer(
        max_epochs=config.epochs,
        accelerator=tc.accelerator,
        devices=tc.devices,
        num_nodes=tc.num_nodes,
        strategy=tc.strategy,
        precision=tc.precision,
        sync_batchnorm=tc.sync_batchnorm,
        deterministic=tc.deterministic,
        gradient_clip_val=config.optim.gradient_clip or None,
        limit_train_batches=tc.limit_train_batches,
        log_every_n_steps=tc.log_every_n_steps,
        enable_progress_bar=tc.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[checkpointing, SamplerEpochOnResume(loader.sampler), *callbacks],
        logger=[
            CSVLogger(output_dir, name="logs", version=""),
            TensorBoardLogger(output_dir, name="logs", version="", default_hp_metric=False),
        ],
        plugins=[AtomicCheckpointIO()],
        default_root_dir=output_dir,
    )
    # config.yaml is ours: the folder is expected to be non-empty. The LeafSpec notice is
    # Lightning's own use of a deprecated torch API, nothing a user can act on.
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")
    start = time.perf_counter()
    trainer.fit(module, loader, ckpt_path=str(last) if resume else None)
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
