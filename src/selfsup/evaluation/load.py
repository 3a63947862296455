"""Load the encoder to evaluate: from a training checkpoint, an exported file, or random init."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import nn

from selfsup.backbones import build_backbone
from selfsup.errors import ConfigError
from selfsup.io import atomic_torch_save, load_torch_file

RANDOM = "random"
ENCODER_FORMAT = "selfsup-encoder/1"
EXPORT_FORMAT = "selfsup-export/1"  # the JSON beside `selfsup export`'s files (selfsup.export)
_BACKBONE_PREFIX = "method.backbone."
_METHOD_PREFIX = "method."


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
    method: Optional[Dict[str, Any]] = None
    """For methods whose encoder is more than the backbone (CPC's patch grid, colorization's
    RGB -> L): ``{"name", "args", "dataset_info", "num_samples"}`` to rebuild it."""


def _wraps_backbone(method_name: str) -> bool:
    """Whether the method's :meth:`~selfsup.methods.Method.encoder` is more than its backbone."""
    from selfsup.methods import METHODS, Method

    return METHODS.get(method_name).encoder is not Method.encoder


def _method_encoder(spec: Dict[str, Any], backbone_name: str, backbone_args: Dict[str, Any],
                    state: Optional[Dict[str, Any]] = None, state_is_encoder: bool = False) -> nn.Module:
    """Rebuild the method of ``spec`` around a new backbone, load ``state``, return its encoder."""
    from selfsup.data import DatasetInfo
    from selfsup.methods import DataSpec, build_backbone_for, build_method

    info = DatasetInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["dataset_info"].items()})
    backbone = build_backbone_for(spec["name"], backbone_name, backbone_args, info.num_channels, spec["args"])
    method = build_method(spec["name"], backbone, spec["args"], DataSpec(info, spec.get("num_samples", 0)))
    if state is not None:
        (method.encoder() if state_is_encoder else method).load_state_dict(state)
    return method.encoder()


def load_encoder(
    checkpoint: str,
    backbone: Optional[str] = None,
    backbone_args: Optional[Dict[str, Any]] = None,
    in_channels: int = 3,
    seed: int = 0,
    method: Optional[Dict[str, Any]] = None,
) -> LoadedEncoder:
    """Return the encoder stored in ``checkpoint`` (a ``selfsup train`` checkpoint or a file
    from :func:`export_encoder`), or — for ``checkpoint="random"`` — a randomly initialised
    ``backbone`` seeded with ``seed``: the floor any pre-training must beat. ``method`` (the
    :attr:`LoadedEncoder.method` of a trained encoder) makes the floor the same kind of encoder."""
    if checkpoint == RANDOM:
        if backbone is None:
            raise ConfigError("--checkpoint random needs --backbone NAME (see `selfsup backbones`)")
        torch.manual_seed(seed)
        args = dict(backbone_args or {})
        if method is not None:
            encoder = _method_encoder(method, backbone, args)
        else:
            encoder = build_backbone(backbone, in_channels=in_channels, **args)
        return LoadedEncoder(encoder, backbone, args, in_channels,
                             # The method's args are part of the name: they decide what its encoder is
                             # (jigsaw's tiles or whole images), so cached floor features must not mix.
                             f"random:{backbone}:{args}:{in_channels}:{seed}:"
                             f"{method and (method['name'], sorted(method.get('args', {}).items()))}",
                             method=method)

    path = Path(checkpoint)
    if not path.is_file():
        raise ConfigError(f"checkpoint '{path}' does not exist (give a .ckpt from `selfsup train`, an exported encoder, or 'random')")
    if path.suffix == ".safetensors":
        return _load_safetensors_export(path)
    stored = load_torch_file(path, "a selfsup checkpoint or exported encoder")
    source = f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}"
    if isinstance(stored, dict) and stored.get("format") == ENCODER_FORMAT:
        name, args, channels = stored["backbone"], stored["backbone_args"], stored["in_channels"]
        state, config, spec = stored["state_dict"], stored.get("config"), stored.get("method")
        if spec is not None:
            encoder = _method_encoder(spec, name, args, state, state_is_encoder=True)
            return LoadedEncoder(encoder, name, dict(args), channels, source, config, spec)
    elif isinstance(stored, dict) and "selfsup" in stored and "state_dict" in stored:
        meta = stored["selfsup"]
        config = meta["config"]
        name, args = config["backbone"], config["backbone_args"]
        channels = meta["dataset_info"]["num_channels"]
        if _wraps_backbone(config["method"]):
            spec = {"name": config["method"], "args": config["method_args"],
                    "dataset_info": meta["dataset_info"], "num_samples": meta.get("num_samples", 0)}
            state = {k[len(_METHOD_PREFIX):]: v for k, v in stored["state_dict"].items() if k.startswith(_METHOD_PREFIX)}
            encoder = _method_encoder(spec, name, args, state)
            return LoadedEncoder(encoder, name, dict(args), channels, source, config, spec)
        state = {k[len(_BACKBONE_PREFIX):]: v for k, v in stored["state_dict"].items() if k.startswith(_BACKBONE_PREFIX)}
    else:
        raise ConfigError(f"'{path}' is neither a selfsup training checkpoint nor an exported encoder")
    encoder = build_backbone(name, in_channels=channels, **args)
    encoder.load_state_dict(state)
    return LoadedEncoder(encoder, name, dict(args), channels, source, config)


