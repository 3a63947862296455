"""``selfsup viz <kind>``: PNG pictures of an encoder (patch PCA, attention, t-SNE, retrieval) or of a run's curves."""

from __future__ import annotations

import argparse
from typing import Any, Dict, Tuple

from selfsup.errors import ConfigError

KINDS = {
    "pca": "patch features as RGB: PCA, background removed by the first component (DINOv2 Fig. 1); ViT or ResNet",
    "attention": "last-block CLS attention of each head (DINO Fig. 3); ViT only",
    "tsne": "2-D t-SNE map of the features, coloured by label",
    "retrieval": "nearest training images of test queries (green frame: same label, red: other)",
    "curves": "loss, learning rate, kNN / probe accuracy and RankMe of a run, from logs/metrics.csv",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("viz", help="save a PNG picture: pca, attention, tsne, retrieval, curves",
                              description="Save a PNG picture of an encoder (patch-feature PCA, ViT attention, "
                              "t-SNE of features, nearest-neighbour retrieval) or of a run's training curves; "
                              "`selfsup viz KIND --help` for each kind's options.")
    kinds = p.add_subparsers(dest="kind", required=True)
    for kind, help_text in KINDS.items():
        q = kinds.add_parser(kind, help=help_text, description=help_text)
        q.add_argument("--output", default=f"{kind}.png", help="PNG file to write")
        if kind == "curves":
            q.add_argument("--run", required=True, help="a run's --output-dir (or its logs/metrics.csv)")
            q.set_defaults(func=cmd_viz)
            continue
        q.add_argument("--checkpoint", required=True, help="a .ckpt from `selfsup train`, an exported encoder, or 'random'")
        q.add_argument("--data", default="fashion-mnist", help="dataset whose test images are shown")
        q.add_argument("--data-dir")
        q.add_argument("--backbone", help="architecture for --checkpoint random (default: the CPU default)")
        q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="backbone kwargs for random init")
        q.add_argument("--image-size", type=int, help="input resolution (default: the training views' size, else the dataset's)")
        q.add_argument("--seed", type=int, default=0, help="which images are drawn (and random init)")
        q.add_argument("--device", default="cpu")
        if kind in ("pca", "attention"):
            q.add_argument("--num-images", type=int, default=6)
            q.add_argument("--cell-size", type=int, default=112, help="pixel side of each picture")
        if kind == "pca":
            q.add_argument("--threshold", type=float, default=0.0,
                           help="foreground: first component / its std above this")
            q.add_argument("--no-background-removal", action="store_true", help="colour every patch by one PCA")
        if kind == "tsne":
            q.add_argument("--num-samples", type=int, default=1000, help="test images embedded (exact t-SNE is O(N^2))")
            q.add_argument("--perplexity", type=float, default=30.0)
            q.add_argument("--iterations", type=int, default=1000)
        if kind == "retrieval":
            q.add_argument("--num-queries", type=int, default=8)
            q.add_argument("--k", type=int, default=8, help="neighbours shown per query")
            q.add_argument("--bank-size", type=int, default=10000, help="training images searched")
            q.add_argument("--cell-size", type=int, default=64)
        q.set_defaults(func=cmd_viz)


def _encoder_and_data(args: argparse.Namespace) -> Tuple[Any, Any, Any]:
    """(loaded encoder, evaluation-transformed test split, dataset info)."""
    from selfsup.config import DEFAULT_BACKBONE, parse_override
    from selfsup.data import TransformDataset, load_dataset
    from selfsup.evaluation import load_encoder
    from selfsup.transforms import eval_transform

    test_set = load_dataset(args.data, "test", args.data_dir)
    backbone_args: Dict[str, Any] = {}
    for item in args.set:
        backbone_args.update(parse_override(item))
    loaded = load_encoder(args.checkpoint, args.backbone or DEFAULT_BACKBONE, backbone_args,
                          in_channels=test_set.info.num_channels, seed=args.seed)
    if loaded.in_channels != test_set.info.num_channels:
        raise ConfigError(f"the encoder takes {loaded.in_channels}-channel images but '{args.data}' has "
                          f"{test_set.info.num_channels}")
    size = args.image_size or (loaded.config or {}).get("views", {}).get("image_size")
    loaded.encoder.to(args.device).eval()
    return loaded, TransformDataset(test_set, eval_transform(test_set.info, size)), test_set.info


def cmd_viz(args: argparse.Namespace) -> int:
    from selfsup import viz

    if args.kind == "curves":
        print(viz.save_training_curves(args.run, args.output))
        return 0
    loaded, data, info = _encoder_and_data(args)
    encoder = loaded.encoder
    if args.kind in ("pca", "attention"):
        from selfsup.viz.common import pick_images

        images, _ = pick_images(data, args.num_images, args.seed)
        images = images.to(args.device)
        if args.kind == "pca":
            path = viz.save_patch_pca(encoder, images, info, args.output, args.cell_size, args.threshold,
                                      not args.no_background_removal)
        else:
            path = viz.save_attention_maps(encoder, images, info, args.output, args.cell_size)
    elif args.kind == "tsne":
        path = _tsne(args, encoder, data, info)
    else:
        path = _retrieval(args, encoder, data, info)
    print(path)
    return 0


def _subset(data: Any, size: int, seed: int) -> Any:
    import torch
    from torch.utils.data import Subset

    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[: min(size, len(data))]
    return Subset(data, order.sort().values.tolist())


def _tsne(args: argparse.Namespace, encoder: Any, data: Any, info: Any) -> Any:
    from selfsup import viz
    from selfsup.evaluation import extract_features

    features, labels = extract_features(encoder, _subset(data, args.num_samples, args.seed), device=args.device)
    points = viz.tsne(features, perplexity=min(args.perplexity, (len(features) - 1) / 3), iterations=args.iterations,
                      seed=args.seed)
    return viz.save_embedding_map(points, labels, args.output, info.classes,
                                  title=f"t-SNE of {len(features)} {info.name} test images")


def _retrieval(args: argparse.Namespace, encoder: Any, data: Any, info: Any) -> Any:
    import torch

    from selfsup import viz
    from selfsup.data import TransformDataset, load_dataset
    from selfsup.evaluation import extract_features
    from selfsup.viz.common import pick_images

    train_set = load_dataset(args.data, "train", args.data_dir)
    transform = data.transform  # the same evaluation transform as the queries
    bank_data = _subset(TransformDataset(train_set, transform), args.bank_size, args.seed)
    bank, bank_labels = extract_features(encoder, bank_data, device=args.device)
    query_images, query_labels = pick_images(data, args.num_queries, args.seed)
    with torch.no_grad():
        query_features = encoder(query_images.to(args.device)).float().cpu()
    _, indices = viz.nearest_neighbours(query_features, bank, args.k)  # (Q, k)
    neighbours = torch.stack([torch.stack([bank_data[int(i)][0] for i in row]) for row in indices])
    return viz.save_retrieval_grid(query_images, query_labels, neighbours, bank_labels[indices], info, args.output,
                                   args.cell_size)
