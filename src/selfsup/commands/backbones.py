"""``selfsup backbones``: the registered backbones and the arguments they take."""

from __future__ import annotations

import argparse

from selfsup.commands import first_doc_line


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("backbones", help="list registered backbones and their options",
                   description="List the backbones (--backbone NAME) and the arguments they take "
                   "(--set backbone_args.KEY=VALUE), including timm:NAME for any timm model.").set_defaults(func=cmd_backbones)


def cmd_backbones(args: argparse.Namespace) -> int:
    from selfsup.backbones import BACKBONES, backbone_kwargs

    for name in BACKBONES.names():
        kwargs = ", ".join(f"{k}={v!r}" for k, v in backbone_kwargs(name).items())
        print(f"{name:16s} {kwargs}")
        if ":" in name:  # a prefix backbone (timm:NAME): say what the name after the prefix can be
            print(f"{'':16s} {first_doc_line(BACKBONES.get(name).__doc__)}")
    return 0
