"""Nothing lost, nothing run twice: the run folder's lock, --resume's config check, leftovers of
killed runs, the divergence guard, one-line errors for bad folders and settings, append-only logs."""

import csv
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from selfsup.cli import main
from selfsup.config import load_yaml, make_config, parse_override
from selfsup.engine import train
from selfsup.engine import run_lock as run_lock_module
from selfsup.engine.lifecycle import ABSENT, config_changes, is_resumable
from selfsup.engine.run_lock import LOCK_NAME, RunLock, launched_rank
from selfsup.errors import ConfigError, SelfSupError, TrainingDiverged

from commands.test_cli import TINY
from engine.test_engine import CrashAfterFirstEpoch, tiny_config

SRC = str(Path(__file__).resolve().parents[2] / "src")


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("selfsup: error:")]
    assert len(lines) == 1, err
    return lines[0]


def cli_args(data: Path, out: Path, *extra: str):
    return ["train", "--data", f"folder:{data}", "--backbone", "resnet18", "--batch-size", "8", "--num-workers", "0",
            "--output-dir", str(out), "--no-eval", *TINY, "--set", "trainer.limit_train_batches=3", *extra]


def all_finite(path: Path) -> bool:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --------------------------------------------------------------------------- one run per folder
HOLD_FLOCK = textwrap.dedent("""
    import fcntl, json, os, socket, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "now",
                             "command": "selfsup train (test holder)"}).encode())
    print("held", flush=True)
    time.sleep(120)
""")


def test_a_held_folder_is_refused_and_nothing_is_written(shapes_folder, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".last.ckpt.being-written.tmp").write_bytes(b"the holder's checkpoint, half written")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_FLOCK, str(out / LOCK_NAME)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=rf"is in use by the selfsup run PID {holder.pid} on "
                                              rf"{re.escape(socket.gethostname())}") as info:
            train(tiny_config(shapes_folder, out, "epochs=1"))
        assert "\n" not in str(info.value)
        # No config.yaml, logs or checkpoint; and the holder's temporaries are not "cleaned".
        assert sorted(os.listdir(out)) == [".last.ckpt.being-written.tmp", LOCK_NAME]
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing: its lock file is still there, but nobody holds it.
    result = train(tiny_config(shapes_folder, out, "epochs=1"))
    assert result.steps == 3 and not (out / LOCK_NAME).exists()
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]  # a dead writer's leftovers: cleaned


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(shapes_folder, tmp_path, caplog):
    out = tmp_path / "run"
    out.mkdir()
    pid = dead_pid()
    (out / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "earlier"}))
    with caplog.at_level("WARNING", logger="selfsup"):
        train(tiny_config(shapes_folder, out, "epochs=1"))
    assert any(f"stale lock of PID {pid}" in r.getMessage() for r in caplog.records)
    assert not (out / LOCK_NAME).exists()


def test_without_flock_the_pid_and_host_decide(tmp_path, monkeypatch, caplog):
    """Network file systems without flock: a live PID on this host (or any other host) holds the
    folder; a dead PID on this host is stale."""
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(run_lock_module.fcntl, "flock", no_flock)
    out = tmp_path / "run"
    out.mkdir()
    lock = out / LOCK_NAME
    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    with pytest.raises(ConfigError, match=f"PID {os.getppid()} .*delete '{re.escape(str(lock))}'"):
        RunLock(out).__enter__()
    lock.write_text(json.dumps({"pid": dead_pid(), "host": "some-other-host"}))
    with pytest.raises(ConfigError, match="some-other-host"):
        RunLock(out).__enter__()
    lock.write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname()}))
    with caplog.at_level("WARNING", logger="selfsup"), RunLock(out):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert "stale lock" in caplog.text and not lock.exists()


