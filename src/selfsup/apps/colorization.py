"""Colour pictures with a trained colorization model (Zhang et al., "Colorful Image Colorization", ECCV 2016).

A ``colorization`` or ``split-brain`` method predicts a distribution over quantised ab colours per
pixel from the lightness L; :meth:`colorize` of the method takes its annealed mean (Eq. 5) and
joins it with the image's own L. This module loads such a method from a ``selfsup train``
checkpoint (:func:`load_method`, also used by ``selfsup track`` for video colorization) and
colours image files (:func:`colorize_images`); ``selfsup colorize``
(:mod:`selfsup.commands.colorize`) is its command line.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor, to_pil_image

from selfsup.errors import ConfigError, DataError
from selfsup.io import load_torch_file

COLORIZING_METHODS = ("colorization", "split-brain")
CHECKPOINT_KEY = "selfsup"  # where `selfsup train` checkpoints keep their config (engine.module.CHECKPOINT_KEY)


def load_method(checkpoint: str | Path, expected: Sequence[str], command: str) -> Tuple[Any, Dict[str, Any]]:
    """The trained method of a ``selfsup train`` checkpoint (heads included), in eval mode, and its meta.

    Raises a one-line ConfigError for a missing file, an exported encoder (which has no heads) or
    a checkpoint of a method not in ``expected``.
    """
    from selfsup.data import DatasetInfo
    from selfsup.methods import DataSpec, build_backbone_for, build_method

    path = Path(checkpoint)
    if not path.is_file():
        raise ConfigError(f"checkpoint '{path}' does not exist (give a .ckpt written by `selfsup train`)")
    stored = load_torch_file(path, "a selfsup training checkpoint")
    if not isinstance(stored, dict) or CHECKPOINT_KEY not in stored or "state_dict" not in stored:
        kind = "an exported encoder (no prediction head)" if isinstance(stored, dict) and "format" in stored else \
            "not a selfsup training checkpoint"
        raise ConfigError(f"'{path}' is {kind}; `selfsup {command}` needs the last.ckpt of a "
                          f"`selfsup train --method {expected[0]}` run")
    meta = stored[CHECKPOINT_KEY]
    config = meta["config"]
    if config["method"] not in expected:
        raise ConfigError(f"'{path}' was trained with method '{config['method']}'; `selfsup {command}` needs a "
                          f"checkpoint of {' or '.join(expected)}")
    fields = {f.name for f in dataclasses.fields(DatasetInfo)}
    info = DatasetInfo(**{k: tuple(v) if isinstance(v, list) else v
                          for k, v in meta["dataset_info"].items() if k in fields})
    backbone = build_backbone_for(config["method"], config["backbone"], config["backbone_args"], info.num_channels,
                                  config["method_args"])
    method = build_method(config["method"], backbone, config["method_args"], DataSpec(info, meta.get("num_samples", 0)))
    state = {k[len("method."):]: v for k, v in stored["state_dict"].items() if k.startswith("method.")}
    method.load_state_dict(state)
    return method.eval(), meta


def training_size(meta: Dict[str, Any]) -> int:
    """The side length the model was trained at: the views' ``image_size``, else the dataset's."""
    return int(meta["config"].get("views", {}).get("image_size") or meta["dataset_info"]["image_size"])


def input_images(source: Path) -> list[Path]:
    """``source`` itself, or every image file below the folder ``source`` (sorted)."""
    from selfsup.data.folder import EXTENSIONS

    if source.is_file():
        return [source]
    if not source.is_dir():
        raise DataError(f"--input {source} is neither an image file nor a folder")
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(source).parts))
    if not files:
        raise DataError(f"no images ({', '.join(EXTENSIONS)}) found in {source}")
    return files


def network_size(height: int, width: int, side: int) -> Tuple[int, int]:
    """Resize so the shorter side is ``side``, keeping the aspect ratio."""
    scale = side / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def colorize_images(method: Any, source: Path, output: Path, side: int, temperature: Optional[float] = None,
                    device: str = "cpu") -> List[Path]:
    """Colour ``source`` (an image, or every image below a folder) with ``method`` at a network
    input whose shorter side is ``side``; write ``<output>/<relative path>.png``; return the inputs.

    ``temperature``: annealed-mean T (None: the method's own).
    """
    files = input_images(source)
    for path in files:
        try:
            with Image.open(path) as image:
                rgb = pil_to_tensor(image.convert("RGB")).float().div_(255).unsqueeze(0).to(device)
        except (OSError, SyntaxError, ValueError) as e:
            raise DataError(f"cannot read image {path}: {e}".replace("\n", " ")) from e
        coloured = method.colorize(rgb, temperature, network_size(rgb.shape[-2], rgb.shape[-1], side))
        relative = path.relative_to(source) if source.is_dir() else Path(path.name)
        target = (output / relative).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        to_pil_image(coloured[0].cpu()).save(target)
    return files


__all__ = ["COLORIZING_METHODS", "colorize_images", "input_images", "load_method", "network_size", "training_size"]
