"""What the command line says about itself: --version, a description on every sub-command's
--help, plain-text method lines, and Lightning's banner and adverts kept out of a run's output."""

from __future__ import annotations

import argparse
import logging

import pytest

from selfsup.cli import _configure_logging, build_parser, main


def subcommands(parser: argparse.ArgumentParser) -> dict:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_version_comes_from_the_package(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"selfsup {version('selfsup')}"


def test_every_subcommand_explains_itself():
    for name, sub in subcommands(build_parser()).items():
        assert sub.description and len(sub.description) > 40, f"`selfsup {name} --help` has no description"


def test_methods_lines_are_plain_text(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "``" not in out and ":meth:" not in out and ":class:" not in out
    assert "updated in on_step_end" in out  # BYOL's line, formerly :meth:`on_step_end`


def test_lightning_banner_and_adverts_are_dropped_unless_verbose():
    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    rank_zero.addHandler(handler)
    level = rank_zero.level
    rank_zero.setLevel(logging.INFO)
    try:
        _configure_logging(verbose=False)
        for message in ("GPU available: False, used: False", "TPU available: False, using: 0 TPU cores",
                        "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]",
                        "Restoring states from the checkpoint path at last.ckpt"):
            rank_zero_info(message)
        assert seen == ["Restoring states from the checkpoint path at last.ckpt"]
        seen.clear()
        _configure_logging(verbose=True)  # -v shows everything again
        rank_zero_info("GPU available: False, used: False")
        assert seen == ["GPU available: False, used: False"]
    finally:
        rank_zero.removeHandler(handler)
        rank_zero.setLevel(level)
        _configure_logging(verbose=False)


def test_repeated_main_calls_keep_one_log_handler(capsys):
    """main() in one process again and again (tests, notebooks): one selfsup handler, on the
    current stderr, never an earlier (closed) one that prints 'Logging error' tracebacks."""
    import logging

    for _ in range(3):
        _configure_logging(False)
    handlers = [h for h in logging.getLogger("selfsup").handlers if h.get_name() == "selfsup-cli"]
    assert len(handlers) == 1
    logging.getLogger("selfsup.test").warning("once")
    assert capsys.readouterr().err.count("WARNING once") == 1