def _load_safetensors_export(path: Path) -> LoadedEncoder:
    """An encoder from ``selfsup export`` (safetensors with selfsup's keys): the weights, rebuilt
    as the JSON beside them (``<name>.json``, or a Hub folder's ``config.json``) says."""
    import json

    from safetensors.torch import load_file

    sidecar = path.with_suffix(".json") if path.with_suffix(".json").is_file() else path.parent / "config.json"
    if not sidecar.is_file():
        raise ConfigError(f"'{path}' has no {path.with_suffix('.json').name} beside it (written by `selfsup export`) "
                          "to say how to rebuild the encoder")
    stored = json.loads(sidecar.read_text())
    stored = stored.get("selfsup", stored)  # a Hub folder's config.json holds selfsup's config under "selfsup"
    if stored.get("format") != EXPORT_FORMAT:
        raise ConfigError(f"'{sidecar}' is not a selfsup export config (format {stored.get('format')!r}, "
                          f"expected {EXPORT_FORMAT!r})")
    if stored.get("library"):
        library = stored["library"]["name"]
        raise ConfigError(f"'{path}' holds {library} weights; load them with {library}: {stored.get('load')}")
    name, args, channels, spec = stored["backbone"], stored["backbone_args"], stored["in_channels"], stored.get("method_spec")
    state = load_file(str(path))
    source = f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}"
    config = stored.get("training_config")
    if spec is not None:
        encoder = _method_encoder(spec, name, args, state, state_is_encoder=True)
    else:
        encoder = build_backbone(name, in_channels=channels, **args)
        encoder.load_state_dict(state)
    return LoadedEncoder(encoder, name, dict(args), channels, source, config, spec)


def export_encoder(loaded: LoadedEncoder, path: str | Path) -> Path:
    """Write the encoder alone (weights + how to rebuild it), for use outside selfsup::

        enc = selfsup.io.load_torch_file(path, "an encoder"); model = selfsup.backbones.build_backbone(enc["backbone"],
              in_channels=enc["in_channels"], **enc["backbone_args"]); model.load_state_dict(enc["state_dict"])

    When the encoder wraps the backbone (``enc["method"]`` is set), ``load_encoder(path)`` rebuilds it.
    The file holds only tensors, containers, numbers and strings: it loads weights-only.
    """
    payload = {
        "format": ENCODER_FORMAT,
        "backbone": loaded.backbone,
        "backbone_args": loaded.backbone_args,
        "in_channels": loaded.in_channels,
        "feature_dim": getattr(loaded.encoder, "feature_dim", None),
        "state_dict": loaded.encoder.state_dict(),
        "config": loaded.config,
        "method": loaded.method,
    }
    atomic_torch_save(payload, path)
    return Path(path)
