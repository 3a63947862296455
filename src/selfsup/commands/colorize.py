"""``selfsup colorize``: colour images with a trained colorization (or split-brain) model.

    selfsup colorize --checkpoint runs/colorization/last.ckpt --input photos/ --output coloured/

Each input image (a file, or every image below a folder) is converted to Lab; the network sees
its lightness (resized to the training resolution), predicts a distribution over ab bins per
pixel, and the annealed mean of that distribution (Zhang et al. 2016, Eq. 5, T = 0.38 unless
``--temperature``) is upsampled to the image's size and joined with its own L. The result is
written as ``<output>/<relative path>.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple

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


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "colorize", help="colour images with a trained colorization or split-brain model",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="last.ckpt of a `selfsup train --method colorization` run")
    p.add_argument("--input", required=True, help="an image file or a folder of images (colour or grayscale)")
    p.add_argument("--output", required=True, help="folder for the coloured PNGs")
    p.add_argument("--temperature", type=float, help="annealed-mean T (default: the model's, 0.38 in the paper)")
    p.add_argument("--image-size", type=int, help="shorter side the network sees (default: the training size)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_colorize)


def cmd_colorize(args: argparse.Namespace) -> int:
    if args.temperature is not None and args.temperature <= 0:
        raise ConfigError(f"--temperature {args.temperature} must be > 0 (the paper uses 0.38)")
    method, meta = load_method(args.checkpoint, COLORIZING_METHODS, "colorize")
    method.to(args.device)
    side = args.image_size or training_size(meta)
    source, output = Path(args.input).expanduser(), Path(args.output).expanduser()
    files = input_images(source)
    for path in files:
        try:
            with Image.open(path) as image:
                rgb = pil_to_tensor(image.convert("RGB")).float().div_(255).unsqueeze(0).to(args.device)
        except (OSError, SyntaxError, ValueError) as e:
            raise DataError(f"cannot read image {path}: {e}".replace("\n", " ")) from e
        coloured = method.colorize(rgb, args.temperature, network_size(rgb.shape[-2], rgb.shape[-1], side))
        relative = path.relative_to(source) if source.is_dir() else Path(path.name)
        target = (output / relative).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        to_pil_image(coloured[0].cpu()).save(target)
    print(f"coloured {len(files)} image{'s' if len(files) != 1 else ''} with {meta['config']['method']} "
          f"({side}-pixel network input) into {output}")
    return 0
