"""Soak test: ``kill -9`` a ``selfsup train`` on ``folder:`` data (2 DataLoader workers) 20 times at
random moments, ``--resume`` after each, and compare with an uninterrupted run.

Checks that every resume is exact (each epoch checkpoint of the killed run equals the
uninterrupted run's, and so do the final weights), that every ``.ckpt`` present after a kill
loads (weights-only), that a kill leaves no partial file other than the atomic writer's hidden
``.*.tmp`` (removed by the next start), and that the logs are complete: ``metrics.csv`` of the
killed run holds the same rows (steps, epochs, losses) as the uninterrupted run's.
Slow (a few minutes): ``pytest -m slow tests/engine/test_kill_soak.py``.
"""

import csv
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from selfsup.io import load_torch_file
from engine.test_resume_workers import write_mixed_folder

KILLS = 20
EPOCHS = 50
SRC = Path(__file__).resolve().parents[2] / "src"
ATOMIC_TEMP = re.compile(r"^\..+\.ckpt\..+\.tmp$")  # selfsup.engine.checkpoint.atomic_torch_save's temporaries


def train_command(data: Path, output: Path, resume: bool) -> list:
    return [sys.executable, "-m", "selfsup.cli", "train", "--data", f"folder:{data}", "--backbone", "resnet18",
            "--epochs", str(EPOCHS), "--batch-size", "8", "--num-workers", "2", "--output-dir", str(output),
            "--no-eval", "--set", "backbone_args={small_stem: true, width: 0.125}", "--set", "views.image_size=16",
            "--set", "method_args={projection_hidden_dim: 32, projection_dim: 16}", "--set", "augment=per-image",
            "--set", "trainer.progress_bar=false", "--set", "trainer.limit_train_batches=2",
            "--set", "optim.warmup_epochs=0", "--set", "monitor.knn_every=0", *(["--resume"] if resume else [])]


def start(command: list, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    with open(log, "ab") as handle:  # its own process group: the kill takes the workers too, as a scheduler's would
        return subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def _identity(path: Path):
    """Changes whenever ``path`` is replaced (atomic writes make a new inode)."""
    try:
        info = path.stat()
        return info.st_ino, info.st_mtime_ns
    except FileNotFoundError:
        return None


def state(path: Path) -> dict:
    return load_torch_file(path, "a checkpoint")["state_dict"]


def logged_rows(output: Path) -> list:
    """``(step, epoch, epoch loss)`` of every row of the run's metrics.csv, in file order."""
    with open(output / "logs" / "metrics.csv", newline="") as handle:
        return [(row["step"], row["epoch"], row.get("train/loss_epoch", "")) for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_twenty_kill_nines_then_resume_match_an_uninterrupted_run(tmp_path):
    data = write_mixed_folder(tmp_path / "data")
    straight, killed, log = tmp_path / "straight", tmp_path / "killed", tmp_path / "train.log"
    began = time.monotonic()
    proc = start(train_command(data, straight, resume=False), log)
    while not (straight / "epoch=000.ckpt").exists() and proc.poll() is None:
        time.sleep(0.05)
    first_epoch = time.monotonic() - began  # start-up plus one epoch, on this machine, now
    assert proc.wait(timeout=1200) == 0, log.read_text()[-3000:]
    epoch = (time.monotonic() - began - first_epoch) / (EPOCHS - 1)

    rng = random.Random(0)
    kills, leftovers = 0, set()
    while kills < KILLS:
        proc = start(train_command(data, killed, resume=(killed / "last.ckpt").exists()), log)
        if rng.random() < 1 / 3:  # somewhere in start-up, resume or the first epoch
            moment = time.monotonic() + rng.uniform(0.1, 1.0) * first_epoch
        else:  # somewhere in the epoch after the next checkpoint, its own checkpoint writes included
            before = _identity(killed / "last.ckpt")
            while _identity(killed / "last.ckpt") == before and proc.poll() is None:
                time.sleep(0.01)
            moment = time.monotonic() + rng.uniform(0.0, 1.5) * epoch
        while time.monotonic() < moment and proc.poll() is None:
            time.sleep(0.01)
        if proc.poll() is not None:
            assert proc.returncode == 0, log.read_text()[-3000:]
            break  # finished before its kill: the remaining kills cannot happen
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        for path in killed.glob("*.ckpt"):
            load_torch_file(path, "a checkpoint")  # no corrupt checkpoint, ever
        partial = {p.name for p in killed.glob("*.tmp")}
        assert all(ATOMIC_TEMP.match(name) for name in partial), partial
        leftovers |= partial
    assert kills == KILLS, f"the run finished after {kills} kills; raise EPOCHS"

    final = start(train_command(data, killed, resume=(killed / "last.ckpt").exists()), log)
    assert final.wait(timeout=1200) == 0, log.read_text()[-3000:]
    for path in sorted(straight.glob("epoch=*.ckpt")):
        a, b = state(path), state(killed / path.name)
        assert all(torch.equal(a[k], b[k]) for k in a), f"{path.name} differs after resumes"
    a, b = state(straight / "last.ckpt"), state(killed / "last.ckpt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # The temporaries of writes cut short are removed by the next start (it holds the run lock).
    assert not list(killed.glob("*.tmp")), sorted(p.name for p in killed.glob("*.tmp"))
    # Logs complete across 20 resumes: the same rows as the run that was never killed.
    assert logged_rows(killed) == logged_rows(straight)
    print(f"{kills} kills; atomic-write temporaries seen after kills (removed at the next start): {sorted(leftovers)}")
