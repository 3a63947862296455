"""``selfsup views``: a PNG grid of the augmented views a method trains on."""

from __future__ import annotations

import argparse
from typing import Any, Dict, List

from selfsup.config import make_config, parse_override, recipe_path


def add_parser(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("views", help="save a PNG grid of augmented views: see what the model sees",
                       description="Save a PNG grid of the augmented views a method trains on (one row per image: "
                       "the original, then its views), from the packaged recipe for --data/--method or --config, "
                       "with --set overriding view options. Check the augmentations before a long run.")
    v.add_argument("--method", default="simclr")
    v.add_argument("--data", default="fashion-mnist")
    v.add_argument("--data-dir")
    v.add_argument("--num-images", type=int, default=8)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--config", action="append", default=[], help="recipe whose views to show (default: the packaged one)")
    v.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="view option, e.g. crop_scale=[0.2,1.0]")
    v.add_argument("--cell-size", type=int, help="pixel size of each picture in the grid (default: max(96, crop size))")
    v.add_argument("--output", default="views.png")
    v.set_defaults(func=cmd_views)


def cmd_views(args: argparse.Namespace) -> int:
    from selfsup.data import load_dataset
    from selfsup.engine import resolve_views
    from selfsup.transforms import MultiViewTransform, save_view_grid

    # The same views training would use: the recipe for this data/method (or --config), then --set.
    files = list(args.config) or [p for p in [recipe_path(args.data, args.method)] if p is not None]
    overrides: List[Dict[str, Any]] = [{"method": args.method, "data": args.data}]
    overrides += [{"views": parse_override(s)} for s in args.set]
    config = make_config(files=files, overrides=overrides)
    dataset = load_dataset(args.data, "train", args.data_dir)
    transform = MultiViewTransform(resolve_views(config), dataset.info)
    cell = args.cell_size or max(96, transform.global_size)
    path = save_view_grid(dataset, transform, args.output, num_images=args.num_images, seed=args.seed, cell_size=cell)
    print(path)
    return 0