def test_lock_is_released_on_error_and_interrupt_and_is_reentrant(shapes_folder, tmp_path):
    out = tmp_path / "run"
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        train(tiny_config(shapes_folder, out, "epochs=3"), callbacks=[CrashAfterFirstEpoch()])
    assert not (out / LOCK_NAME).exists()
    with RunLock(out) as outer:
        holder = json.loads((out / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname() and holder["command"]
        train(tiny_config(shapes_folder, out, "epochs=3"), resume=True)  # takes the same lock inside
        assert (out / LOCK_NAME).exists()
    assert not (out / LOCK_NAME).exists() and outer._fd is None


def test_a_failed_start_leaves_no_folder_behind(tmp_path):
    out = tmp_path / "new" / "run"
    with pytest.raises(ConfigError):
        with RunLock(out):
            raise ConfigError("bad settings found under the lock")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("env, rank", [
    ({}, 0), ({"RANK": "0", "LOCAL_RANK": "0"}, 0), ({"RANK": "3"}, 3), ({"LOCAL_RANK": "1"}, 1),
    ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, 1_000_000), ({"SLURM_NTASKS": "4", "SLURM_PROCID": "2"}, 2),
    ({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}, 0),
])
def test_only_global_rank_zero_takes_the_lock(tmp_path, monkeypatch, env, rank):
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert launched_rank() == rank
    with RunLock(tmp_path / "run"):  # rank 0 of the run holds the folder …
        with RunLock(tmp_path / "run", enabled=False):  # … and the other ranks do not need it
            pass


def test_a_second_selfsup_train_is_refused_while_the_first_runs(shapes_folder, tmp_path, capsys):
    """Two real processes: before the lock both exited 0, with last-v1.ckpt and interleaved logs."""
    out = tmp_path / "run"
    argv = cli_args(shapes_folder, out, "--epochs", "500")
    first = subprocess.Popen([sys.executable, "-m", "selfsup.cli", *argv], env={**os.environ, "PYTHONPATH": SRC},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while not (out / "config.yaml").exists():
            assert first.poll() is None and time.time() < deadline, first.stderr.read()
            time.sleep(0.2)
        code, _, err = run_cli(capsys, *cli_args(shapes_folder, out, "--epochs", "1"))
        assert code == 2 and f"in use by the selfsup run PID {first.pid}" in error_line(err)
        code, _, err = run_cli(capsys, "train", "--resume", "--output-dir", str(out))
        assert code == 2 and ("in use" in err or "no checkpoint" in err)
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert not [n for n in os.listdir(out) if "-v1" in n]
    # Killed: the lock file stays, nobody holds it; the next run takes it over.
    resume = ["--resume"] if (out / "last.ckpt").exists() else []
    code, _, err = run_cli(capsys, *cli_args(shapes_folder, out, "--epochs", "1"), *resume)
    assert "taking over the stale lock" in err
    assert code == 0 or "diverged" in err, err


# --------------------------------------------------------------------------- --resume checks the config
def test_resume_refuses_changed_training_keys_before_writing_anything(shapes_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, *cli_args(shapes_folder, out, "--epochs", "1"))[0] == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (out / ".last.ckpt.left-by-a-kill.tmp").write_bytes(b"partial")  # must not be cleaned by a refused run
    code, _, err = run_cli(capsys, "train", "--resume", "--epochs", "2", "--output-dir", str(out),
                           "--set", "optim.lr=0.1", "--set", "method_args.temperature=0.2", "--batch-size", "4")
    line = error_line(err)
    assert code == 2
    assert "optim.lr 0.3 → 0.1" in line and "method_args.temperature (absent) → 0.2" in line
    assert "batch_size 8 → 4" in line and "epochs" not in line.split("cannot change:")[1].split(";")[0]
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after.pop(Path(".last.ckpt.left-by-a-kill.tmp")) == b"partial"
    assert after == before  # config.yaml, logs, checkpoints: untouched


def test_resume_accepts_the_allowed_keys_and_rewrites_config_yaml(shapes_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, *cli_args(shapes_folder, out, "--epochs", "1"))[0] == 0
    (out / ".last.ckpt.k1ll3d.tmp").write_bytes(b"partial")
    (out / ".epoch=004.ckpt.k1ll3d.tmp").write_bytes(b"partial")
    code, out_text, err = run_cli(capsys, "train", "--resume", "--epochs", "2", "--output-dir", str(out),
                                  "--num-workers", "1", "--set", "eval.knn_k=3", "--set", "trainer.log_every_n_steps=2",
                                  "--set", "monitor.knn_every=2", "--set", "trainer.keep_checkpoints=1")
    assert code == 0, err
    assert "for 2 epochs (6 steps)" in out_text
    saved = load_yaml(out / "config.yaml")
    assert saved["epochs"] == 2 and saved["num_workers"] == 1 and saved["eval"]["knn_k"] == 3
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
    # keep_checkpoints changed: the file bookkeeping starts afresh, last.ckpt is still last.ckpt.
    assert sorted(n for n in os.listdir(out) if n.endswith(".ckpt")) == ["epoch=000.ckpt", "epoch=001.ckpt",
                                                                         "last.ckpt"]
    assert torch.load(out / "last.ckpt", weights_only=True)["global_step"] == 6


def test_allowed_and_refused_keys():
    base = make_config(overrides=[parse_override("output_dir=/x")])
    changed = make_config(overrides=[parse_override(s) for s in
                                     ("output_dir=/y", "epochs=7", "optim.lr=1.0", "views.image_size=32",
                                      "trainer.devices=2", "eval.linear=false", "trainer.precision=bf16-mixed")])
    changes = {k: (a, b) for k, a, b in config_changes(base.to_dict(), changed)}
    assert changes["optim.lr"] == (0.3, 1.0) and changes["views.image_size"] == (ABSENT, 32)
    assert {k for k in changes if is_resumable(k)} == {"output_dir", "epochs", "trainer.devices", "eval.linear"}
    assert not is_resumable("trainer.precision") and not is_resumable("method") and not is_resumable("seed")
    # A checkpoint written before a key existed: the key's default is no change.
    old = base.to_dict()
    del old["trainer"]["keep_checkpoints"]
    assert config_changes(old, base) == []


# --------------------------------------------------------------------------- divergence guard
def floating_state_is_finite(out: Path) -> None:
    for name in os.listdir(out):
        if name.endswith(".ckpt"):
            assert all_finite(out / name), name


def test_blow_up_from_the_first_steps_writes_no_checkpoint_and_says_so(shapes_folder, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="loss became nan at step [01] .*no checkpoint with finite values "
                                               "was written") as info:
        train(tiny_config(shapes_folder, out, "optim.name=sgd", "optim.lr=1e20", "trainer.log_every_n_steps=50"))
    assert "\n" not in str(info.value)
    assert not [n for n in os.listdir(out) if n.endswith(".ckpt") or n.endswith(".tmp")]


class InfinityInBatchNorm(Callback):
    """A BatchNorm running variance overflows during epoch 1 while the loss stays finite (running
    statistics are only read in eval mode): what a too-high lr did to last.ckpt."""

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 1:
            module.method.backbone.bn1.running_var[:4] = float("inf")


def test_non_finite_buffers_stop_the_run_before_their_checkpoint(shapes_folder, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"state holds NaN/inf at step 6: method\.backbone\.bn1\.running_var "
                                               rf"\(4 non-finite\).*finite values is '{re.escape(str(out))}/last.ckpt'"):
        train(tiny_config(shapes_folder, out, "epochs=3"), callbacks=[InfinityInBatchNorm()])
    assert not (out / "epoch=001.ckpt").exists()
    assert torch.load(out / "last.ckpt", weights_only=True)["global_step"] == 3
    floating_state_is_finite(out)


class NanLossFromEpoch(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.current_epoch >= self.epoch:
            with torch.no_grad():
                next(module.method.projector.parameters()).fill_(float("nan"))


def test_loss_flag_is_read_before_each_checkpoint_and_names_the_resumed_one(shapes_folder, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(shapes_folder, out, "epochs=1"))
    # log_every_n_steps=50: the flag is first read when epoch 1's checkpoint is due.
    with pytest.raises(TrainingDiverged, match=rf"loss became nan at step 3 .*finite values is "
                                               rf"'{re.escape(str(out))}/last.ckpt'"):
        train(tiny_config(shapes_folder, out, "epochs=3", "trainer.log_every_n_steps=50"), resume=True,
              callbacks=[NanLossFromEpoch(1)])
    assert torch.load(out / "last.ckpt", weights_only=True)["global_step"] == 3
    assert not (out / "epoch=001.ckpt").exists()
    floating_state_is_finite(out)


def test_a_non_finite_checkpoint_from_before_the_guard_is_never_called_good(shapes_folder, tmp_path):
    """last.ckpt written by an unguarded version with inf BatchNorm statistics (the lr=1e4 case):
    resuming from it, the run stops at its first checkpoint and does not name it as the last good one."""
    out = tmp_path / "run"
    train(tiny_config(shapes_folder, out, "epochs=1"))
    ckpt = torch.load(out / "last.ckpt", weights_only=True)
    ckpt["state_dict"]["method.backbone.bn1.running_var"][0] = float("inf")
    torch.save(ckpt, out / "last.ckpt")
    with pytest.raises(TrainingDiverged, match=r"bn1\.running_var \(1 non-finite\).*no checkpoint with finite values"):
        train(tiny_config(shapes_folder, out, "epochs=2"), resume=True)
    assert torch.load(out / "last.ckpt", weights_only=True)["global_step"] == 3  # not replaced


def test_guard_reads_the_flag_only_every_log_every_n_steps(shapes_folder, tmp_path, monkeypatch):
    from selfsup.engine.guard import DivergenceGuard

    reads = []
    original = DivergenceGuard.check_loss
    monkeypatch.setattr(DivergenceGuard, "check_loss", lambda self, trainer: reads.append(trainer.global_step) or
                        original(self, trainer))
    train(tiny_config(shapes_folder, tmp_path / "run", "epochs=2", "trainer.log_every_n_steps=4",
                      "trainer.keep_checkpoints=0"))
    # Step 4 (periodic), and the checkpoints after steps 3 and 6 (one read per checkpoint file).
    assert reads == [3, 3, 4, 6, 6]


def test_sentinel_buffers_are_not_divergence(shapes_folder, tmp_path):
    """NPID's log-normaliser is NaN until NCE estimates it, for good with the exact softmax."""
    out = tmp_path / "run"
    config = tiny_config(shapes_folder, out, "method=npid", "epochs=1")
    config.method_args = {"loss": "softmax", "embedding_dim": 16}
    train(config)
    state = torch.load(out / "last.ckpt", weights_only=True)["state_dict"]
    assert torch.isnan(state["method.log_normalizer"])


# --------------------------------------------------------------------------- one-line errors
def test_output_dir_that_is_a_file_or_under_a_file(shapes_folder, tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    code, _, err = run_cli(capsys, *cli_args(shapes_folder, a_file, "--epochs", "1"))
    assert code == 2 and f"'{a_file}' is a file, not a folder" in error_line(err)
    code, _, err = run_cli(capsys, *cli_args(shapes_folder, a_file / "run", "--epochs", "1"))
    assert code == 2 and f"is under the file '{a_file}'" in error_line(err)


def test_read_only_output_dir(shapes_folder, tmp_path, capsys, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    code, _, err = run_cli(capsys, *cli_args(shapes_folder, tmp_path / "ro" / "run", "--epochs", "1"))
    assert code == 2 and "is not writable (Permission denied)" in error_line(err)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permission bits")
def test_read_only_output_dir_by_mode_bits(shapes_folder, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code, _, err = run_cli(capsys, *cli_args(shapes_folder, ro / "run", "--epochs", "1"))
        assert code == 2 and "is not writable" in error_line(err)
    finally:
        ro.chmod(0o700)


def test_full_disk_during_a_checkpoint_is_one_line(shapes_folder, tmp_path, capsys, monkeypatch):
    import selfsup.engine.checkpoint as checkpoint_module

    def full(obj, handle, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", full)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, *cli_args(shapes_folder, out, "--epochs", "1"))
    line = error_line(err)  # selfsup.io names the file it could not write
    assert code == 2 and "cannot write" in line and ".ckpt': no space left on device" in line
    assert not (out / LOCK_NAME).exists() and not [n for n in os.listdir(out) if n.endswith((".tmp", ".ckpt"))]


def test_full_disk_writing_config_yaml_is_one_line(shapes_folder, tmp_path, monkeypatch):
    import selfsup.engine.trainer as trainer_module

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(trainer_module, "atomic_write_text", full)
    with pytest.raises(SelfSupError, match="training stopped: no space left .*config.yaml"):
        train(tiny_config(shapes_folder, tmp_path / "run", "epochs=1"))


@pytest.mark.parametrize("setting, message", [
    ("trainer.precision=bf17", r"unknown trainer.precision 'bf17'; valid choices: .*bf16-mixed"),
    ("method_args.temperature=-1", r"method_args.temperature=-1 for SimCLR must be a number > 0"),
    ("trainer.logger=[csv, neptune]", r"unknown trainer.logger 'neptune'; valid choices: csv, tensorboard, wandb"),
    ("trainer.keep_checkpoints=-2", r"trainer.keep_checkpoints must be >= -1"),
    ("trainer.strategy=warp-drive", r"Lightning refused the trainer settings: .*warp-drive"),
])
def test_bad_settings_are_one_line_and_write_nothing(shapes_folder, tmp_path, capsys, setting, message):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, *cli_args(shapes_folder, out, "--epochs", "1", "--set", setting))
    assert code == 2 and re.search(message, error_line(err)), err
    assert not out.exists() or sorted(os.listdir(out)) == []


def test_momentum_range_of_any_method():
    from selfsup.methods import METHODS

    with pytest.raises(ConfigError, match=r"method_args.base_momentum=1.5 for BYOL must be in \[0, 1\]"):
        METHODS.get("byol").make_config({"base_momentum": 1.5})
    with pytest.raises(ConfigError, match="teacher_temp=0"):
        METHODS.get("dino").make_config({"teacher_temp": 0})


def test_missing_logger_package_names_the_extra(shapes_folder, tmp_path, capsys, monkeypatch):
    import selfsup.engine.logs as logs

    monkeypatch.setattr(logs, "package_installed", lambda name: False)
    code, _, err = run_cli(capsys, *cli_args(shapes_folder, tmp_path / "run", "--epochs", "1",
                                             "--set", "trainer.logger=[csv, wandb]"))
    assert code == 2
    assert "trainer.logger 'wandb' needs the wandb package: pip install 'selfsup[wandb]'" in error_line(err)


def test_wandb_is_offline_unless_configured_and_keeps_its_id(tmp_path, monkeypatch):
    import lightning.pytorch.loggers.wandb as lightning_wandb

    import selfsup.engine.logs as logs

    monkeypatch.setattr(logs, "package_installed", lambda name: True)
    monkeypatch.setattr(lightning_wandb, "_WANDB_AVAILABLE", True)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    (first,), _ = logs.build_loggers(["wandb"], tmp_path, 0, resumed=False)
    assert first._offline and first._wandb_init["dir"] == str(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "online")
    (again,), _ = logs.build_loggers(["wandb"], tmp_path, 30, resumed=True)
    assert not again._offline and again._wandb_init["id"] == first._wandb_init["id"]


def test_yaml_syntax_error_names_file_line_and_column(tmp_path, capsys):
    bad = tmp_path / "recipe.yaml"
    bad.write_text("method: simclr\noptim:\n  lr: [0.1\nepochs: 3\n")
    code, _, err = run_cli(capsys, "train", "--config", str(bad))
    line = error_line(err)
    assert code == 2 and re.search(rf"config file '{re.escape(str(bad))}' is not valid YAML, line \d+, column \d+: ", line)


# --------------------------------------------------------------------------- logs and checkpoints kept
def metric_rows(out: Path):
    with open(out / "logs" / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_metrics_csv_keeps_every_epoch_across_a_resume(shapes_folder, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(shapes_folder, out, "epochs=2"))
    header = (out / "logs" / "metrics.csv").read_text().splitlines()[0]
    train(tiny_config(shapes_folder, out, "epochs=4"), resume=True)
    rows = metric_rows(out)
    step_rows = [int(r["step"]) for r in rows if r["train/loss_step"]]
    assert step_rows == list(range(12))
    assert sorted({int(r["epoch"]) for r in rows if r["knn_top1"]}) == [0, 1, 2, 3]
    assert (out / "logs" / "metrics.csv").read_text().count("train/loss_step") == 1
    assert (out / "logs" / "metrics.csv").read_text().splitlines()[0] == header
    # keep_checkpoints=3 across the resume: epoch 0's file went when epoch 3's was written.
    assert sorted(n for n in os.listdir(out) if n.endswith(".ckpt")) == [
        "epoch=001.ckpt", "epoch=002.ckpt", "epoch=003.ckpt", "last.ckpt"]
    first, second = sorted((out / "logs").glob("events.out.tfevents*"), key=lambda p: int(p.name.split(".")[-1]))
    # The resumed writer starts with SessionLog START at the resumed step: TensorBoard's signal to
    # hide earlier events at steps >= 6 (none here; a killed attempt's late ones otherwise).
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    starts = [e.step for e in EventFileLoader(str(second)).Load() if e.HasField("session_log") and e.session_log.status == 1]
    assert starts == [6]
    assert first.stat().st_size > 0


class CrashMidEpoch(Callback):
    """Killed during epoch 1, after two of its steps were logged (and flushed by Lightning's
    shutdown), i.e. after the last checkpoint."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 2:
            raise KeyboardInterrupt


def test_rows_logged_after_the_last_checkpoint_are_dropped_on_resume(shapes_folder, tmp_path):
    out = tmp_path / "run"
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        train(tiny_config(shapes_folder, out, "epochs=3"), callbacks=[CrashMidEpoch()])
    assert [int(r["step"]) for r in metric_rows(out) if r["train/loss_step"]] == [0, 1, 2, 3, 4]
    train(tiny_config(shapes_folder, out, "epochs=3"), resume=True)
    assert [int(r["step"]) for r in metric_rows(out) if r["train/loss_step"]] == list(range(9))


@pytest.mark.parametrize("keep, epochs_kept", [(2, [2, 3]), (0, []), (-1, [0, 1, 2, 3])])
def test_keep_checkpoints(shapes_folder, tmp_path, keep, epochs_kept):
    out = tmp_path / "run"
    train(tiny_config(shapes_folder, out, "epochs=4", f"trainer.keep_checkpoints={keep}", "monitor.knn_every=0",
                      "trainer.logger=[]"))
    assert sorted(n for n in os.listdir(out) if n.endswith(".ckpt")) == \
        sorted(["last.ckpt", *(f"epoch={e:03d}.ckpt" for e in epochs_kept)])
    assert not (out / "logs").exists()
