"""Tracking Emerges by Colorizing Videos.

Vondrick, Shrivastava, Fathi, Guadarrama, Murphy (ECCV 2018), https://arxiv.org/abs/1806.09594.
Given a colourful reference frame and a grey target frame of the same video, the model colours the
target by *copying*: every target pixel ``j`` attends over the reference pixels ``i`` with
``A_ij = softmax_i(f_i · f_j / T)`` of per-pixel embeddings ``f`` computed from the grey frames
only, and its predicted colour distribution is ``Σ_i A_ij c_i`` with ``c_i`` the reference
pixel's quantised colour (Eq. 1-2). The loss is the cross-entropy of that copy with the target
pixel's true colour category (Eq. 3). Nothing but the pointer is learned, so the embeddings must
find corresponding points; at test time the same pointer propagates segmentation masks
(:func:`selfsup.apps.tracking.propagate_masks`).

Implementation choices:

* Data: ``frames:PATH`` (:mod:`selfsup.data.frames`) yields a reference and a later target frame
  of one video stacked as channels ``(2·3, H, W)``; the default views only resize (no crop, no
  flip, no colour change, which would alter the targets) and the method unstacks them. The paper
  uses 3 reference frames per target; this uses 1, at a random gap of 1..5 frames.
* Colours: the paper quantises ab into 16 k-means clusters fitted on training frames. Here the
  centroids are a buffer fitted online, in ``on_step_end``: k-means++ and Lloyd iterations on the
  first batch's ab values, then mini-batch k-means (Sculley 2010) for ``kmeans_steps`` steps,
  then frozen. Because the model only points, moving centroids never invalidate what it learned.
* Embeddings: the paper's ResNet-18 with reduced strides (+ a 3D convolution) gives 64-d embeddings
  at 1/8 resolution. Here :class:`~selfsup.heads.colorization.DenseFusionHead` fuses the backbone's
  stage maps (``feature_stages``) on the ``output_stride`` grid into ``embedding_dim`` channels.
* The network sees L = lightness only, ``(L - 50) / 50``, so it cannot copy by colour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup import distributed
from selfsup.data.frames import FRAMES_PER_SAMPLE, unstack_frames
from selfsup.errors import ConfigError
from selfsup.heads.colorization import DenseFusionHead, dense_features, feature_channels, output_grid
from selfsup.methods.base import DataSpec, Method, MethodConfig, MethodOutput, Progress
from selfsup.methods.colorization import LightnessEncoder, rgb_statistics, stages_tuple
from selfsup.methods.registry import METHODS
from selfsup.transforms import ViewConfig
from selfsup.transforms.color import L_SCALE, downsample, normalized_lightness, rgb_to_lab, unnormalize

KMEANS_INIT_ITERATIONS = 10  # Lloyd iterations after k-means++ on the first batch


def attention_copy(reference: Tensor, target: Tensor, values: Tensor, temperature: float = 1.0,
                   topk: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """Copy ``values`` from reference pixels to target pixels through attention (Vondrick et al., Eq. 1-2).

    ``A_ij = exp(f_i · f_j / T) / Σ_k exp(f_k · f_j / T)`` over reference pixels ``i``, and target
    pixel ``j`` gets ``Σ_i A_ij c_i``. With ``topk``, each target pixel attends only to its ``topk``
    most similar reference pixels (a common sharpening for label propagation; off in training).

    Args:
        reference: ``(B, E, N)`` reference embeddings ``f_i``.
        target: ``(B, E, M)`` target embeddings ``f_j``.
        values: ``(B, N, K)`` what each reference pixel carries (one-hot colours, label probabilities).
        temperature: ``T``.
    Returns:
        Copied values ``(B, M, K)`` and the attention ``(B, M, N)`` (rows sum to 1).
    """
    logits = torch.einsum("ben,bem->bmn", reference.float(), target.float()) / temperature
    if topk is not None and topk < logits.shape[-1]:
        kth = logits.topk(topk, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    attention = torch.softmax(logits, dim=-1)
    return torch.bmm(attention, values.float()), attention


@dataclass
class VideoColorizationConfig(MethodConfig):
    num_clusters: int = 16
    """Colour categories: k-means clusters of ab values (the paper uses 16)."""
    kmeans_steps: int = 100
    """Training steps during which the clusters are refined on the batches' colours; then frozen."""
    kmeans_samples: int = 8192
    """ab values per step fed to k-means (an even subsample of the batch's pixels)."""
    embedding_dim: int = 64
    """Size of the per-pixel embeddings f (the paper uses 64)."""
    head_hidden_dim: int = 256
    """Width of the embedding head."""
    feature_stages: Tuple[int, ...] = (2, 3, 4)
    """ResNet stages fused into the embeddings (mid-level stages keep the spatial precision that
    the paper gets from reducing the ResNet's strides)."""
    output_stride: int = 8
    """Embedding grid: 1/8 of the frame side, as the paper's 32x32 embeddings of 256x256 frames."""
    temperature: float = 1.0
    """T of the pointer's softmax in training (Eq. 1 has none, i.e. 1)."""

    def __post_init__(self) -> None:
        self.feature_stages = stages_tuple(self.feature_stages)
        if self.num_clusters < 2:
            raise ConfigError(f"num_clusters={self.num_clusters} must be >= 2 (the paper uses 16)")
        if self.temperature <= 0 or self.output_stride < 1 or self.embedding_dim < 1:
            raise ConfigError(f"temperature={self.temperature}, output_stride={self.output_stride} and "
                              f"embedding_dim={self.embedding_dim} must be positive")
        if self.kmeans_steps < 1 or self.kmeans_samples < self.num_clusters:
            raise ConfigError(f"kmeans_steps={self.kmeans_steps} must be >= 1 and kmeans_samples="
                              f"{self.kmeans_samples} >= num_clusters={self.num_clusters}")


