"""``selfsup train``: pre-train an encoder, then report kNN and linear accuracy beside its floors."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from selfsup.commands import print_json
from selfsup.config import TrainConfig, config_help, default_method, make_config, parse_override, recipe_path
from selfsup.evaluation.report import evaluate_run, format_report


def add_parser(sub: argparse._SubParsersAction) -> None:
    epilog = ["all config keys (override with --set KEY=VALUE; defaults shown, recipes may change them):"]
    for key, default, doc in config_help():
        epilog.append(f"  {key} = {default!r}")
        if doc:
            epilog.extend(textwrap.wrap(doc, 88, initial_indent="      ", subsequent_indent="      "))
    p = sub.add_parser(
        "train",
        help="pre-train an encoder (default: rotation prediction on Fashion-MNIST, CPU-sized)",
        description="Pre-train an encoder with a self-supervised method, then report kNN and linear "
        "accuracy beside a randomly initialised backbone (the floor). Without --config the packaged "
        "recipe configs/<data>/<method>.yaml is used when one exists.",
        epilog="\n".join(epilog),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", action="append", default=[], help="YAML recipe(s), later ones win")
    p.add_argument("--method", help="method name (`selfsup methods`); default rotation on fashion-mnist "
                   "(the accuracy-per-CPU-minute study's winner), simclr elsewhere")
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


def build_train_config(args: argparse.Namespace) -> TrainConfig:
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
        data = flags.get("data", TrainConfig.data)
        recipe = recipe_path(data, flags.get("method") or default_method(data))
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
    from selfsup.engine.run_lock import RunLock, launched_rank
    from selfsup.engine.trainer import prepare_run, runs_on_cpu
    from selfsup.ops import tune_cpu_allocator

    config = build_train_config(args)
    plan = prepare_run(config, resume=args.resume)  # every check that writes nothing, --resume's included
    if config.cpu.allocator == "tuned" and runs_on_cpu(config.trainer.accelerator):
        tune_cpu_allocator()  # process-wide: the command line's choice, before the loader's workers fork
    # The folder stays ours through training and the evaluation that writes eval.json and features/.
    with RunLock(config.output_dir, enabled=launched_rank() == 0):
        return _train_and_evaluate(args, config, plan)


def _train_and_evaluate(args: argparse.Namespace, config, plan) -> int:
    from selfsup.engine import train
    from selfsup.engine.run_lock import launched_rank

    result = train(config, resume=args.resume, plan=plan)
    if launched_rank() != 0:  # the other DDP processes Lightning started: rank 0 reports
        return 0
    print(f"trained {config.method} for {result.epochs} epochs ({result.steps} steps) in {result.seconds / 60:.1f} min; "
          f"checkpoint: {result.last_checkpoint}")
    if args.no_eval or not (config.eval.knn or config.eval.linear):
        return 0
    report = evaluate_run(config, result.last_checkpoint, progress=config.trainer.progress_bar)
    if not report:
        return 0
    print_json(report, str(Path(config.output_dir) / "eval.json"), echo=False)
    print(f"\nevaluation on {report['data']} (test split; kNN k={config.eval.knn_k}), "
          f"written to {Path(config.output_dir) / 'eval.json'}:")
    print(format_report(report, f"{config.method}, {result.epochs} epochs"))
    return 0
