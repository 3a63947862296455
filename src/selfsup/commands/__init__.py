"""The ``selfsup`` sub-commands, one module each (``selfsup train``, ``selfsup eval``, ``selfsup distill`` …).

Each module defines ``add_parser(subparsers) -> None``, which adds its sub-command and sets
``func`` (``args -> exit code``) as the handler. The CLI finds every module here, so a new command
is one new file. Handlers raise :class:`~selfsup.errors.SelfSupError` for bad input: the CLI turns
it into a one-line error and exit status 2. A command parses its arguments and calls the library
(``selfsup.engine``, ``selfsup.evaluation``, ``selfsup.apps`` …); the work itself lives there.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import re
from typing import Any, Dict, Optional

FIRST = ("train", "eval")
"""Listed first in ``selfsup --help``: what most runs need; the others follow by name."""


def add_all(subparsers: argparse._SubParsersAction) -> None:
    """Add the sub-command of every module of this package: :data:`FIRST`, then by name."""
    names = sorted(m.name for m in pkgutil.iter_modules(__path__))
    for name in [n for n in FIRST if n in names] + [n for n in names if n not in FIRST]:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)


def print_json(payload: Dict[str, Any], output: Optional[str], echo: bool = True) -> None:
    """A command's result as sorted JSON: on stdout (``echo``) and, atomically, in ``output``."""
    from selfsup.io import atomic_write_text

    text = json.dumps(payload, indent=2, sort_keys=True)
    if output:
        atomic_write_text(output, text + "\n")
    if echo:
        print(text)


def first_doc_line(doc: Optional[str]) -> str:
    """The first line of a docstring as plain text: reST roles (``:meth:`~a.b``` → ``b``) and
    literals (double backquotes) lose their markup."""
    lines = (doc or "").strip().splitlines()
    line = lines[0] if lines else ""
    line = re.sub(r":\w+:`(~?)([^`]+)`", lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), line)
    return re.sub(r"``([^`]+)``", r"\1", line)
