"""``selfsup bench``: every method (or a paper's ablation) under one budget → BENCHMARKS.md."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Optional

SECTION_TITLES = {
    "methods": "Every method, same budget",
    "moco-momentum": "Ablation: MoCo's key-encoder momentum (He et al. 2019, Table 1)",
    "simclr-temperature": "Ablation: SimCLR's temperature (Chen et al. 2020, Table 5)",
    "simclr-batch": "Ablation: SimCLR's batch size (Chen et al. 2020, Fig. 9)",
}


# What each paper found, printed under the measured ranking so a reader can see whether the
# trend holds at this scale (the ranking itself is computed from the results, never typed).
PAPER_FINDINGS = {
    "moco-momentum": "He et al. 2019, Table 1 (ImageNet linear, K=4096): accuracy rises with m up to 0.999 "
                     "(m=0 fails to train, 0.9: 55.2, 0.99: 57.8, 0.999: 59.0, 0.9999: 58.6).",
    "simclr-temperature": "Chen et al. 2020, Table 5 (ImageNet linear, ℓ2-normalised embeddings): τ=0.1 best; "
                          "accuracy falls as τ grows to 0.5 and 1.0, and 0.05 is below 0.1.",
    "simclr-batch": "Chen et al. 2020, Fig. 9: larger batches help, most of all when training is short "
                    "(100 epochs); the gap closes with longer training.",
}


def ranking(results, metric: str = "linear_top1") -> str:
    """Entries ordered by ``metric``, best first, e.g. ``"a (81.1) > b (80.0)"``."""
    done = [r for r in results if r.status == "done" and metric in r.metrics]
    done.sort(key=lambda r: r.metrics[metric], reverse=True)
    return " > ".join(f"{r.label} ({100 * r.metrics[metric]:.1f})" for r in done)


def budget(text: str) -> Optional[int]:
    """``--epochs``: a positive number of epochs, or 'recipe' (None: each recipe's own epochs)."""
    if text == "recipe":
        return None
    try:
        epochs = int(text)
    except ValueError:
        epochs = 0
    if epochs < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a budget; use a positive number of epochs or 'recipe'")
    return epochs


def budget_name(epochs: Optional[int]) -> str:
    """Folder/section suffix of a budget: results of different budgets are never mixed."""
    return "recipe" if epochs is None else f"{epochs}ep"


def add_parser(sub: argparse._SubParsersAction) -> None:
    from selfsup.bench import PRESETS

    p = sub.add_parser(
        "bench",
        help="run every method (or an ablation) under one budget and write BENCHMARKS.md",
        description="Pre-train each entry with its recipe at the common budget (--epochs), evaluate kNN, "
        "linear and 10%%-label accuracy beside the random-init floor, raw pixels and a supervised "
        "baseline, and write the table with this exact command. Re-running the same command "
        "continues where it stopped (finished entries are kept).",
    )
    p.add_argument("--preset", default="methods", choices=sorted(PRESETS), help="what to run (default: every method)")
    p.add_argument("--methods", nargs="+", help="only these methods (preset 'methods')")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--data-dir")
    p.add_argument("--epochs", type=budget, default=2,
                   help="the common training budget per entry (default 2), or 'recipe': each recipe's own "
                        "epochs, the budget its comments justify")
    p.add_argument("--root", default="runs/bench", help="where runs, features and sections are kept")
    p.add_argument("--output", default="BENCHMARKS.md")
    p.add_argument("--no-supervised", action="store_true", help="skip the supervised baseline")
    p.add_argument("--knn-k", type=int, default=200)
    p.add_argument("--linear-epochs", type=int, default=100, help="epochs of the linear probes")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override applied to every entry, e.g. trainer.limit_train_batches=20")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from selfsup.bench import PRESETS, BenchSettings, baselines, machine_description, markdown_table, plot_curves, run_entry

    if args.methods and args.preset != "methods":
        from selfsup.errors import ConfigError

        raise ConfigError(f"--methods only applies to --preset methods, not '{args.preset}'")
    entries = PRESETS[args.preset](args.methods) if args.methods else PRESETS[args.preset]()
    root = Path(args.root) / args.data.replace(":", "_").replace("/", "_")
    section_name = f"{args.preset}-{budget_name(args.epochs)}"
    settings = BenchSettings(data=args.data, data_dir=args.data_dir, epochs=args.epochs, root=str(root / section_name),
                             supervised=not args.no_supervised, extra_overrides=tuple(args.set),
                             knn_k=args.knn_k, linear_epochs=args.linear_epochs)
    results = [run_entry(entry, settings) for entry in entries]
    done = [r for r in results if r.status == "done"]
    reference = done[0] if done else None  # the floors use the entries' architecture and image size
    base = baselines(settings, reference.backbone, reference.backbone_args, reference.image_size) \
        if args.preset == "methods" and reference is not None else {}
    plot = plot_curves(results, root / f"{section_name}.png")
    title = SECTION_TITLES.get(args.preset, args.preset)
    if args.epochs is None:
        title = title.replace("Every method, same budget", "Methods at their recipes' own budgets")
    budget_text = "each recipe's own epochs (column *epochs*)" if args.epochs is None else f"{args.epochs} epochs per entry"
    section = [f"## {title}", "",
               f"Data: {args.data}; budget: {budget_text}; machine: {machine_description()}.",
               f"Command: `{_command(args)}`", "",
               markdown_table(results, settings, base), ""]
    if args.preset in PAPER_FINDINGS:
        section += [f"Measured ranking, linear: {ranking(results)}.", "",
                    f"Measured ranking, kNN: {ranking(results, 'knn_top1')}.", "",
                    f"Paper: {PAPER_FINDINGS[args.preset]}", ""]
    if plot is not None:
        section += [f"kNN accuracy (monitor subset) against training time: `{plot}`", ""]
    (root / f"{section_name}.md").write_text("\n".join(section))
    assemble(root, Path(args.output))
    print("\n".join(section))
    print(f"written: {args.output}")
    return 0


def _command(args: argparse.Namespace) -> str:
    """The command that reproduces this section (options left at their defaults are omitted)."""
    parts = ["selfsup", "bench"]
    if args.preset != "methods":
        parts += ["--preset", args.preset]
    if args.methods:
        parts += ["--methods", *args.methods]
    if args.data != "fashion-mnist":
        parts += ["--data", args.data]
    if args.data_dir:
        parts += ["--data-dir", args.data_dir]
    parts += ["--epochs", "recipe" if args.epochs is None else str(args.epochs)]
    for flag, value, default in (("--knn-k", args.knn_k, 200), ("--linear-epochs", args.linear_epochs, 100)):
        if value != default:
            parts += [flag, str(value)]
    if args.no_supervised:
        parts.append("--no-supervised")
    for setting in args.set:
        parts += ["--set", setting]
    return " ".join(shlex.quote(p) for p in parts)


def assemble(root: Path, output: Path) -> None:
    """BENCHMARKS.md = every section written so far under ``root``, presets in a fixed order."""
    from selfsup.bench import PRESETS
    from selfsup.io import atomic_write_text

    parts = ["# Benchmarks", "",
             "Generated by `selfsup bench`; each section shows the command that produced it. Accuracies in %, "
             "on the test split; floors are a randomly initialised encoder of the same architecture. "
             "*train min* is the entry's training wall clock with the torch threads shown in its "
             "machine line (other jobs on the same machine slow it: compare minutes within one run).", ""]
    used = set()
    for preset in ["methods"] + sorted(set(PRESETS) - {"methods"}):
        # Common budgets in increasing epochs, then the recipes' own budgets.
        sections = sorted(root.glob(f"{preset}-*ep.md"), key=lambda p: int(p.stem.rsplit("-", 1)[1][:-2]))
        sections += sorted(root.glob(f"{preset}-recipe.md"))
        parts += [section.read_text() for section in sections]
        used.update(sections)
    # Sections other scripts write beside them (benchmarks/lightly_section.py), in name order.
    parts += [section.read_text() for section in sorted(set(root.glob("*.md")) - used)]
    atomic_write_text(output, "\n".join(parts))
