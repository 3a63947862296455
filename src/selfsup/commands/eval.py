"""``selfsup eval PROTOCOL``: kNN, linear, few-label, fine-tuning or dense probe of an encoder; JSON out."""

from __future__ import annotations

import argparse
from typing import Any, Dict

from selfsup.commands import print_json
from selfsup.errors import SelfSupError

EVAL_PROTOCOLS = {
    "knn": "weighted kNN on frozen features (Wu et al. 2018); several --k from one similarity pass",
    "linear": "linear classifier on frozen features; several --lr are chosen on a held-out part of train",
    "fewshot": "linear probe (and kNN, optionally fine-tuning) on class-balanced label fractions of train",
    "finetune": "fine-tune encoder + linear head end to end (backbone lr = head lr x --backbone-lr-scale)",
    "dense": "linear segmentation probe on patch features / ResNet feature maps, mIoU",
}


def _gigabytes(text: str) -> float:
    """argparse type of --memory-budget-gb: refused before any data or encoder is loaded."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive number of GB")
    return value


def _add_finetune_options(q: argparse.ArgumentParser, prefix: str = "") -> None:
    q.add_argument(f"--{prefix}epochs", type=int, default=10, help="fine-tuning epochs")
    q.add_argument(f"--{prefix}lr", type=float, default=0.05,
                   help="head learning rate per 256 images (SimCLR App. B.5: 0.05 with SGD; ~1e-3 with adamw)")
    if prefix:  # otherwise the command's own --batch-size
        q.add_argument(f"--{prefix}batch-size", type=int, default=256, help="fine-tuning batch size")
    q.add_argument("--backbone-lr-scale", type=float, default=0.1, help="backbone lr = head lr x this")
    q.add_argument("--weight-decay", type=float, default=0.0)
    q.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd", help="sgd: Nesterov momentum 0.9")
    q.add_argument("--crop-scale", type=float, nargs=2, default=(0.5, 1.0), metavar=("MIN", "MAX"),
                   help="area range of the random resized crop")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate an encoder: kNN, linear, few-label, fine-tuning, dense; JSON out",
                       description="Evaluate a trained, exported or random encoder with one protocol "
                       "(`selfsup eval PROTOCOL --help` for its options) and print/write the result as JSON.")
    protocols = p.add_subparsers(dest="protocol", required=True)
    for name, help_text in EVAL_PROTOCOLS.items():
        q = protocols.add_parser(name, help=help_text, description=help_text)
        q.add_argument("--checkpoint", required=True, help="a .ckpt from `selfsup train`, an exported encoder, or 'random'")
        if name == "dense":
            q.add_argument("--data", required=True, help="segmentation folder: train/ and test/ (or val/), each with "
                           "images/ and masks/ (one-channel PNGs of class indices, 255 = ignore)")
        else:
            q.add_argument("--data", default="fashion-mnist", help="labelled dataset (needs train and test splits)")
            q.add_argument("--data-dir")
        q.add_argument("--backbone", help="architecture for --checkpoint random (default: the CPU default)")
        q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="backbone kwargs for random init, e.g. width=0.5")
        q.add_argument("--seed", type=int, default=0, help="random init, held-out split, label subsets, shuffling")
        q.add_argument("--image-size", type=int,
                       help="evaluation resolution (default: the training views' size, else the dataset's)")
        q.add_argument("--batch-size", type=int, default=16 if name == "dense" else 256 if name == "finetune" else 512)
        q.add_argument("--device", default="cpu")
        q.add_argument("--num-workers", type=int, default=0)
        q.add_argument("--output", help="JSON file to write")
        if name in ("knn", "linear", "fewshot"):
            q.add_argument("--cache-dir", help="cache frozen features here (computed once per encoder and data)")
            q.add_argument("--memory-budget-gb", type=_gigabytes, default=4.0,
                           help="largest feature array held in RAM; larger ones go to files in --cache-dir "
                           "(else $TMPDIR) and are read in chunks")
            q.add_argument("--no-progress", action="store_true", help="no progress bar of the feature extraction")
        if name in ("knn", "fewshot"):
            q.add_argument("--k", type=int, nargs="+", default=[200] if name == "knn" else [20],
                           help="neighbours (InstDisc: 200, DINO: 20); several give knn_top1_k<k> each, "
                           "knn_top1 is the first" if name == "knn"
                           else "neighbours of the kNN on each label subset (few labels: a small k)")
            q.add_argument("--temperature", type=float, default=0.1, help="vote weight exp(sim/T) (InstDisc: 0.1)")
        if name in ("linear", "fewshot"):
            q.add_argument("--epochs", type=int, default=100, help="epochs over the cached features")
            q.add_argument("--lr", type=float, nargs="+", default=[0.1],
                           help="learning rate; several: the best on a held-out part of train, retrained on all of it")
            q.add_argument("--val-fraction", type=float, default=0.1, help="held-out share of each class for --lr sweeps")
            q.add_argument("--no-batch-norm", action="store_true", help="no affine-free BatchNorm before the linear layer")
        if name == "fewshot":
            q.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1], help="label fractions, e.g. 0.01 0.1")
            q.add_argument("--finetune", action="store_true", help="also fine-tune on each label subset")
            _add_finetune_options(q, prefix="finetune-")
        if name == "finetune":
            _add_finetune_options(q)
            q.add_argument("--fraction", type=float, help="fine-tune on a class-balanced fraction of train only")
        if name == "dense":
            q.add_argument("--epochs", type=int, default=30, help="epochs of the segmentation probe")
            q.add_argument("--lr", type=float, default=0.1)
            q.add_argument("--num-classes", type=int, help="default: largest class index in the train masks + 1")
            q.add_argument("--no-batch-norm", action="store_true", help="no affine-free BatchNorm before the 1x1 conv")
        q.set_defaults(func=cmd_eval)


def _load_eval_encoder(args: argparse.Namespace, num_channels: int):
    from selfsup.config import DEFAULT_BACKBONE, parse_override
    from selfsup.evaluation import load_encoder

    backbone_args: Dict[str, Any] = {}
    for item in args.set:
        backbone_args.update(parse_override(item))
    loaded = load_encoder(args.checkpoint, args.backbone or DEFAULT_BACKBONE, backbone_args,
                          in_channels=num_channels, seed=args.seed)
    # An encoder that wraps its backbone says what it takes (video colorization trained on frame
    # pairs, 6 channels, but encodes one RGB frame).
    takes = getattr(loaded.encoder, "in_channels", loaded.in_channels)
    if takes != num_channels:
        raise SelfSupError(f"the encoder takes {takes}-channel images but '{args.data}' has {num_channels}")
    if args.image_size is None and loaded.config:  # the resolution the encoder was trained at
        args.image_size = loaded.config.get("views", {}).get("image_size")
    if args.device == "cpu":  # as in training, for every protocol: autotuned 3×3 convolutions, and the
        # allocator tuned for the large activations of feature extraction and fine-tuning (only now
        # that the inputs are known to be good: a refused file gets its one error line alone).
        from selfsup.ops import tune_cpu_allocator, use_winograd

        use_winograd(loaded.encoder, autotune=True)
        tune_cpu_allocator()
    return loaded


def _finetune_settings(args: argparse.Namespace, prefix: str = ""):
    from selfsup.evaluation.finetune import FinetuneSettings

    return FinetuneSettings(
        epochs=getattr(args, f"{prefix}epochs"), lr=getattr(args, f"{prefix}lr"),
        backbone_lr_scale=args.backbone_lr_scale, batch_size=getattr(args, f"{prefix}batch_size"),
        weight_decay=args.weight_decay, optimizer=args.optimizer, crop_scale=tuple(args.crop_scale),
        image_size=args.image_size, seed=args.seed, device=args.device, num_workers=args.num_workers)


def cmd_eval(args: argparse.Namespace) -> int:
    from selfsup.data import load_dataset
    from selfsup.evaluation import FeatureCache, evaluate_encoder
    from selfsup.evaluation.subsets import balanced_subset
    from selfsup.evaluation.suite import EvalSettings

    if args.protocol == "dense":
        return _cmd_eval_dense(args)
    train_set = load_dataset(args.data, "train", args.data_dir)
    if train_set.info.num_classes == 0 or train_set.labels is None:
        raise SelfSupError(f"dataset '{args.data}' has no labels; evaluation needs class sub-folders or a labelled dataset")
    test_set = load_dataset(args.data, "test", args.data_dir)
    loaded = _load_eval_encoder(args, train_set.info.num_channels)
    payload: Dict[str, Any] = {"checkpoint": args.checkpoint, "backbone": loaded.backbone, "data": args.data,
                               "protocol": args.protocol, "seed": args.seed}
    if args.protocol == "finetune":
        from selfsup.evaluation.finetune import finetune

        indices = None if args.fraction is None else balanced_subset(train_set.labels, args.fraction, args.seed).tolist()
        result = finetune(loaded.encoder, train_set, test_set, _finetune_settings(args), indices)
        payload.update({"finetune_top1": result.top1, "finetune_top5": result.top5, "epochs": result.epochs,
                        "lr": result.lr, "backbone_lr": result.backbone_lr, "num_train": result.num_train,
                        "epoch_losses": result.epoch_losses, "fraction": args.fraction})
        print_json(payload, args.output)
        return 0

    settings = EvalSettings(image_size=args.image_size, batch_size=args.batch_size, device=args.device,
                            num_workers=args.num_workers, seed=args.seed, memory_budget_gb=args.memory_budget_gb,
                            progress=not args.no_progress)
    if args.protocol in ("knn", "fewshot"):
        settings.knn_k, settings.knn_temperature = args.k[0], args.temperature
        if args.protocol == "knn" and len(args.k) > 1:
            settings.knn_ks = list(args.k)
    if args.protocol in ("linear", "fewshot"):
        settings.linear_epochs, settings.linear_lr, settings.linear_lrs = args.epochs, args.lr[0], list(args.lr)
        settings.linear_val_fraction = args.val_fraction
        settings.linear_batch_norm = not args.no_batch_norm
    if args.protocol == "fewshot":
        settings.fewshot_fractions = list(args.fractions)
    cache = FeatureCache(args.cache_dir) if args.cache_dir else None
    payload.update(evaluate_encoder(loaded.encoder, train_set, test_set, [args.protocol], settings, cache,
                                    loaded.source))
    if args.protocol == "fewshot" and args.finetune:
        from selfsup.evaluation.finetune import finetune

        for fraction in args.fractions:
            indices = balanced_subset(train_set.labels, fraction, args.seed).tolist()
            result = finetune(loaded.encoder, train_set, test_set, _finetune_settings(args, "finetune_"), indices)
            payload.update({f"fewshot{fraction:g}_finetune_top1": result.top1,
                            f"fewshot{fraction:g}_finetune_top5": result.top5})
    print_json(payload, args.output)
    return 0


def _cmd_eval_dense(args: argparse.Namespace) -> int:
    from selfsup.evaluation.dense import DenseSettings, dense_probe, load_segmentation

    train_set, test_set = load_segmentation(args.data, "train"), load_segmentation(args.data, "test")
    loaded = _load_eval_encoder(args, train_set.info.num_channels)
    settings = DenseSettings(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, image_size=args.image_size,
                             num_classes=args.num_classes, batch_norm=not args.no_batch_norm, seed=args.seed,
                             device=args.device)
    result = dense_probe(loaded.encoder, train_set, test_set, settings)
    print_json({"checkpoint": args.checkpoint, "backbone": loaded.backbone, "data": args.data, "protocol": "dense",
                 "miou": result.miou, "pixel_accuracy": result.pixel_accuracy,
                 "per_class_iou": {str(c): v for c, v in result.per_class_iou.items()},
                 "num_classes": result.num_classes, "image_size": result.image_size,
                 "feature_shape": list(result.feature_shape), "epochs": result.epochs,
                 "final_train_loss": result.train_losses[-1]}, args.output)
    return 0
