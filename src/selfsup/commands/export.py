"""``selfsup export``: the trained encoder as safetensors, torchvision, timm, ONNX, TorchScript,
or a Hugging Face Hub folder (optionally pushed), with a JSON config and a one-line load snippet."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Write the encoder of a `selfsup train` checkpoint (or of an exported encoder) for use outside
selfsup, with a JSON config beside it (backbone and arguments, input size, normalisation,
feature size, method, training data, the run's evaluation numbers), and print the one line of
Python that loads it. Every export is checked against the encoder's own features first.

formats:
  safetensors  selfsup's keys + <name>.json; `selfsup eval --checkpoint <name>.safetensors` reads it
  torchvision  torchvision's keys: 3-channel ResNet-18/34/50 with the standard stem, vit-* (VisionTransformer)
  timm         timm's keys: ResNets with the standard stem, vit-*, any timm:<name> backbone
  onnx         the whole encoder, dynamic batch (needs the export extra: pip install 'selfsup[export]')
  torchscript  the whole encoder traced at the training resolution (torch.jit, deprecated by PyTorch)
  hub          a Hugging Face Hub folder: model.safetensors, config.json (timm's fields when timm
               can build the encoder), README.md model card; --push-to uploads it
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from selfsup.export import EXPORT_FORMATS

    p = subparsers.add_parser("export", help="write the trained encoder for timm, torchvision, ONNX, TorchScript or the Hub",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a .ckpt from `selfsup train`, or an exported encoder")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="safetensors", help="default: safetensors")
    p.add_argument("--output", help="file to write (folder for --format hub); default: beside the checkpoint, "
                   "encoder[-FORMAT].safetensors|.onnx|.pt or hub/")
    p.add_argument("--hub-dir", help="also write a Hub folder here (besides --format's file)")
    p.add_argument("--push-to", metavar="REPO_ID", help="upload the Hub folder to this Hub model repo (needs the "
                   "network and a token); implies a Hub folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from selfsup.evaluation import load_encoder
    from selfsup.export import default_output, export_encoder_as
    from selfsup.export.hub import push_folder

    loaded = load_encoder(args.checkpoint)
    results = [export_encoder_as(args.checkpoint, args.format, args.output, loaded=loaded)]
    hub_dir = args.output if args.format == "hub" else args.hub_dir
    if args.format != "hub" and (args.hub_dir or args.push_to):
        results.append(export_encoder_as(args.checkpoint, "hub", args.hub_dir, loaded=loaded))
        hub_dir = args.hub_dir
    for result in results:
        checked = "" if result.max_abs_diff != result.max_abs_diff else f" (features match, max abs diff {result.max_abs_diff:.1e})"
        print(f"wrote {result.path} and {result.config_path.name}{checked}")
        print(f"load: {result.load}")
    if args.push_to:
        folder = Path(hub_dir) if hub_dir else default_output(args.checkpoint, "hub")
        print(f"pushed: {push_folder(folder, args.push_to)}")
    return 0
