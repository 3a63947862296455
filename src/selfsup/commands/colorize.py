"""``selfsup colorize``: colour images with a trained colorization (or split-brain) model.

    selfsup colorize --checkpoint runs/colorization/last.ckpt --input photos/ --output coloured/

Each input image (a file, or every image below a folder) is converted to Lab; the network sees
its lightness (resized to the training resolution), predicts a distribution over ab bins per
pixel, and the annealed mean of that distribution (Zhang et al. 2016, Eq. 5, T = 0.38 unless
``--temperature``) is upsampled to the image's size and joined with its own L. The result is
written as ``<output>/<relative path>.png``. The code is :mod:`selfsup.apps.colorization`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from selfsup.errors import ConfigError


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
    from selfsup.apps.colorization import COLORIZING_METHODS, colorize_images, load_method, training_size

    if args.temperature is not None and args.temperature <= 0:
        raise ConfigError(f"--temperature {args.temperature} must be > 0 (the paper uses 0.38)")
    method, meta = load_method(args.checkpoint, COLORIZING_METHODS, "colorize")
    method.to(args.device)
    side = args.image_size or training_size(meta)
    source, output = Path(args.input).expanduser(), Path(args.output).expanduser()
    files = colorize_images(method, source, output, side, args.temperature, args.device)
    print(f"coloured {len(files)} image{'s' if len(files) != 1 else ''} with {meta['config']['method']} "
          f"({side}-pixel network input) into {output}")
    return 0
