"""More ``selfsup`` sub-commands, one module each (``selfsup distill``, ``selfsup curate`` …).

Each module defines ``add_parser(subparsers) -> None``, which adds its sub-command and sets
``func`` (``args -> exit code``) as the handler. The CLI finds every module here, so a new command
is one new file. Handlers raise :class:`~selfsup.errors.SelfSupError` for bad input: the CLI turns
it into a one-line error and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil


def add_all(subparsers: argparse._SubParsersAction) -> None:
    """Add the sub-command of every module of this package, in name order."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.add_parser(subparsers)
