"""The ``selfsup`` command line: a dispatcher over :mod:`selfsup.commands` (one module per
sub-command), with logging set up and every user error turned into one line,
``selfsup: error: …``, and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from selfsup import commands
from selfsup.errors import SelfSupError


# Lightning's hardware banner and product adverts, printed at info level through its rank-zero
# loggers on every run; its warnings and other messages (e.g. "Restoring states …") stay.
LIGHTNING_CHATTER = ("GPU available:", "TPU available:", "HPU available:", "💡 Tip:", "LOCAL_RANK:")
LIGHTNING_CHATTY_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                            "lightning.pytorch.accelerators.cuda")


class _DropLightningChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(LIGHTNING_CHATTER)


CLI_HANDLER = "selfsup-cli"


def _configure_logging(verbose: bool) -> None:
    """selfsup's own messages to stderr; Lightning keeps its handler, minus its banner and sales
    tips (all of it with ``-v``)."""
    handler = logging.StreamHandler()  # today's sys.stderr
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.set_name(CLI_HANDLER)
    logger = logging.getLogger("selfsup")
    # One handler however often main() runs in a process (tests, notebooks): an earlier one may
    # hold a stream that is closed by now.
    for earlier in [h for h in logger.handlers if h.get_name() == CLI_HANDLER]:
        logger.removeHandler(earlier)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    logging.getLogger("lightning.pytorch.trainer.connectors.logger_connector").setLevel(logging.WARNING)
    for name in LIGHTNING_CHATTY_LOGGERS:
        chatty = logging.getLogger(name)
        for existing in [f for f in chatty.filters if isinstance(f, _DropLightningChatter)]:
            chatty.removeFilter(existing)
        if not verbose:
            chatty.addFilter(_DropLightningChatter())


def _version() -> str:
    """The installed package's version (its metadata), else the source tree's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("selfsup")
    except PackageNotFoundError:
        from selfsup import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="selfsup", description="Self-supervised visual representation learning.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--version", action="version", version=f"selfsup {_version()}")
    commands.add_all(parser.add_subparsers(dest="command", required=True))
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
