"""The contract every self-supervised method honours.

A method is a plain ``nn.Module``: views in, a :class:`MethodOutput` out. It knows nothing of
Lightning, the CLI or files, so it can be driven by any training loop::

    method = SimCLR(backbone, SimCLR.Config(temperature=0.5))
    for views, _, index in loader:
        out = method(views, index)
        out.loss.backward(); optimizer.step(); optimizer.zero_grad()
        method.on_step_end(out, Progress(step, total_steps))   # momentum / queue updates

Side effects never hide in ``forward``: momentum encoders, queues and memory banks change only
in :meth:`Method.on_step_end`, which the engine calls after each optimizer step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Mapping, NamedTuple, Optional, Tuple, Type

import torch
from torch import Tensor, nn

from selfsup.data.base import DatasetInfo
from selfsup.errors import ConfigError
from selfsup.transforms import ViewConfig


class MethodOutput(NamedTuple):
    """What one training step of a method produces.

    Attributes:
        loss: scalar to minimise.
        logs: named detached scalars to log (e.g. ``{"pos_sim": ...}``).
        features: ``(B, D)`` backbone features of the first view, detached; the engine's online
            linear probe and health metrics read them.
        extras: tensors the method wants back in :meth:`Method.on_step_end` (e.g. MoCo's keys);
            ``extras["features_view2"]`` (detached ``(B, D)`` features of the second view) lets the
            engine log the alignment of positive pairs (Wang & Isola 2020).
    """

    loss: Tensor
    logs: Dict[str, Tensor]
    features: Tensor
    extras: Dict[str, Tensor] = {}


@dataclass(frozen=True)
class Progress:
    """Where training stands, for schedules inside a method (momentum, temperatures)."""

    step: int
    total_steps: int
    epoch: int = 0
    total_epochs: int = 1

    @property
    def fraction(self) -> float:
        """Training progress in ``[0, 1]``."""
        return min(1.0, self.step / max(1, self.total_steps))


@dataclass(frozen=True)
class DataSpec:
    """What a method may know about its training data (the engine passes it; tests may omit it).

    Attributes:
        info: channels, classes, native image size and normalisation of the dataset.
        num_samples: number of training images (memory banks keep one entry per image).
    """

    info: DatasetInfo
    num_samples: int = 0


@dataclass
class MethodConfig:
    """Base for each method's typed hyper-parameters (subclassed next to the method)."""


def check_ranges(config: MethodConfig, method: str) -> None:
    """Ranges that hold for every method by the meaning of the name: a softmax temperature
    (``*temperature``, ``*_temp``) divides logits and must be > 0; an exponential moving average
    coefficient (``*momentum``) must lie in [0, 1]."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if f.name.endswith("temperature") or f.name.endswith("_temp"):
            if not (0 < value < float("inf")):
                raise ConfigError(f"method_args.{f.name}={value} for {method} must be a number > 0 (a softmax temperature)")
        elif f.name.endswith("momentum") and not 0 <= value <= 1:
            raise ConfigError(f"method_args.{f.name}={value} for {method} must be in [0, 1] (a moving-average coefficient)")


class Method(nn.Module):
    """Base class of all self-supervised methods.

    Subclasses set ``Config`` (a dataclass of hyper-parameters), ``default_views`` (the
    augmentation preset of the paper) and implement :meth:`forward`.
    """

    Config: ClassVar[Type[MethodConfig]] = MethodConfig
    #: buffers that hold NaN/inf on purpose (a "not computed yet" marker): the engine's check that
    #: no checkpoint is written with non-finite values skips them.
    sentinel_buffers: ClassVar[Tuple[str, ...]] = ()
    #: number of global views the method consumes (2 for SimCLR / BYOL).
    num_views: ClassVar[int] = 2
    #: which backbones fit: "any", or "vit" for methods that need patch tokens and masks (iBOT).
    backbone_kind: ClassVar[str] = "any"

    def __init__(
        self, backbone: nn.Module, config: Optional[MethodConfig] = None, data: Optional[DataSpec] = None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = config if config is not None else self.Config()
        self.data = data

    @classmethod
    def backbone_in_channels(cls, data_channels: int, config: MethodConfig) -> int:
        """Input channels of the backbone for data with ``data_channels`` (colorization: 1, L only)."""
        return data_channels

    def encoder(self) -> nn.Module:
        """The representation that evaluation and export use: normalised dataset images
        ``(B, C, H, W)`` -> features ``(B, D)``, with a ``feature_dim`` attribute.

        The backbone for most methods; methods whose encoder needs more (CPC's patch grid,
        colorization's RGB -> L) return a module wrapping the backbone.
        """
        return self.backbone

    @classmethod
    def default_views(cls, **overrides: Any) -> ViewConfig:
        """The paper's augmentation recipe for this method."""
        return ViewConfig.simclr(**overrides)

    @classmethod
    def make_config(cls, values: Mapping[str, Any]) -> MethodConfig:
        """Build ``Config`` from a mapping, rejecting unknown keys with the valid ones listed."""
        names = {f.name for f in dataclasses.fields(cls.Config)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(unknown)} for method {cls.__name__}; "
                f"valid: {', '.join(sorted(names)) or '(none)'}"
            )
        config = cls.Config(**dict(values))
        check_ranges(config, cls.__name__)
        return config

    def forward(self, views: List[Tensor], indices: Optional[Tensor] = None) -> MethodOutput:
        """
        Args:
            views: list of ``(B, C, H, W)`` batches, one per view (global views first).
            indices: ``(B,)`` dataset indices of the images (memory-bank methods need them).
        """
        raise NotImplementedError

    def constant_lr_modules(self) -> List[nn.Module]:
        """Modules the training loop should keep at the peak learning rate, outside the warm-up
        and cosine schedule (SimSiam's predictor). None for most methods."""
        return []

    def on_before_optimizer_step(self, progress: Progress) -> None:
        """Gradient surgery before the update (DINO cancels its last layer's gradients early on)."""

    @torch.no_grad()
    def on_step_end(self, output: MethodOutput, progress: Progress) -> None:
        """Momentum / queue / bank updates; called by the engine after each optimizer step, with
        ``progress.step`` = steps completed (1 after the first update)."""

    def check_views(self, views: List[Tensor]) -> None:
        if len(views) < self.num_views:
            raise ValueError(f"{type(self).__name__} needs {self.num_views} views, got {len(views)}")


__all__ = ["DataSpec", "Method", "MethodConfig", "MethodOutput", "Progress", "field"]
