"""``selfsup methods``: the registered methods, one line each."""

from __future__ import annotations

import argparse

from selfsup.commands import first_doc_line


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("methods", help="list registered methods",
                   description="List the self-supervised methods (--method NAME) with one line each.").set_defaults(func=cmd_methods)


def cmd_methods(args: argparse.Namespace) -> int:
    from selfsup.methods import METHODS

    width = max(map(len, METHODS.names()))
    for name in METHODS.names():
        print(f"{name:{width}s}  {first_doc_line(METHODS.get(name).__doc__)}")
    return 0
