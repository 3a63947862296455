"""The README's safety figures, counted from the tests that plant the accidents and the attacks.

    python benchmarks/safety_figures.py            # crafted files, broken files, bad images (~1 min)
    python benchmarks/safety_figures.py --soak     # + the 20 kill -9 soak test (a few minutes)
    python benchmarks/safety_figures.py --soak --write README.md   # the table between <!-- SAFETY --> marks

Runs the tests with pytest, reads pytest's JUnit XML and prints one row per kind of accident:
how many were planted or tried (test cases) and how many were handled (passed), with the test
that does it. Exit status 1 if any case failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from _markdown import replace_block  # noqa: E402

# (what, how many per passing test case, test file, test function): the cases that count.
ROWS: List[Tuple[str, int, str, str]] = [
    ("crafted pickles refused, nothing run (every command that reads a file)", 1,
     "tests/test_safe_loading.py", "test_every_command_refuses_pickled_code"),
    ("crafted pickles refused, nothing run (code through a method reference)", 1,
     "tests/test_safe_loading.py", "test_code_through_a_method_reference_is_refused_too"),
    ("crafted feature-cache entry refused", 1,
     "tests/test_safe_loading.py", "test_a_feature_cache_entry_with_code_is_refused_and_a_torn_one_recomputed"),
    ("broken checkpoint files (empty, truncated, random, text, foreign zip): one line", 1,
     "tests/test_safe_loading.py", "test_broken_files_are_one_line"),
    # Five files planted in one folder (truncated JPEG, empty PNG, text named .jpg, two PNG headers
    # over the pixel limit); the test passes only if training skips exactly those five.
    ("bad image files skipped by a training run (planted per case: 5)", 5,
     "tests/data/test_bad_images.py", "test_train_skips_planted_files_and_lists_them_once"),
    ("bad image files listed by `selfsup data check` (planted per case: 5)", 5,
     "tests/data/test_bad_images.py", "test_data_check_lists_exactly_the_planted_files"),
]
SOAK = ("kill -9 at random moments, resumed bit-exactly with complete logs (20 per case)", 20,
        "tests/engine/test_kill_soak.py", "test_twenty_kill_nines_then_resume_match_an_uninterrupted_run")


def run(rows: List[Tuple[str, int, str, str]], slow: bool) -> Dict[str, Counter]:
    """``{test function: Counter(passed=…, failed=…)}`` from one pytest run of the rows' tests."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        selection = [f"{path}::{name}" for _, _, path, name in rows]
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                   "-m", "slow or not slow" if slow else "not slow", *selection]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
        subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        counts: Dict[str, Counter] = {}
        for case in ET.parse(report).getroot().iter("testcase"):
            name = case.get("name", "").split("[")[0]
            failed = any(child.tag in ("failure", "error") for child in case)
            skipped = any(child.tag == "skipped" for child in case)
            counts.setdefault(name, Counter())["skipped" if skipped else "failed" if failed else "passed"] += 1
        return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soak", action="store_true", help="also run the slow kill -9 soak test")
    parser.add_argument("--write", metavar="MARKDOWN", help="put the table between <!-- SAFETY --> and "
                        "<!-- /SAFETY --> in this file (e.g. README.md)")
    args = parser.parse_args()
    rows = ROWS + ([SOAK] if args.soak else [])
    counts = run(rows, slow=args.soak)
    lines = [f"Command: `python benchmarks/safety_figures.py{' --soak' if args.soak else ''}`", "",
             "| accident or attack | handled / tried | test |", "|---|---|---|"]
    ok = True
    for what, per_case, path, name in rows:
        c = counts.get(name, Counter())
        tried = per_case * (c["passed"] + c["failed"])
        handled = per_case * c["passed"]
        ok &= c["failed"] == 0 and tried > 0
        lines.append(f"| {what} | {handled} / {tried} | `{path}::{name}` |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        replace_block(Path(args.write), "SAFETY", table)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
