"""The multi-node launch examples, as far as a machine without SLURM or GPUs can check them: the scripts
parse, the `selfsup train` command line they build is accepted by the CLI and gives the intended config,
they add --resume exactly when the output folder holds a checkpoint, and --resume picks the newest one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfsup.cli import build_parser
from selfsup.commands.train import build_train_config
from selfsup.engine.trainer import resume_checkpoint

ROOT = Path(__file__).resolve().parents[2]
SBATCH = ROOT / "examples" / "slurm" / "train.sbatch"
TORCHRUN = ROOT / "examples" / "torchrun.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def dry_run(script: Path, tmp_path: Path, *args: str, **env: str) -> list[str]:
    environment = {**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable, "OUTPUT_DIR": str(tmp_path / "run"),
                   "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""), **env}
    done = subprocess.run(["bash", str(script), *args], env=environment, capture_output=True, text=True,
                          check=True, timeout=120)
    return done.stdout.splitlines()


def train_argv(command: list[str]) -> list[str]:
    """The arguments after `-m selfsup.cli`."""
    start = command.index("selfsup.cli")
    return command[start + 1:]


@pytest.mark.parametrize("script", [SBATCH, TORCHRUN], ids=["sbatch", "torchrun"])
def test_scripts_parse(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_sbatch_builds_a_valid_train_command(tmp_path: Path) -> None:
    command = dry_run(SBATCH, tmp_path, "--epochs", "3", SLURM_NNODES="2", SLURM_NTASKS_PER_NODE="4",
                      SLURM_CPUS_PER_TASK="6", DATA=f"folder:{tmp_path}")
    assert command[:3] == [sys.executable, "-m", "selfsup.cli"]
    args = build_parser().parse_args(train_argv(command))
    assert args.command == "train" and not args.resume
    config = build_train_config(args)
    assert (config.trainer.num_nodes, config.trainer.devices, config.trainer.strategy) == (2, 4, "ddp")
    assert config.trainer.accelerator == "gpu" and config.trainer.precision == "bf16-mixed"
    assert config.method == "simclr" and config.backbone == "resnet50" and config.epochs == 3
    assert config.num_workers == 5 and config.output_dir == str(tmp_path / "run")


@pytest.mark.parametrize("checkpoint", ["last.ckpt", "hpc_ckpt_1.ckpt"])
def test_sbatch_resumes_when_a_checkpoint_exists(tmp_path: Path, checkpoint: str) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / checkpoint).write_bytes(b"")
    command = dry_run(SBATCH, tmp_path)
    assert command.count("--resume") == 1 and build_parser().parse_args(train_argv(command)).resume


def test_torchrun_builds_a_valid_multi_node_command(tmp_path: Path) -> None:
    command = dry_run(TORCHRUN, tmp_path, NNODES="2", NODE_RANK="1", GPUS_PER_NODE="8", MASTER_ADDR="node0")
    assert command[1:3] == ["-m", "torch.distributed.run"]
    launcher = command[3:command.index("-m", 3)]
    assert launcher == ["--nnodes", "2", "--node-rank", "1", "--nproc-per-node", "8", "--master-addr", "node0",
                        "--master-port", "29500"]
    config = build_train_config(build_parser().parse_args(train_argv(command)))
    assert (config.trainer.num_nodes, config.trainer.devices) == (2, 8)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.ckpt").write_bytes(b"")
    assert "--resume" in dry_run(TORCHRUN, tmp_path, NNODES="2", GPUS_PER_NODE="8")


def test_resume_picks_the_newest_checkpoint(tmp_path: Path) -> None:
    assert resume_checkpoint(tmp_path) is None
    (tmp_path / "last.ckpt").write_bytes(b"")
    assert resume_checkpoint(tmp_path) == tmp_path / "last.ckpt"
    hpc = tmp_path / "hpc_ckpt_2.ckpt"
    hpc.write_bytes(b"")
    os.utime(hpc, (time.time() + 10, time.time() + 10))  # saved after the last epoch end
    assert resume_checkpoint(tmp_path) == hpc
    os.utime(tmp_path / "last.ckpt", (time.time() + 20, time.time() + 20))
    assert resume_checkpoint(tmp_path) == tmp_path / "last.ckpt"
