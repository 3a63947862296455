"""What an exported encoder's JSON says about it: how to build it, what it takes, how it was
trained, and how well it did (the run's ``eval.json``, when it evaluated this checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from selfsup.evaluation import LoadedEncoder
from selfsup.evaluation.load import EXPORT_FORMAT
from selfsup.io import FileReadError, UnsafeFileError, load_torch_file

EVAL_REPORT = "eval.json"  # written beside the checkpoint by `selfsup train`
CROP_FRACTION, LARGE = 0.875, 128  # as selfsup.transforms.eval: ImageNet-style crop from 128 pixels on


def stored_metadata(checkpoint: str) -> Dict[str, Any]:
    """``{"config", "dataset_info"}`` recorded in a training checkpoint or an exported encoder, as
    far as they are there. Tensors are memory-mapped, not read; nothing in the file runs."""
    path = Path(checkpoint)
    if path.suffix == ".safetensors":
        sidecar = path.with_suffix(".json")
        stored = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        return {"config": stored.get("training_config"), "dataset_info": stored.get("dataset_info")}
    try:
        stored = load_torch_file(path, "a selfsup checkpoint or exported encoder", mmap=True)
    except UnsafeFileError:
        raise
    except FileReadError:
        return {}
    if isinstance(stored, dict) and "selfsup" in stored:
        return {"config": stored["selfsup"].get("config"), "dataset_info": stored["selfsup"].get("dataset_info")}
    if isinstance(stored, dict):  # an exported selfsup-encoder/1 file
        return {"config": stored.get("config"), "dataset_info": (stored.get("method") or {}).get("dataset_info")}
    return {}


def eval_numbers(checkpoint: str, config: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The run's evaluation report if it is about this checkpoint (beside it, or in the run's output_dir)."""
    path = Path(checkpoint)
    candidates = [path.parent / EVAL_REPORT]
    if config and config.get("output_dir"):
        candidates.append(Path(config["output_dir"]) / EVAL_REPORT)
    for report_path in candidates:
        if not report_path.is_file():
            continue
        report = json.loads(report_path.read_text())
        if Path(str(report.get("checkpoint", ""))).name == path.name:
            return {k: report[k] for k in ("data", "protocols", "trained", "random_init", "pixels") if k in report}
    return None


def input_spec(loaded: LoadedEncoder, meta: Dict[str, Any]) -> Dict[str, Any]:
    """Input size ``[C, S, S]``, normalisation and centre-crop fraction of the images the encoder takes."""
    config = meta.get("config") or loaded.config or {}
    info = meta.get("dataset_info") or (loaded.method or {}).get("dataset_info") or {}
    size = ((config.get("views") or {}).get("image_size") or loaded.backbone_args.get("image_size")
            or info.get("image_size") or 224)
    channels = getattr(loaded.encoder, "in_channels", loaded.in_channels)
    mean: Optional[List[float]] = list(info["mean"]) if info.get("mean") else None
    std: Optional[List[float]] = list(info["std"]) if info.get("std") else None
    return {"input_size": [int(channels), int(size), int(size)], "mean": mean, "std": std,
            "crop_pct": CROP_FRACTION if size >= LARGE else 1.0, "interpolation": "bilinear"}


def export_config(loaded: LoadedEncoder, checkpoint: str, meta: Dict[str, Any], export_format: str, weights: str,
                  library: Optional[Dict[str, Any]], load: str) -> Dict[str, Any]:
    """The JSON written beside an export (``<name>.json``, or in ``config.json`` of a Hub folder);
    ``meta`` is :func:`stored_metadata` of ``checkpoint``."""
    from selfsup import __version__

    config = meta.get("config") or loaded.config
    training = None
    if config:
        training = {k: config.get(k) for k in ("method", "method_args", "data", "epochs", "batch_size", "seed")}
        training["image_size"] = (config.get("views") or {}).get("image_size")
    return {
        "format": EXPORT_FORMAT,
        "export_format": export_format,
        "weights": weights,
        "backbone": loaded.backbone,
        "backbone_args": loaded.backbone_args,
        "in_channels": loaded.in_channels,
        "feature_dim": getattr(loaded.encoder, "feature_dim", None),
        **input_spec(loaded, meta),
        "library": library,
        "method": (config or {}).get("method") or (loaded.method or {}).get("name"),
        "method_spec": loaded.method,
        "training": training,
        "eval": eval_numbers(checkpoint, config),
        "dataset_info": meta.get("dataset_info"),
        "training_config": config,
        "load": load,
        "selfsup_version": __version__,
    }
