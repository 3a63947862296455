"""``selfsup curate``: select the images of an uncurated folder that resemble a small curated set.

DINOv2's curation pipeline (Oquab et al. 2023, Sec. 3) with any trained encoder: embed, remove
near-duplicates, retrieve the nearest images of each curated one; the result is a file list::

    selfsup curate --checkpoint runs/dino/last.ckpt --uncurated folder:/data/pool \\
        --curated /data/seeds --per-query 4 --dedup-threshold 0.95 --output selected.txt
"""

from __future__ import annotations

import argparse

from selfsup.errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("curate", help="pick the uncurated images nearest to a curated set (DINOv2 curation)",
                              description="DINOv2's curation (Oquab et al. 2023, Sec. 3) with any trained encoder: embed "
                              "both sets, remove near-duplicates of the uncurated pool, and keep the pool images "
                              "nearest to each curated one; writes the selected file list.")
    p.add_argument("--checkpoint", required=True, help="a .ckpt from `selfsup train`, an exported encoder, or 'random'")
    p.add_argument("--uncurated", required=True, help="the pool to select from: folder:PATH or a directory")
    p.add_argument("--curated", required=True, help="directory of curated (query) images: folder:PATH or a directory")
    p.add_argument("--per-query", type=int, default=None,
                   help="keep the K nearest uncurated images of each curated one (default 4 unless --similarity)")
    p.add_argument("--similarity", type=float, default=None,
                   help="keep uncurated images with cosine similarity >= this to some curated image")
    p.add_argument("--dedup-threshold", type=float, default=0.95,
                   help="uncurated images more similar than this are near-duplicates; one per group is kept "
                        "(a value above 1 turns deduplication off)")
    p.add_argument("--output", default="selected.txt", help="file list to write, one absolute path per line")
    p.add_argument("--image-size", type=int, help="side of the images fed to the encoder (default: its training size)")
    p.add_argument("--backbone", help="architecture for --checkpoint random (default: the CPU default)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_curate)


def cmd_curate(args: argparse.Namespace) -> int:
    from selfsup.apps.curation import curate, image_folder, training_info, write_file_list
    from selfsup.config import DEFAULT_BACKBONE
    from selfsup.evaluation import load_encoder

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size} must be a positive integer")
    per_query = args.per_query if args.per_query is not None or args.similarity is not None else 4
    uncurated, curated = image_folder(args.uncurated), image_folder(args.curated)
    loaded = load_encoder(args.checkpoint, args.backbone or DEFAULT_BACKBONE,
                          in_channels=uncurated.info.num_channels)
    info = training_info(args.checkpoint)
    dedup = args.dedup_threshold if args.dedup_threshold <= 1.0 else None
    result = curate(loaded.encoder, uncurated, curated, per_query=per_query, threshold=args.similarity,
                    dedup_threshold=dedup, info=info, image_size=args.image_size, batch_size=args.batch_size,
                    device=args.device)
    path = write_file_list(result.selected, args.output)
    print(f"selected {len(result.selected)} of {result.num_uncurated} uncurated images for {result.num_queries} "
          f"curated ones ({result.duplicates_removed} near-duplicates removed) -> {path}")
    return 0
