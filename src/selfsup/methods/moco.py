"""MoCo: Momentum Contrast for Unsupervised Visual Representation Learning (v1 and v2).

He, Fan, Wu, Xie, Girshick (CVPR 2020), https://arxiv.org/abs/1911.05722, and
Chen, Fan, Girshick, He, "Improved Baselines with Momentum Contrastive Learning" (2020),
https://arxiv.org/abs/2003.04297.

A query encoder ``f_q`` (backbone + head) embeds one view; a momentum key encoder ``f_k``, a
copy updated as ``θ_k ← m·θ_k + (1 − m)·θ_q`` (Eq. 2, m = 0.999) and never by gradients,
embeds the other view. InfoNCE (Eq. 1, τ = 0.07) contrasts each query with its key against a
queue of K keys from past batches (Sec. 3.2), which decouples the number of negatives from the
batch size. After each step the new keys are enqueued and the oldest dropped.

Shuffling BN (Sec. 3.3): if the key encoder's BatchNorm saw the same images as the query
encoder's, the batch statistics would leak which key is the positive. MoCo computes the keys
on a shuffled batch split across GPUs; here, under DDP, the batch is shuffled across processes
the same way, and in a single process the key encoder runs on ``shuffle_groups`` random
sub-batches, so each key's BN statistics come from a different set of images than its query's.

MoCo v2 keeps everything else and adds (Chen et al. 2020, Sec. 3): an MLP head
(2048-d hidden, ReLU), τ = 0.2, Gaussian blur in the augmentation, and a cosine learning-rate
schedule (the ``optim`` section of its recipes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup import distributed
from selfsup.errors import ConfigError
from selfsup.heads.projection import ProjectionHead
from selfsup.losses.infonce import QueueInfoNCELoss
from selfsup.memory.queue import KeyQueue
from selfsup.methods.base import DataSpec, Method, MethodConfig, MethodOutput, Progress
from selfsup.methods.momentum import ema_update_, frozen_copy
from selfsup.methods.registry import METHODS
from selfsup.transforms import ViewConfig


@dataclass
class MoCoConfig(MethodConfig):
    temperature: float = 0.07
    """τ of InfoNCE (Eq. 1): 0.07 in MoCo v1, 0.2 in MoCo v2."""
    queue_size: int = 65536
    """K, the number of negative keys kept (65536 on ImageNet; must be well below the dataset size)."""
    momentum: float = 0.999
    """m of the key encoder's update θ_k ← m·θ_k + (1 − m)·θ_q (Eq. 2); Table 4 shows 0.99–0.9999 work."""
    projection_dim: int = 128
    """Size of the embedding contrasted (128 in both versions)."""
    projection_layers: int = 1
    """1: MoCo v1's linear fc head; 2: MoCo v2's MLP head (Linear → ReLU → Linear, no BN)."""
    projection_hidden_dim: int = 2048
    """Hidden width of the MLP head (MoCo v2); unused with one layer."""
    shuffle_groups: int = 8
    """Single-process shuffling BN: the key batch is permuted and encoded in this many sub-batches
    (the paper's 8 GPUs). 1 turns shuffling off (and lets BN leak the positive). Under DDP the
    batch is shuffled across processes instead, as in the paper."""


def _validate(config: MoCoConfig) -> None:
    if config.temperature <= 0:
        raise ConfigError(f"moco temperature={config.temperature} must be > 0 (0.07 in MoCo v1, 0.2 in v2)")
    if config.queue_size < 1:
        raise ConfigError(f"moco queue_size={config.queue_size} must be a positive number of keys (e.g. 4096, 65536)")
    if not 0.0 <= config.momentum <= 1.0:
        raise ConfigError(f"moco momentum={config.momentum} must be in [0, 1] (the paper uses 0.999)")
    if config.projection_layers < 1:
        raise ConfigError(f"moco projection_layers={config.projection_layers} must be 1 (v1) or more (v2: 2)")
    if config.shuffle_groups < 1:
        raise ConfigError(f"moco shuffle_groups={config.shuffle_groups} must be >= 1 (1 turns shuffling BN off)")


