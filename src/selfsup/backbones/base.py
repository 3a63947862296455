"""The backbone contract, the backbone registry, and building a backbone from a name + kwargs.

Every backbone maps images ``(B, C, H, W)`` to one pooled representation ``(B, feature_dim)``
and has no classifier; methods put their own heads on top. Backbones are registered by name
as factories ``factory(in_channels: int = 3, **kwargs) -> Backbone``, whose keyword arguments
and defaults are the backbone's configuration (``backbone_args`` in a recipe).

A *prefix* backbone is registered as ``"<prefix>:NAME"`` with a factory whose first argument is
the name after the prefix: ``timm:convnext_tiny`` builds timm's ConvNeXt-T (as ``folder:PATH``
does for datasets).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Dict

from torch import Tensor, nn

from selfsup.errors import ConfigError
from selfsup.registry import Registry


class Backbone(nn.Module):
    """An encoder ``(B, C, H, W) → (B, feature_dim)`` returning a pooled representation.

    Attributes:
        feature_dim: size ``D`` of the pooled feature.
    """

    feature_dim: int

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - every subclass overrides or inherits one
        raise NotImplementedError


BACKBONES: Registry = Registry("backbone")
"""Backbone name → ``factory(in_channels: int = 3, **kwargs) -> Backbone``."""


def backbone_kwargs(name: str) -> Dict[str, object]:
    """The keyword arguments backbone ``name`` accepts (besides ``in_channels``) and their defaults.

    Example:
        >>> backbone_kwargs("resnet18")
        {'small_stem': False, 'width': 1.0, 'zero_init_residual': False, 'stem_stride': 1}
    """
    factory = _factory(name)
    params = inspect.signature(factory).parameters.values()
    # A prefix backbone's own name (``timm:NAME`` listed unbound) is no keyword argument.
    return {p.name: p.default for p in params if p.name != "in_channels" and p.default is not p.empty}


def build_backbone(name: str, in_channels: int = 3, **kwargs: Any) -> Backbone:
    """Instantiate the registered backbone ``name`` for images with ``in_channels`` channels.

    Unknown keyword arguments, and values whose type does not match the default's, raise a
    one-line :class:`ConfigError` listing the backbone's valid arguments.

    Example:
        >>> net = build_backbone("resnet18", in_channels=1, small_stem=True, width=0.25)
        >>> net(torch.randn(8, 1, 28, 28)).shape  # (B, feature_dim)
        torch.Size([8, 128])
    """
    valid = backbone_kwargs(name)
    listing = ", ".join(f"{k}={v!r}" for k, v in valid.items())
    for key, value in kwargs.items():
        if key not in valid:
            raise ConfigError(f"backbone '{name}' has no argument '{key}'; valid arguments: {listing}")
        if not _type_matches(value, valid[key]):
            raise ConfigError(
                f"backbone '{name}' argument {key}={value!r} must be a {type(valid[key]).__name__} "
                f"(default {valid[key]!r})"
            )
    if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
        raise ConfigError(f"in_channels={in_channels!r} must be a positive integer (1 for grayscale, 3 for RGB)")
    return _factory(name)(in_channels=in_channels, **kwargs)


PREFIX_PLACEHOLDER = "NAME"
"""What follows the prefix in a prefix backbone's registered name, ``"timm:NAME"``."""


def _factory(name: str) -> Callable[..., Backbone]:
    """The factory of ``name``; for ``"<prefix>:<model>"`` the prefix's factory with ``<model>`` bound."""
    prefix, separator, model = name.partition(":")
    template = f"{prefix}:{PREFIX_PLACEHOLDER}"
    if separator and name != template and template in BACKBONES:
        if not model:
            raise ConfigError(f"backbone '{name}' names no model after '{prefix}:' (e.g. {prefix}:resnet50)")
        return functools.partial(BACKBONES.get(template), model)
    return BACKBONES.get(name)


def _type_matches(value: object, default: object) -> bool:
    """YAML/CLI values must have the default's type; an int is accepted where a float is expected."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if default is None:
        return True
    return isinstance(value, type(default))
