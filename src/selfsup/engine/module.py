"""The Lightning wrapper around a plain :class:`~selfsup.methods.Method`.

Everything engine-specific lives here: optimizer and schedule, logging, the online linear
probe, the epoch-end kNN monitor, explicit momentum/queue hooks and the RNG state that makes
``--resume`` continue exactly.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from selfsup.config import TrainConfig
from selfsup.data import DatasetInfo
from selfsup.engine.checkpoint import capture_rng_state, restore_rng_state
from selfsup.engine.compile import CompiledForward
from selfsup.engine.overlap import ViewsMade, ViewStream
from selfsup.engine.optim import build_optimizer, build_scheduler, split_decay_groups
from selfsup.evaluation import extract_features, knn_accuracy
from selfsup.evaluation.health import SECOND_VIEW_KEY, HealthMonitor
from selfsup.methods import DataSpec, Progress, build_backbone_for, build_method
from selfsup.schedules import cosine
from selfsup.transforms import BatchedMultiViewTransform, ViewConfig
from selfsup.transforms.split_views import PhotometricViews

CHECKPOINT_KEY = "selfsup"

log = logging.getLogger(__name__)


@dataclass
class KnnMonitorData:
    """Labelled, un-augmented images for the epoch-end kNN monitor."""

    train: Dataset
    test: Dataset
    num_classes: int


class SelfSupervisedModule(L.LightningModule):
    """Trains ``config.method`` on ``config.backbone``.

    Args:
        config: the full training configuration (saved in every checkpoint).
        info: the training dataset's description (channels, classes, normalisation).
        num_samples: number of training images (memory-bank methods keep one entry per image).
        knn_data: optional labelled data for the kNN monitor.
        batch_views: when given, batches arrive as uint8 images and are augmented here, on the
            training device, by :class:`~selfsup.transforms.BatchedMultiViewTransform`.
        split_views: with ``batch_views``, batches arrive as uint8 crops, one per view, made in the
            DataLoader workers by :class:`~selfsup.transforms.split_views.CropFlipViews`, and get their
            colour ops here (:class:`~selfsup.transforms.split_views.PhotometricViews`).
    """

    def __init__(
        self,
        config: TrainConfig,
        info: DatasetInfo,
        knn_data: Optional[KnnMonitorData] = None,
        batch_views: Optional[ViewConfig] = None,
        num_samples: int = 0,
        split_views: bool = False,
    ) -> None:
        super().__init__()
        self.config = config
        self.info = info
        self.num_samples = num_samples
        self.knn_data = knn_data
        backbone = build_backbone_for(config.method, config.backbone, config.backbone_args, info.num_channels,
                                      config.method_args)
        self.method = build_method(config.method, backbone, config.method_args, DataSpec(info, num_samples))
        self.probe: Optional[nn.Linear] = None
        if config.monitor.online_probe and info.num_classes > 0:
            self.probe = nn.Linear(self.encoder.feature_dim, info.num_classes)
        self.batch_augment = BatchedMultiViewTransform(batch_views, info) if batch_views is not None else None
        if batch_views is not None and split_views:
            self.batch_augment = PhotometricViews(batch_views, info)
        self.views_stream = ViewStream()
        self.compiled_forward = CompiledForward(self.method, config.trainer.compile)
        health_samples = config.monitor.health_samples
        self.health = HealthMonitor(health_samples) if health_samples > 1 else None
        self.channels_last = config.trainer.channels_last and _is_convolutional(backbone)
        self._total_steps = 1  # set by configure_optimizers, once the trainer knows the data
        if self.channels_last:
            self.method.to(memory_format=torch.channels_last)

    @property
    def backbone(self) -> nn.Module:
        return self.method.backbone

    @property
    def encoder(self) -> nn.Module:
        """What evaluation measures: images -> features (the backbone for most methods)."""
        return self.method.encoder()

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Dict[str, Any]:
        cfg = self.config.optim
        # Parameters the method trains at a constant rate get their own groups, outside the schedule.
        constant = {id(p) for module in self.method.constant_lr_modules() for p in module.parameters()}
        groups: List[Dict[str, Any]] = []
        for keep_constant in (False, True):
            chosen = [(n, p) for n, p in self.method.named_parameters() if (id(p) in constant) == keep_constant]
            decay, no_decay = split_decay_groups(chosen, cfg.exclude_bias_and_norm)
            flag = {"constant_lr": True} if keep_constant else {}
            groups += [{"params": decay, "decay_schedule": True, **flag}, {"params": no_decay, "weight_decay": 0.0, **flag}]
        if self.probe is not None:
            groups.append({"params": list(self.probe.parameters()), "lr": cfg.probe_lr, "weight_decay": 0.0})
        global_batch = self.config.batch_size * self.trainer.world_size
        optimizer = build_optimizer(cfg, groups, global_batch)
        self._total_steps = total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        steps_per_epoch = max(1, total_steps // max(1, self.trainer.max_epochs or 1))
        scheduler = build_scheduler(optimizer, cfg, total_steps, steps_per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _progress(self) -> Progress:
        return Progress(
            step=self.global_step,
            total_steps=self._total_steps,
            epoch=self.current_epoch,
            total_epochs=self.trainer.max_epochs or 1,
        )

    # ------------------------------------------------------------------ training
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        cfg = self.config.optim
        if cfg.weight_decay_end is None:
            return
        # DINO's weight-decay schedule (Caron et al. 2021, App. B): cosine from start to end.
        decay = cosine(cfg.weight_decay, cfg.weight_decay_end, self._progress().fraction)
        for group in self.trainer.optimizers[0].param_groups:
            if group.get("decay_schedule"):
                group["weight_decay"] = decay

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.method.on_before_optimizer_step(self._progress())
    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        transfer = super().transfer_batch_to_device
        if self.batch_augment is None or not self.trainer.training:
            return transfer(batch, device, dataloader_idx)
        # On a GPU, copy and views run on a side stream, beside the previous step (see ViewStream).
        return self.views_stream.run(lambda: self._make_views(transfer(batch, device, dataloader_idx)), device)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.batch_augment is None or not self.trainer.training or isinstance(batch, ViewsMade):
            return batch
        return self._make_views(batch)

    def _make_views(self, batch: Any) -> Any:
        inputs, labels, indices = batch
        if isinstance(self.batch_augment, PhotometricViews):
            return self.batch_augment(inputs), labels, indices
        (images,) = inputs
        return self.batch_augment(images), labels, indices

    def training_step(self, batch: Any, batch_idx: int) -> Dict[str, Any]:
        views, labels, indices = batch
        if self.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        output = self.compiled_forward(views, indices)
        # A non-finite loss is caught by selfsup.engine.guard.DivergenceGuard, which reads a
        # device-side flag every log_every_n_steps steps instead of syncing here on every step.
        batch_size = views[0].shape[0]
        if self.health is not None:
            second = output.extras.get(SECOND_VIEW_KEY)
            if self.compiled_forward.graphs:  # CUDA graph outputs are overwritten by the next step's replay
                second = second.detach().clone() if second is not None else None
                self.health.update(output.features.detach().clone(), second)
            else:
                self.health.update(output.features, second)
        logs = {"train/loss": output.loss.detach()}
        logs.update({f"train/{name}": value for name, value in output.logs.items()})
        loss = output.loss
        if self.probe is not None:
            # Unlabelled rows (-1) weigh 0: masking by weights, not by indexing, spares a host sync.
            labelled = (labels >= 0).float()
            count = labelled.sum().clamp(min=1.0)
            logits = self.probe(output.features.detach().float())
            per_row = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
            loss = loss + (per_row * labelled).sum() / count
            logs["train/probe_acc"] = ((logits.argmax(1) == labels).float() * labelled).sum() / count
        self.log_dict(logs, on_step=True, on_epoch=True, batch_size=batch_size)
        self.log("loss", output.loss.detach(), prog_bar=True, logger=False, batch_size=batch_size)
        # A CPU tensor: logging a Python float would copy it to the device, a blocking copy every step.
        self.log("train/lr", torch.tensor(self.trainer.optimizers[0].param_groups[0]["lr"]), on_step=True,
                 on_epoch=False)
        return {"loss": loss, "output": output}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # After the optimizer step: momentum encoders, queues and banks move here, never in forward.
        if outputs is not None:
            self.method.on_step_end(outputs["output"], self._progress())

    def on_train_epoch_end(self) -> None:
        self.log_health()
        every = self.config.monitor.knn_every
        if self.knn_data is None or every <= 0 or (self.current_epoch + 1) % every:
            return
        # The monitor must not change the training trajectory: keep the RNG streams untouched.
        with torch.random.fork_rng(devices=[]):
            self.log("knn_top1", self.knn_monitor(), prog_bar=True, on_epoch=True, sync_dist=False)

    def log_health(self) -> None:
        """Log ``health/*`` (see :mod:`selfsup.evaluation.health`) of this epoch's last features;
        warn once if they look collapsed."""
        if self.health is None:
            return
        metrics = self.health.compute()
        self.health.reset()
        if not metrics:
            return
        self.log_dict({f"health/{name}": value for name, value in metrics.items()}, on_epoch=True, sync_dist=False)
        if self.health.is_collapsing(metrics) and not self.health.collapse_warned:
            self.health.collapse_warned = True
            log.warning("representation collapse? at epoch %d the features' std·sqrt(D) is %.3g < %.2g "
                        "(isotropic features: ~1; effective rank %.1f) — check lr, temperature, augmentations",
                        self.current_epoch, metrics["feature_std_ratio"], self.health.collapse_ratio, metrics["rankme"])

    @torch.no_grad()
    def knn_monitor(self) -> float:
        """kNN top-1 of the current backbone on the monitor subsets (a fraction)."""
        assert self.knn_data is not None
        cfg = self.config.monitor
        kwargs = dict(batch_size=512, device=self.device, channels_last=self.channels_last)
        train_x, train_y = extract_features(self.encoder, self.knn_data.train, **kwargs)
        test_x, test_y = extract_features(self.encoder, self.knn_data.test, **kwargs)
        result = knn_accuracy(train_x, train_y, test_x, test_y, self.knn_data.num_classes,
                              k=min(cfg.knn_k, len(train_y)), temperature=cfg.knn_temperature)
        return float(result["knn_top1"])

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "config": self.config.to_dict(),
            "dataset_info": dataclasses.asdict(self.info),
            "num_samples": self.num_samples,
            "feature_dim": self.encoder.feature_dim,
            "rng": capture_rng_state(),
        }

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        # Lightning calls this before configure_optimizers, which creates the first data
        # iterator (drawing the loader's seeds): restoring now makes a resumed run draw exactly
        # what the uninterrupted run drew at the start of the same epoch.
        rng = checkpoint.get(CHECKPOINT_KEY, {}).get("rng")
        if rng is not None:
            restore_rng_state(rng)


def _is_convolutional(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) and m.kernel_size != m.stride for m in module.modules())