@torch.no_grad()
def grouped_shuffled_forward(encoder: nn.Module, images: Tensor, groups: int,
                             generator: Optional[torch.Generator] = None) -> Tensor:
    """Shuffling BN in one process: ``encoder`` on ``groups`` random sub-batches, outputs in input order.

    The batch is permuted, split into ``groups`` nearly equal chunks, each chunk is encoded
    separately (so each BatchNorm sees only its chunk), and the outputs are put back in the
    original order. Each chunk keeps at least 2 images, which BatchNorm needs.

    Args:
        images: ``(B, C, H, W)``.
        generator: CPU generator of the permutation (the global one when None).
    Returns:
        ``(B, ...)`` encoder outputs, row ``i`` for ``images[i]``.
    """
    batch = images.shape[0]
    groups = max(1, min(groups, batch // 2))
    if groups == 1:
        return encoder(images)
    order = torch.randperm(batch, generator=generator).to(images.device)
    outputs = torch.cat([encoder(chunk) for chunk in images[order].tensor_split(groups)])
    return outputs[torch.argsort(order)]


@torch.no_grad()
def distributed_shuffled_forward(encoder: nn.Module, images: Tensor) -> Tensor:
    """Shuffling BN across processes (MoCo, Sec. 3.3): gather the key images of every process,
    apply one permutation shared by all (drawn on rank 0), encode this process's slice, then
    gather the outputs and return this process's rows in their original order.

    Every process must hold the same number of images (the loaders drop the last batch).
    """
    local = images.shape[0]
    all_images = distributed.gather_no_grad(images)
    order = torch.randperm(all_images.shape[0], device=images.device)
    dist.broadcast(order, src=0)
    start = distributed.rank() * local
    outputs = distributed.gather_no_grad(encoder(all_images[order[start:start + local]]))
    return outputs[torch.argsort(order)][start:start + local]


@METHODS.register("moco")
class MoCo(Method):
    """MoCo v1: query encoder, momentum key encoder, key queue, InfoNCE, shuffling BN."""

    Config = MoCoConfig
    config: MoCoConfig

    def __init__(
        self, backbone: nn.Module, config: Optional[MoCoConfig] = None, data: Optional[DataSpec] = None
    ) -> None:
        super().__init__(backbone, config, data)
        cfg = self.config
        _validate(cfg)
        self.projector = ProjectionHead(backbone.feature_dim, cfg.projection_hidden_dim, cfg.projection_dim,
                                        num_layers=cfg.projection_layers, batch_norm=False)
        # θ_k starts as a copy of θ_q (Alg. 1: "f_k.params = f_q.params") and gets no gradient.
        self.key_encoder = frozen_copy(self.query_encoder())
        self.queue = KeyQueue(cfg.queue_size, cfg.projection_dim)
        self.criterion = QueueInfoNCELoss(cfg.temperature)

    @classmethod
    def default_views(cls, **overrides: Any) -> ViewConfig:
        """MoCo v1 (Sec. 3.3, following Wu et al. 2018): crops at scale (0.2, 1), colour jitter
        (0.4, 0.4, 0.4, 0.4) always applied, grayscale p = 0.2, flips; no blur."""
        preset = dict(crop_scale=(0.2, 1.0), jitter=(0.4, 0.4, 0.4, 0.4), jitter_prob=1.0, grayscale_prob=0.2,
                      blur_prob=(0.0, 0.0), solarize_prob=(0.0, 0.0))
        return ViewConfig.simclr(**{**preset, **overrides})

    def query_encoder(self) -> nn.Sequential:
        """``f_q``: backbone then head (a view over the registered modules, not a new one)."""
        return nn.Sequential(self.backbone, self.projector)

    @torch.no_grad()
    def encode_keys(self, images: Tensor) -> Tensor:
        """``(B, C, H, W)`` key views → ``(B, projection_dim)`` L2-normalised keys, with shuffling BN."""
        if distributed.world_size() > 1 and self.config.shuffle_groups > 1:
            keys = distributed_shuffled_forward(self.key_encoder, images)
        else:
            keys = grouped_shuffled_forward(self.key_encoder, images, self.config.shuffle_groups)
        return F.normalize(keys, dim=1)

    def forward(self, views: List[Tensor], indices: Optional[Tensor] = None) -> MethodOutput:
        self.check_views(views)
        h = self.backbone(views[0])  # (B, D)
        queries = F.normalize(self.projector(h), dim=1)  # (B, P)
        keys = self.encode_keys(views[1])  # (B, P), no gradient
        # The queue is read here and written only in on_step_end, after the optimizer step.
        loss, logits = self.criterion(queries, keys, self.queue.stored)
        with torch.no_grad():
            logs = {"pos_sim": (queries * keys).sum(dim=1).mean(),
                    "contrast_acc": (logits.argmax(dim=1) == 0).float().mean()}
        return MethodOutput(loss=loss, logs=logs, features=h.detach(), extras={"keys": keys})

    @torch.no_grad()
    def on_step_end(self, output: MethodOutput, progress: Progress) -> None:
        # Eq. 2, then the current keys replace the oldest ones (Alg. 1: enqueue, dequeue).
        ema_update_(self.key_encoder, self.query_encoder(), self.config.momentum)
        self.queue.enqueue(output.extras["keys"])


@dataclass
class MoCoV2Config(MoCoConfig):
    temperature: float = 0.2
    """τ = 0.2, the best value with the MLP head (Chen et al. 2020, Sec. 3)."""
    projection_layers: int = 2
    """The MLP head: 2048-d hidden layer with ReLU (Chen et al. 2020, Sec. 3)."""


@METHODS.register("moco2")
class MoCoV2(MoCo):
    """MoCo v2: MoCo v1 with an MLP head, τ = 0.2 and blur (the cosine schedule is in the recipe)."""

    Config = MoCoV2Config
    config: MoCoV2Config

    @classmethod
    def default_views(cls, **overrides: Any) -> ViewConfig:
        """MoCo v2 (Chen et al. 2020, Sec. 3; SimCLR's recipe at crop scale (0.2, 1)): colour
        jitter (0.4, 0.4, 0.4, 0.1) with p = 0.8, grayscale p = 0.2, Gaussian blur σ ∈ [0.1, 2]
        with p = 0.5, flips."""
        preset = dict(crop_scale=(0.2, 1.0), jitter=(0.4, 0.4, 0.4, 0.1), jitter_prob=0.8, grayscale_prob=0.2,
                      blur_prob=(0.5, 0.5), solarize_prob=(0.0, 0.0))
        return ViewConfig.simclr(**{**preset, **overrides})