@METHODS.register("video-colorization")
class VideoColorization(Method):
    """Colour a grey target frame by pointing into a colourful reference frame."""

    Config = VideoColorizationConfig
    config: VideoColorizationConfig
    num_views = 1

    mean: Tensor
    std: Tensor
    centroids: Tensor
    cluster_counts: Tensor
    kmeans_updates: Tensor

    def __init__(
        self, backbone: nn.Module, config: Optional[VideoColorizationConfig] = None, data: Optional[DataSpec] = None
    ) -> None:
        super().__init__(backbone, config, data)
        cfg = self.config
        mean, std = rgb_statistics("video-colorization", data, frames=FRAMES_PER_SAMPLE)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.head = DenseFusionHead(feature_channels(backbone, cfg.feature_stages), cfg.head_hidden_dim,
                                    cfg.embedding_dim)
        # Placeholder colours until the first batch has been seen: grey and a ring of hues.
        angles = torch.arange(cfg.num_clusters - 1) * (2 * torch.pi / (cfg.num_clusters - 1))
        ring = 25.0 * torch.stack([angles.cos(), angles.sin()], dim=1)
        self.register_buffer("centroids", torch.cat([torch.zeros(1, 2), ring]))
        self.register_buffer("cluster_counts", torch.zeros(cfg.num_clusters, dtype=torch.int64))
        self.register_buffer("kmeans_updates", torch.zeros((), dtype=torch.int64))

    @classmethod
    def backbone_in_channels(cls, data_channels: int, config: MethodConfig) -> int:
        return 1  # grey frames: colour must be copied, not seen

    @classmethod
    def default_views(cls, **overrides: Any) -> ViewConfig:
        # Resize only: the whole frame (crop scale 1), no flip, no colour change.
        return ViewConfig.crop_flip(**{"crop_scale": (1.0, 1.0), "flip_prob": 0.0, **overrides})

    def encoder(self) -> nn.Module:
        return LightnessEncoder(self.backbone, self.mean, self.std)

    def embed(self, lightness: Tensor) -> Tuple[Tensor, Tensor]:
        """Pooled features ``(B, D)`` and per-pixel embeddings ``(B, E, H/s, W/s)`` of ``(L - 50) / 50`` inputs."""
        pooled, maps = dense_features(self.backbone, lightness, self.config.feature_stages)
        grid = output_grid(lightness.shape[-2], lightness.shape[-1], self.config.output_stride)
        return pooled, self.head(maps, grid)

    def pixel_embeddings(self, rgb: Tensor) -> Tensor:
        """RGB frames in [0, 1] ``(B, 3, H, W)`` -> embeddings ``(B, E, H/s, W/s)`` (for tracking)."""
        return self.embed(normalized_lightness(rgb.float()))[1]

    def quantize(self, ab: Tensor) -> Tensor:
        """Colour category ``(B, H, W)`` of ab values ``(B, 2, H, W)``: the nearest centroid."""
        flat = ab.permute(0, 2, 3, 1).reshape(-1, 2)
        return torch.cdist(flat, self.centroids.to(flat)).argmin(dim=1).view(ab.shape[0], *ab.shape[2:])

    def forward(self, views: List[Tensor], indices: Optional[Tensor] = None) -> MethodOutput:
        self.check_views(views)
        cfg = self.config
        pairs = views[0]
        if pairs.shape[1] != 3 * FRAMES_PER_SAMPLE:
            raise ValueError(f"video-colorization expects (reference, target) RGB pairs (B, 6, H, W), "
                             f"got {tuple(pairs.shape)}")
        reference, target = unstack_frames(pairs.float())
        batch = reference.shape[0]
        with torch.no_grad():
            rgb = unnormalize(torch.cat([reference, target]), self.mean, self.std)  # (2B, 3, H, W)
            lab = rgb_to_lab(rgb)
            lightness = (lab[:, :1] - L_SCALE) / L_SCALE
        pooled, embeddings = self.embed(lightness)  # one pass over both frames: (2B, D), (2B, E, h, w)
        with torch.no_grad():
            ab = downsample(lab[:, 1:], tuple(embeddings.shape[-2:]))  # (2B, 2, h, w)
            colours = self.quantize(ab).flatten(1)  # (2B, N)
            reference_colours = F.one_hot(colours[:batch], cfg.num_clusters).float()  # (B, N, K)
        flat = embeddings.flatten(2)  # (2B, E, N)
        copied, attention = attention_copy(flat[:batch], flat[batch:], reference_colours, cfg.temperature)
        # Eq. 3: cross-entropy of the copied distribution with the target pixels' true colour.
        log_probs = copied.clamp(min=1e-8).log()  # (B, N, K)
        loss = F.nll_loss(log_probs.flatten(0, 1), colours[batch:].flatten())
        with torch.no_grad():
            logs = {
                "colour_top1": (copied.argmax(dim=-1) == colours[batch:]).float().mean(),
                "attention_max": attention.max(dim=-1).values.mean(),
            }
        extras = {}
        if int(self.kmeans_updates) < cfg.kmeans_steps:
            samples = ab.permute(0, 2, 3, 1).reshape(-1, 2)
            extras["ab_samples"] = samples[:: max(1, len(samples) // cfg.kmeans_samples)][: cfg.kmeans_samples]
        return MethodOutput(loss=loss, logs=logs, features=pooled[:batch].detach(), extras=extras)

    @torch.no_grad()
    def on_step_end(self, output: MethodOutput, progress: Progress) -> None:
        samples = output.extras.get("ab_samples")
        if samples is None or int(self.kmeans_updates) >= self.config.kmeans_steps:
            return
        samples = distributed.gather_no_grad(samples.float())  # every process fits the same clusters
        if int(self.kmeans_updates) == 0:
            self.centroids.copy_(kmeans(samples, self.config.num_clusters))
            self.cluster_counts.copy_(torch.bincount(_assign(samples, self.centroids), minlength=len(self.centroids)))
        else:
            minibatch_kmeans_update_(self.centroids, self.cluster_counts, samples)
        self.kmeans_updates += 1


def _assign(points: Tensor, centroids: Tensor) -> Tensor:
    return torch.cdist(points, centroids).argmin(dim=1)


def kmeans(points: Tensor, k: int, iterations: int = KMEANS_INIT_ITERATIONS, seed: int = 0) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) and Lloyd iterations on ``points`` ``(N, 2)``.

    Deterministic (own generator, seeded), so the global random streams are untouched. Returns
    ``(k, 2)`` centroids; with fewer than ``k`` distinct points some centroids repeat.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    cpu = points.detach().float().cpu()
    centroids = [cpu[torch.randint(len(cpu), (1,), generator=generator)].view(2)]
    for _ in range(1, k):
        d2 = torch.cdist(cpu, torch.stack(centroids)).min(dim=1).values.square()
        weights = d2 if d2.sum() > 0 else torch.ones_like(d2)
        centroids.append(cpu[torch.multinomial(weights, 1, generator=generator)].view(2))
    c = torch.stack(centroids)
    for _ in range(iterations):
        assign = _assign(cpu, c)
        sums = torch.zeros_like(c).index_add_(0, assign, cpu)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1)
        c = torch.where(counts > 0, sums / counts.clamp(min=1), c)  # empty clusters stay put
    return c.to(points.device)


def minibatch_kmeans_update_(centroids: Tensor, counts: Tensor, points: Tensor) -> None:
    """One mini-batch k-means step (Sculley 2010) in place: each centroid moves towards the mean of
    its new points with rate ``n_new / n_total``, its count of points ever assigned."""
    assign = _assign(points, centroids)
    new = torch.bincount(assign, minlength=len(centroids))
    sums = torch.zeros_like(centroids).index_add_(0, assign, points.to(centroids))
    counts += new
    rate = (new / counts.clamp(min=1)).unsqueeze(1).to(centroids)
    means = sums / new.clamp(min=1).unsqueeze(1).to(centroids)
    centroids.add_(rate * (means - centroids))


__all__ = ["VideoColorization", "VideoColorizationConfig", "attention_copy", "kmeans", "minibatch_kmeans_update_"]
