"""``selfsup embed``: features of every image of a folder, one row per image, resumable."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Run the encoder of CHECKPOINT over every image of a folder and write one row per image: its
path relative to the folder (and its class where the folder has class sub-folders) in
OUTPUT.csv, its feature vector in OUTPUT.npy (row i = image i), and with --format parquet both
in OUTPUT.parquet (needs pyarrow). Images are resized as for evaluation, at the resolution the
encoder was trained at. Work is done in chunks written atomically to OUTPUT.chunks/: run the
same command again after an interruption and it continues where it stopped.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("embed", help="write the features of every image of a folder (npy + csv, or parquet)",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a .ckpt from `selfsup train`, or an exported encoder")
    p.add_argument("--data", required=True, help="folder:PATH (class sub-folders give labels; any depth)")
    p.add_argument("--output", required=True, help="OUTPUT, OUTPUT.npy or OUTPUT.parquet")
    p.add_argument("--format", choices=("npy", "parquet"), default="npy",
                   help="npy: OUTPUT.npy + OUTPUT.csv; parquet: also OUTPUT.parquet (needs pyarrow)")
    p.add_argument("--image-size", type=int, help="input resolution (default: the training views' size)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--chunk-size", type=int, default=4096, help="images per resumable chunk")
    p.add_argument("--num-workers", type=int, default=0, help="image-decoding processes")
    p.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda, cuda:1 …")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from selfsup.data import FolderDataset, load_dataset
    from selfsup.errors import ConfigError, DataError
    from selfsup.evaluation import load_encoder
    from selfsup.export.embeddings import write_embeddings
    from selfsup.export.metadata import stored_metadata
    from selfsup.transforms.eval import eval_transform

    if not args.data.startswith("folder:"):
        raise DataError(f"--data {args.data}: selfsup embed reads a folder of images, give folder:PATH")
    dataset = load_dataset(args.data, "train")
    if not isinstance(dataset, FolderDataset):
        raise DataError(f"--data {args.data} is not a folder of images")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    loaded = load_encoder(args.checkpoint)
    takes = getattr(loaded.encoder, "in_channels", loaded.in_channels)
    if takes != dataset.info.num_channels:
        raise ConfigError(f"the encoder takes {takes}-channel images but the images of {args.data} load with "
                          f"{dataset.info.num_channels}")
    meta = stored_metadata(args.checkpoint)
    config = meta.get("config") or loaded.config or {}
    image_size = args.image_size or (config.get("views") or {}).get("image_size") or dataset.info.image_size
    info = dataset.info
    trained_on = meta.get("dataset_info") or {}
    if trained_on.get("mean") and len(trained_on["mean"]) == info.num_channels:  # normalise as in training
        info = dataclasses.replace(info, mean=tuple(trained_on["mean"]), std=tuple(trained_on["std"]))
    identity = {"encoder": loaded.source, "data": args.data, "num_images": len(dataset), "image_size": image_size,
                "mean": list(info.mean), "std": list(info.std)}
    result = write_embeddings(loaded.encoder.to(device), dataset, eval_transform(info, image_size), args.output,
                              identity, chunk_size=args.chunk_size, batch_size=args.batch_size,
                              num_workers=args.num_workers, device=device, output_format=args.format,
                              progress=not args.no_progress)
    print(f"{result.num_images} images on {device}: features {result.features}, rows {result.table}")
    return 0
