"""Load the encoder to evaluate: from a training checkpoint, an exported file, or random init."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import nn

from selfsup.backbones import build_backbone
from selfsup.errors import ConfigError

RANDOM = "random"
ENCODER_FORMAT = "selfsup-encoder/1"
_BACKBONE_PREFIX = "method.backbone."


@dataclass
class LoadedEncoder:
    encoder: nn.Module
    backbone: str
    backbone_args: Dict[str, Any]
    in_channels: int
    source: str
    """'random' or the checkpoint path, with its size and mtime: a key for feature caches."""
    config: Optional[Dict[str, Any]] = None
    """The training config, when the encoder comes from a training checkpoint."""


def load_encoder(
    checkpoint: str,
    backbone: Optional[str] = None,
    backbone_args: Optional[Dict[str, Any]] = None,
    in_channels: int = 3,
    seed: int = 0,
) -> LoadedEncoder:
    """Return the backbone stored in ``checkpoint`` (a ``selfsup train`` checkpoint or a file
    from :func:`export_encoder`), or — for ``checkpoint="random"`` — a randomly initialised
    ``backbone`` seeded with ``seed``: the floor any pre-training must beat."""
    if checkpoint == RANDOM:
        if backbone is None:
            raise ConfigError("--checkpoint random needs --backbone NAME (see `selfsup backbones`)")
        torch.manual_seed(seed)
        args = dict(backbone_args or {})
        encoder = build_backbone(backbone, in_channels=in_channels, **args)
        return LoadedEncoder(encoder, backbone, args, in_channels, f"random:{backbone}:{args}:{in_channels}:{seed}")

    path = Path(checkpoint)
    if not path.is_file():
        raise ConfigError(f"checkpoint '{path}' does not exist (give a .ckpt from `selfsup train`, an exported encoder, or 'random')")
    stored = torch.load(path, map_location="cpu", weights_only=False)
    source = f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}"
    if isinstance(stored, dict) and stored.get("format") == ENCODER_FORMAT:
        name, args, channels = stored["backbone"], stored["backbone_args"], stored["in_channels"]
        state, config = stored["state_dict"], stored.get("config")
    elif isinstance(stored, dict) and "selfsup" in stored and "state_dict" in stored:
        config = stored["selfsup"]["config"]
        name, args = config["backbone"], config["backbone_args"]
        channels = stored["selfsup"]["dataset_info"]["num_channels"]
        state = {k[len(_BACKBONE_PREFIX):]: v for k, v in stored["state_dict"].items() if k.startswith(_BACKBONE_PREFIX)}
    else:
        raise ConfigError(f"'{path}' is neither a selfsup training checkpoint nor an exported encoder")
    encoder = build_backbone(name, in_channels=channels, **args)
    encoder.load_state_dict(state)
    return LoadedEncoder(encoder, name, dict(args), channels, source, config)


def export_encoder(loaded: LoadedEncoder, path: str | Path) -> Path:
    """Write the encoder alone (weights + how to rebuild it), for use outside selfsup::

        enc = torch.load(path); model = selfsup.backbones.build_backbone(enc["backbone"],
              in_channels=enc["in_channels"], **enc["backbone_args"]); model.load_state_dict(enc["state_dict"])
    """
    from selfsup.engine.checkpoint import atomic_torch_save  # the engine owns file writing

    payload = {
        "format": ENCODER_FORMAT,
        "backbone": loaded.backbone,
        "backbone_args": loaded.backbone_args,
        "in_channels": loaded.in_channels,
        "feature_dim": getattr(loaded.encoder, "feature_dim", None),
        "state_dict": loaded.encoder.state_dict(),
        "config": loaded.config,
    }
    atomic_torch_save(payload, path)
    return Path(path)
