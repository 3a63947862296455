"""``selfsup data check``: decode every image of a folder before training, in parallel.

    selfsup data check folder:/data/photos --workers 8 --output unreadable.txt

Each file is read by the decoder training uses (:func:`selfsup.data.images.open_image`), so the
files listed are exactly those a run would skip (``on_bad_image=skip``) or stop at (``error``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from selfsup.errors import ConfigError, DataError

EXIT_ALL_READABLE, EXIT_SOME_UNREADABLE = 0, 1


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="check a dataset's files before training (selfsup data check folder:PATH)",
                              description="Tools for the files of a dataset. `selfsup data check folder:PATH` decodes "
                              "every image in parallel and lists the ones training would skip (or stop at, with "
                              "on_bad_image=error), without training.")
    actions = p.add_subparsers(dest="data_command", required=True)
    c = actions.add_parser(
        "check", help="decode every image of folder:PATH in parallel and list the unreadable ones",
        description="Decode every image file below PATH (all splits and classes; the extensions and hidden-file "
                    "rules of folder:PATH) with the decoder training uses, and list the files that cannot be read: "
                    "truncated, empty, not images, or larger than the pixel limit "
                    "(selfsup.data.images.MAX_IMAGE_PIXELS).",
        epilog="exit status: 0 if every image is readable, 1 if some are not (listed on stdout), "
               "2 for a bad argument or a missing folder",
    )
    c.add_argument("data", metavar="folder:PATH", help="folder:PATH or frames:PATH, or a plain directory")
    c.add_argument("--workers", type=int, default=None,
                   help=f"decoding processes (default: this machine's cores, {os.cpu_count()})")
    c.add_argument("--output", help="also write the unreadable files there, one 'path<TAB>reason' line each "
                                    "(the format of a run's skipped.txt)")
    c.set_defaults(func=cmd_data_check)


def cmd_data_check(args: argparse.Namespace) -> int:
    from selfsup.data.catalog import FOLDER_PREFIX, FRAMES_PREFIX
    from selfsup.data.images import find_unreadable, list_images

    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers {args.workers} must be a positive integer")
    path = args.data
    for prefix in (FOLDER_PREFIX, FRAMES_PREFIX):
        if path.startswith(prefix):
            path = path[len(prefix):]
    root = Path(path).expanduser()
    if not path or not root.is_dir():
        raise DataError(f"image folder '{path}' does not exist; use selfsup data check folder:/path/to/images")
    files = list_images(root)
    if not files:
        raise DataError(f"no image files found below {root}")
    bar = _progress_bar(len(files))
    try:
        bad = find_unreadable(files, args.workers, bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    print(f"checked {len(files)} image files below {root}: {len(bad)} unreadable")
    for file, reason in bad:
        print(f"  {file}: {reason}")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text("".join(f"{file}\t{reason}\n" for file, reason in bad), encoding="utf-8")
    return EXIT_SOME_UNREADABLE if bad else EXIT_ALL_READABLE


def _progress_bar(total: int):
    """A tqdm bar on stderr (drawn on a terminal only), or None without tqdm."""
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm comes with lightning; without it, no bar
        return None
    bar = tqdm(total=total, unit="img", desc="decoding", file=sys.stderr, disable=None, leave=False)
    return bar
