"""Generated blocks inside hand-written markdown: ``<!-- NAME -->`` … ``<!-- /NAME -->``."""

from __future__ import annotations

import re
from pathlib import Path


def replace_block(path: Path, name: str, block: str) -> None:
    """Put ``block`` between the file's one pair of ``NAME`` marks, atomically; exit if absent."""
    from selfsup.io import atomic_write_text

    begin, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    text, count = re.subn(re.escape(begin) + ".*?" + re.escape(end), lambda _: f"{begin}\n{block}\n{end}",
                          path.read_text(), flags=re.S)
    if count != 1:
        raise SystemExit(f"{path}: needs one {begin} … {end} block, found {count}")
    atomic_write_text(path, text)
