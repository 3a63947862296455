"""Self-supervised methods: one readable file each, composed from losses, heads and views.

Every module of this package is imported below, so a new method registers itself by existing:
add ``methods/<name>.py`` with ``@METHODS.register("<name>")`` and nothing else changes.
"""

import importlib
import pkgutil
from typing import Any, Mapping, Optional

from torch import nn

from selfsup.errors import ConfigError
from selfsup.methods.base import DataSpec, Method, MethodConfig, MethodOutput, Progress
from selfsup.methods.registry import METHODS
from selfsup.methods.simclr import SimCLR, SimCLRConfig

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def build_method(
    name: str, backbone: nn.Module, args: Optional[Mapping[str, Any]] = None, data: Optional[DataSpec] = None
) -> Method:
    """Instantiate the registered method ``name`` on ``backbone`` with hyper-parameters ``args``.

    ``data`` describes the training set (needed by memory banks and colour-space methods).
    """
    cls = METHODS.get(name)
    if cls.backbone_kind == "vit" and not hasattr(backbone, "forward_tokens"):
        raise ConfigError(f"method '{name}' needs a ViT backbone (patch tokens), got {type(backbone).__name__}; "
                          f"use e.g. --backbone vit-tiny or a timm ViT such as timm:vit_small_patch16_224")
    return cls(backbone, cls.make_config(args or {}), data)


def build_backbone_for(name: str, backbone: str, backbone_args: Optional[Mapping[str, Any]],
                       data_channels: int, method_args: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """The backbone ``name`` expects, for data with ``data_channels`` channels."""
    from selfsup.backbones import build_backbone

    cls = METHODS.get(name)
    channels = cls.backbone_in_channels(data_channels, cls.make_config(method_args or {}))
    return build_backbone(backbone, in_channels=channels, **dict(backbone_args or {}))


__all__ = [
    "METHODS",
    "DataSpec",
    "Method",
    "MethodConfig",
    "MethodOutput",
    "Progress",
    "SimCLR",
    "SimCLRConfig",
    "build_backbone_for",
    "build_method",
]
