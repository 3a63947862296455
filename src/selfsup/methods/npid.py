"""NPID: Unsupervised Feature Learning via Non-Parametric Instance Discrimination.

Wu, Xiong, Yu, Lin (CVPR 2018), https://arxiv.org/abs/1805.01978.

Every training image is a class of its own. The backbone's output goes through a linear
layer to a 128-d, L2-normalised feature ``f_i``; instead of a weight vector per class, a memory
bank keeps one feature ``v_i`` per image, and the non-parametric softmax
``P(i | f) = exp(v_i·f / τ) / Σ_j exp(v_j·f / τ)`` (τ = 0.07) is trained to pick the image's own
entry (Sec. 3.1). Computing the denominator over all n images each step is costly, so the paper
approximates it with Noise-Contrastive Estimation against ``m`` uniformly drawn entries, with
the normaliser ``Z`` estimated once by Monte Carlo and then held constant (Sec. 3.2). After each
step the batch's entries are updated (momentum 0.5 in the authors' code) and renormalised.

One augmented view per image; batches carry the images' dataset indices, which address the bank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup import distributed
from selfsup.errors import ConfigError
from selfsup.heads.projection import ProjectionHead
from selfsup.losses.nce import InstanceSoftmaxLoss, NCELoss
from selfsup.memory.bank import MemoryBank
from selfsup.methods.base import DataSpec, Method, MethodConfig, MethodOutput, Progress
from selfsup.methods.registry import METHODS
from selfsup.transforms import ViewConfig

LOSSES = ("nce", "softmax")


@dataclass
class NPIDConfig(MethodConfig):
    temperature: float = 0.07
    """τ of the non-parametric softmax (Sec. 3.1)."""
    embedding_dim: int = 128
    """Size of the L2-normalised feature kept in the bank (128 in the paper)."""
    num_negatives: int = 4096
    """m, the noise entries drawn per step for NCE (4096 in the paper); unused by 'softmax'."""
    bank_momentum: float = 0.5
    """Weight of an entry's old value when the bank is updated (0.5 in the authors' code)."""
    loss: str = "nce"
    """'nce': the paper's NCE approximation; 'softmax': the exact softmax over the whole bank."""
    fill_on_first_visit: bool = False
    """false: the bank starts as random unit vectors (the paper), so an image's first visit pulls
    its feature toward noise; true: an entry takes the image's first feature, and until then the
    image's own (detached) feature stands in as its positive — short runs avoid the random targets."""


@METHODS.register("npid")
class NPID(Method):
    """NPID: instance discrimination with a memory bank and a non-parametric softmax (NCE or exact)."""

    Config = NPIDConfig
    config: NPIDConfig
    num_views = 1
    sentinel_buffers = ("log_normalizer",)  # NaN until NCE's first step estimates it

    def __init__(
        self, backbone: nn.Module, config: Optional[NPIDConfig] = None, data: Optional[DataSpec] = None
    ) -> None:
        super().__init__(backbone, config, data)
        cfg = self.config
        if data is None or data.num_samples < 1:
            raise ConfigError(f"npid needs the number of training images for its memory bank "
                              f"(data.num_samples), got {None if data is None else data.num_samples}")
        if cfg.loss not in LOSSES:
            raise ConfigError(f"unknown npid loss '{cfg.loss}'; valid choices: {', '.join(LOSSES)}")
        if cfg.temperature <= 0:
            raise ConfigError(f"npid temperature={cfg.temperature} must be > 0 (the paper uses 0.07)")
        if cfg.num_negatives < 1:
            raise ConfigError(f"npid num_negatives={cfg.num_negatives} must be a positive count (e.g. 4096)")
        if not 0.0 <= cfg.bank_momentum < 1.0:
            raise ConfigError(f"npid bank_momentum={cfg.bank_momentum} must be in [0, 1) (the paper's code uses 0.5)")
        # The classifier is replaced by a 128-d linear layer whose output is L2-normalised (Sec. 3).
        self.head = ProjectionHead(backbone.feature_dim, output_dim=cfg.embedding_dim, num_layers=1)
        self.bank = MemoryBank(data.num_samples, cfg.embedding_dim, cfg.bank_momentum, cfg.fill_on_first_visit)
        self.nce = NCELoss(cfg.temperature, data.num_samples)
        self.softmax = InstanceSoftmaxLoss(cfg.temperature)
        # log Z of NCE, estimated at the first step and then constant (Sec. 3.2); NaN = not yet.
        self.register_buffer("log_normalizer", torch.tensor(float("nan")))

    @classmethod
    def default_views(cls, **overrides: Any) -> ViewConfig:
        """One view, the authors' augmentation: crops at scale (0.2, 1), colour jitter
        (0.4, 0.4, 0.4, 0.4) always applied, grayscale p = 0.2, flips; no blur."""
        preset = dict(num_global_views=1, crop_scale=(0.2, 1.0), jitter=(0.4, 0.4, 0.4, 0.4), jitter_prob=1.0,
                      grayscale_prob=0.2, blur_prob=(0.0,), solarize_prob=(0.0,))
        return ViewConfig.simclr(**{**preset, **overrides})

    def embed(self, images: Tensor) -> Tensor:
        """``(B, C, H, W)`` → ``(B, embedding_dim)`` L2-normalised features ``f``."""
        return F.normalize(self.head(self.backbone(images)), dim=1)

    def forward(self, views: List[Tensor], indices: Optional[Tensor] = None) -> MethodOutput:
        self.check_views(views)
        if indices is None or indices.shape != views[0].shape[:1]:
            raise ValueError("npid needs the (B,) dataset indices of the batch to address its memory bank")
        indices = indices.to(self.bank.vectors.device)
        h = self.backbone(views[0])  # (B, D)
        f = F.normalize(self.head(h), dim=1)  # (B, E)
        positive = self.bank.get(indices, unfilled=f.detach())  # (B, E): v_i from earlier steps, no gradient
        extras = {"features": f.detach(), "indices": indices}
        if self.config.loss == "nce":
            # One draw of m noise indices shared by the batch: the same uniform P_n as per-image
            # draws, with an (m, E) gather instead of (B, m, E).
            noise = self.bank.vectors.index_select(0, self.bank.sample(self.config.num_negatives))
            log_z = self.log_normalizer
            if torch.isnan(log_z):
                log_z = self.nce.estimate_log_normalizer(f.detach(), noise)
                extras["log_normalizer"] = log_z
            loss = self.nce(f, positive, noise, log_z)
        else:
            # The batch's rows hold its positives: an entry not filled yet (fill_on_first_visit)
            # is replaced by the image's own feature, as for NCE, instead of its random start.
            loss = self.softmax(f, self.bank.vectors, indices, positives=positive)
        with torch.no_grad():
            logs = {"pos_sim": (f * positive).sum(dim=1).mean()}
        return MethodOutput(loss=loss, logs=logs, features=h.detach(), extras=extras)

    @torch.no_grad()
    def on_step_end(self, output: MethodOutput, progress: Progress) -> None:
        if "log_normalizer" in output.extras:
            # Average Z (not log Z) over the processes' estimates, so every process keeps the same constant.
            estimates = distributed.gather_no_grad(output.extras["log_normalizer"].reshape(1))
            self.log_normalizer.copy_(torch.logsumexp(estimates, 0) - math.log(estimates.numel()))
        self.bank.update(output.extras["indices"], output.extras["features"])
