"""Self-supervised methods: one readable file each, composed from losses, heads and views."""

from typing import Any, Mapping, Optional

from torch import nn

from selfsup.methods.base import Method, MethodConfig, MethodOutput, Progress
from selfsup.methods.registry import METHODS
from selfsup.methods import simclr as _simclr  # noqa: F401  (registers "simclr")
from selfsup.methods.simclr import SimCLR, SimCLRConfig


def build_method(name: str, backbone: nn.Module, args: Optional[Mapping[str, Any]] = None) -> Method:
    """Instantiate the registered method ``name`` on ``backbone`` with hyper-parameters ``args``."""
    cls = METHODS.get(name)
    return cls(backbone, cls.make_config(args or {}))


__all__ = [
    "METHODS",
    "Method",
    "MethodConfig",
    "MethodOutput",
    "Progress",
    "SimCLR",
    "SimCLRConfig",
    "build_method",
]
