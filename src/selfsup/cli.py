"""The ``selfsup`` command line: train, eval, views, export, and what is registered.

Every user error ends in one line, ``selfsup: error: …``, and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from selfsup.errors import SelfSupError

RECIPES = Path(__file__).parent / "configs"


# --------------------------------------------------------------------------- helpers
def recipe_path(data: str, method: str) -> Optional[Path]:
    """The packaged recipe ``configs/<dataset>/<method>.yaml`` if there is one."""
    path = RECIPES / data.split(":")[0] / f"{method}.yaml"
    return path if path.is_file() else None


def _write_json(payload: Dict[str, Any], output: Optional[str], echo: bool = True) -> None:
    text = json.dumps(payload, indent=2, sort_keys=True)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{output}.tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, output)
    if echo:
        print(text)


def _percent(value: Optional[float]) -> str:
    return "   —  " if value is None else f"{100 * value:6.2f} %"


def format_report(report: Dict[str, Any], label: str) -> str:
    """A small table: the trained encoder beside the floors (random init, raw pixels) and the
    gain over the random-init floor."""
    trained, floor, pixels = report["trained"], report.get("random_init"), report.get("pixels")
    rows = [("metric", label, "random init (floor)", "raw pixels", "gain over random init")]
    for key, name in (("knn_top1", "kNN top-1"), ("linear_top1", "linear top-1")):
        if key not in trained:
            continue
        base = floor.get(key) if floor else None
        gain = f"{100 * (trained[key] - base):+.2f} pts" if base is not None else "—"
        rows.append((name, _percent(trained[key]), _percent(base), _percent(pixels.get(key) if pixels else None), gain))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


# --------------------------------------------------------------------------- train
def _train_parser(sub: argparse._SubParsersAction) -> None:
    from selfsup.config import config_help

    epilog = ["all config keys (override with --set KEY=VALUE; defaults shown, recipes may change them):"]
    for key, default, doc in config_help():
        epilog.append(f"  {key} = {default!r}")
        if doc:
            epilog.extend(textwrap.wrap(doc, 88, initial_indent="      ", subsequent_indent="      "))
    p = sub.add_parser(
        "train",
        help="pre-train an encoder (default: SimCLR on Fashion-MNIST, CPU-sized)",
        description="Pre-train an encoder with a self-supervised method, then report kNN and linear "
        "accuracy beside a randomly initialised backbone (the floor). Without --config the packaged "
        "recipe configs/<data>/<method>.yaml is used when one exists.",
        epilog="\n".join(epilog),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", action="append", default=[], help="YAML recipe(s), later ones win")
    p.add_argument("--method", help="method name (`selfsup methods`); default simclr")
    p.add_argument("--data", help="fashion-mnist | cifar10 | cifar100 | stl10 | folder:PATH")
    p.add_argument("--data-dir", help="where the dataset files are")
    p.add_argument("--backbone", help="backbone name (`selfsup backbones`)")
    p.add_argument("--epochs", type=int, help="training epochs (paper recipes: 100–1000)")
    p.add_argument("--batch-size", type=int, help="images per process per step (SimCLR: 256–4096)")
    p.add_argument("--output-dir", help="where checkpoints and logs go (default runs/<method>-<data>)")
    p.add_argument("--num-workers", type=int, help="data-loading processes")
    p.add_argument("--resume", action="store_true", help="continue the run in --output-dir from last.ckpt")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key, e.g. optim.lr=0.1")
    p.add_argument("--no-eval", action="store_true", help="skip the final kNN/linear evaluation")
    p.set_defaults(func=cmd_train)


def build_train_config(args: argparse.Namespace):
    from selfsup.config import make_config, parse_override
    from selfsup.engine import LAST_CHECKPOINT, read_checkpoint_config

    flags = {
        "method": args.method, "data": args.data, "data_dir": args.data_dir, "backbone": args.backbone,
        "epochs": args.epochs, "batch_size": args.batch_size, "output_dir": args.output_dir,
        "num_workers": args.num_workers,
    }
    flags = {k: v for k, v in flags.items() if v is not None}
    overrides = [flags] + [parse_override(s) for s in args.set]
    files = list(args.config)
    if not files:
        recipe = recipe_path(flags.get("data", "fashion-mnist"), flags.get("method", "simclr"))
        if recipe is not None:
            files = [recipe]
            if not args.resume:
                print(f"recipe: {recipe}", file=sys.stderr)
    config = make_config(files=files, overrides=overrides)
    if args.resume and (Path(config.output_dir) / LAST_CHECKPOINT).is_file():
        # The run's own config, from its checkpoint; options given now (e.g. --epochs) win.
        stored = read_checkpoint_config(Path(config.output_dir) / LAST_CHECKPOINT)["config"]
        config = make_config(base=stored, files=args.config, overrides=overrides)
    return config


def cmd_train(args: argparse.Namespace) -> int:
    from selfsup.engine import train

    config = build_train_config(args)
    result = train(config, resume=args.resume)
    print(f"trained {config.method} for {result.epochs} epochs ({result.steps} steps) in {result.seconds / 60:.1f} min; "
          f"checkpoint: {result.last_checkpoint}")
    if args.no_eval or not (config.eval.knn or config.eval.linear):
        return 0
    report = evaluate_run(config, result.last_checkpoint)
    if not report:
        return 0
    _write_json(report, str(Path(config.output_dir) / "eval.json"), echo=False)
    print(f"\nevaluation on {report['data']} (test split; kNN k={config.eval.knn_k}), "
          f"written to {Path(config.output_dir) / 'eval.json'}:")
    print(format_report(report, f"{config.method}, {result.epochs} epochs"))
    return 0


def evaluate_run(config, checkpoint: Path) -> Dict[str, Any]:
    """kNN + linear for the trained encoder and (optionally) the random-init floor."""
    from selfsup.data import SKIPPED_FILE, load_dataset, set_bad_image_policy
    from selfsup.evaluation import FeatureCache, evaluate_encoder, load_encoder
    from selfsup.evaluation.suite import EvalSettings

    import torch

    data = config.eval_data or config.data
    train_set = load_dataset(data, "train", config.data_dir, config.download)
    if train_set.info.num_classes == 0:
        print(f"no labels in {data}: skipping evaluation (set eval_data to a labelled dataset)", file=sys.stderr)
        return {}
    test_set = load_dataset(data, "test", config.data_dir, config.download)
    for dataset in (train_set, test_set):  # as in training: a bad file must not end the run here
        set_bad_image_policy(dataset, config.on_bad_image, Path(config.output_dir) / SKIPPED_FILE)
    ev = config.eval
    protocols = [p for p in ("knn", "linear") if getattr(ev, p)]
    settings = EvalSettings(knn_k=ev.knn_k, knn_temperature=ev.knn_temperature, linear_epochs=ev.linear_epochs,
                            batch_size=ev.batch_size, image_size=config.views.get("image_size"))
    cache = FeatureCache(Path(config.output_dir) / "features")
    trained = load_encoder(str(checkpoint))
    report: Dict[str, Any] = {"data": data, "checkpoint": str(checkpoint), "protocols": protocols}
    report["trained"] = evaluate_encoder(trained.encoder, train_set, test_set, protocols, settings, cache, trained.source)
    if ev.floor:
        floor = load_encoder("random", trained.backbone, trained.backbone_args, trained.in_channels, seed=config.seed,
                             method=trained.method)
        report["random_init"] = evaluate_encoder(floor.encoder, train_set, test_set, protocols, settings, cache, floor.source)
        # The other floor: the raw pixels themselves, flattened (no encoder at all).
        report["pixels"] = evaluate_encoder(torch.nn.Flatten(), train_set, test_set, protocols, settings, cache, "pixels")
    return report


# --------------------------------------------------------------------------- eval
EVAL_PROTOCOLS = {
    "knn": "weighted kNN on frozen features (Wu et al. 2018); several --k from one similarity pass",
    "linear": "linear classifier on frozen features; several --lr are chosen on a held-out part of train",
    "fewshot": "linear probe (and kNN, optionally fine-tuning) on class-balanced label fractions of train",
    "finetune": "fine-tune encoder + linear head end to end (backbone lr = head lr x --backbone-lr-scale)",
    "dense": "linear segmentation probe on patch features / ResNet feature maps, mIoU",
}


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


def _eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate an encoder: kNN, linear, few-label, fine-tuning, dense; JSON out")
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
    if args.device == "cpu":  # as in training, for every protocol: Winograd 3×3 convolutions
        from selfsup.ops import use_winograd

        use_winograd(loaded.encoder)
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

    if args.device == "cpu":  # feature extraction and fine-tuning allocate large activations too
        from selfsup.engine import tune_cpu_allocator

        tune_cpu_allocator()
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
        _write_json(payload, args.output)
        return 0

    settings = EvalSettings(image_size=args.image_size, batch_size=args.batch_size, device=args.device,
                            num_workers=args.num_workers, seed=args.seed)
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
    _write_json(payload, args.output)
    return 0


def _cmd_eval_dense(args: argparse.Namespace) -> int:
    from selfsup.evaluation.dense import DenseSettings, dense_probe, load_segmentation

    train_set, test_set = load_segmentation(args.data, "train"), load_segmentation(args.data, "test")
    loaded = _load_eval_encoder(args, train_set.info.num_channels)
    settings = DenseSettings(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, image_size=args.image_size,
                             num_classes=args.num_classes, batch_norm=not args.no_batch_norm, seed=args.seed,
                             device=args.device)
    result = dense_probe(loaded.encoder, train_set, test_set, settings)
    _write_json({"checkpoint": args.checkpoint, "backbone": loaded.backbone, "data": args.data, "protocol": "dense",
                 "miou": result.miou, "pixel_accuracy": result.pixel_accuracy,
                 "per_class_iou": {str(c): v for c, v in result.per_class_iou.items()},
                 "num_classes": result.num_classes, "image_size": result.image_size,
                 "feature_shape": list(result.feature_shape), "epochs": result.epochs,
                 "final_train_loss": result.train_losses[-1]}, args.output)
    return 0


# --------------------------------------------------------------------------- small commands
def cmd_methods(args: argparse.Namespace) -> int:
    from selfsup.methods import METHODS

    width = max(map(len, METHODS.names()))
    for name in METHODS.names():
        doc = (METHODS.get(name).__doc__ or "").strip().splitlines()[0]
        print(f"{name:{width}s}  {doc}")
    return 0


def cmd_backbones(args: argparse.Namespace) -> int:
    from selfsup.backbones import BACKBONES, backbone_kwargs

    for name in BACKBONES.names():
        kwargs = ", ".join(f"{k}={v!r}" for k, v in backbone_kwargs(name).items())
        print(f"{name:16s} {kwargs}")
    return 0


def cmd_views(args: argparse.Namespace) -> int:
    from selfsup.config import make_config, parse_override
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


def cmd_export(args: argparse.Namespace) -> int:
    from selfsup.evaluation import export_encoder, load_encoder

    path = export_encoder(load_encoder(args.checkpoint), args.output)
    print(path)
    return 0


def _configure_logging(verbose: bool) -> None:
    """selfsup's own messages to stderr; Lightning keeps its handler, minus its sales tips."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("selfsup")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    logging.getLogger("lightning.pytorch.trainer.connectors.logger_connector").setLevel(logging.WARNING)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="selfsup", description="Self-supervised visual representation learning.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _eval_parser(sub)
    sub.add_parser("methods", help="list registered methods").set_defaults(func=cmd_methods)
    sub.add_parser("backbones", help="list registered backbones and their options").set_defaults(func=cmd_backbones)
    v = sub.add_parser("views", help="save a PNG grid of augmented views: see what the model sees")
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
    e = sub.add_parser("export", help="write the trained encoder alone, for use elsewhere")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--output", required=True)
    e.set_defaults(func=cmd_export)
    from selfsup import commands

    commands.add_all(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except SelfSupError as err:
        if args.verbose:
            raise
        print(f"selfsup: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("selfsup: interrupted; the last complete checkpoint is intact", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
