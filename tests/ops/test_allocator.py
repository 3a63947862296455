"""The tuned C allocator: steps stop page-faulting their activations back in, and it steps aside
whenever the user or another allocator is in charge."""

from __future__ import annotations

import os
import platform

import pytest

from selfsup.config import make_config
from selfsup.ops import allocator
from selfsup.engine.trainer import runs_on_cpu
from selfsup.errors import ConfigError

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt tuning is glibc's")


FAULTS = """
    import resource, sys, torch
    from selfsup.ops import tune_cpu_allocator
    state = tune_cpu_allocator() if sys.argv[1] == "tuned" else "system"
    def step():  # a 64 MiB activation, written and freed, as a training step does
        torch.empty(16 << 20).fill_(1.0)
    for _ in range(3):  # the heap settles (a small block may land between the first two)
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        step()
    print(state, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@glibc_only
def test_tuned_allocator_reuses_freed_pages_instead_of_faulting_them_in_again(fresh_python):
    pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    state, faults = fresh_python(FAULTS, "system").split()
    assert int(faults) > 5 * pages  # glibc mmaps and unmaps the block: every page faults each time
    state, faults = fresh_python(FAULTS, "tuned").split()
    assert state == "tuned"
    # At most a few steps' worth in ten (the heap may still move once on a busy machine: one CI run
    # faulted exactly one step's pages); the system allocator faults all ten.
    assert int(faults) < 3 * pages, faults


@pytest.mark.parametrize("name, value, reason", [
    (allocator.OPT_OUT_ENV, "system", "SELFSUP_CPU_ALLOCATOR=system"),
    ("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "jemalloc preloaded"),
    ("LD_PRELOAD", "libtcmalloc_minimal.so.4", "tcmalloc preloaded"),
    ("MALLOC_MMAP_THRESHOLD_", "1000000", "set by the user: MALLOC_MMAP_THRESHOLD_"),
    ("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1", "set by the user: GLIBC_TUNABLES"),
])
def test_leaves_the_allocator_alone_when_someone_else_chose(monkeypatch, name, value, reason):
    for drop in allocator.ENVIRONMENT:
        monkeypatch.delenv(drop, raising=False)
    monkeypatch.setenv(name, value)
    assert allocator._tune() == f"system ({reason})"


def test_config_and_cpu_detection():
    assert make_config().cpu.allocator == "tuned"
    assert make_config(overrides=[{"cpu": {"allocator": "system"}}]).cpu.allocator == "system"
    with pytest.raises(ConfigError, match="unknown cpu.allocator 'jemalloc'; valid choices: system, tuned"):
        make_config(overrides=[{"cpu": {"allocator": "jemalloc"}}]).validate()
    assert runs_on_cpu("cpu") and not runs_on_cpu("gpu")


def test_old_checkpoint_configs_load_with_their_cpu_settings():
    """Configs stored by earlier versions kept these under trainer.cpu_*: a resumed run reads them."""
    stored = make_config().to_dict()
    del stored["cpu"]
    stored["trainer"].update(cpu_allocator="system", cpu_convolution="winograd")
    config = make_config(base=stored)
    assert (config.cpu.allocator, config.cpu.convolution) == ("system", "winograd")
    assert "cpu_allocator" not in config.to_dict()["trainer"]
    newer = make_config(base=stored, overrides=[{"cpu": {"convolution": "direct"}}])
    assert newer.cpu.convolution == "direct"  # the new key, when given, wins


def test_train_leaves_malloc_alone_and_the_command_line_tunes_it(monkeypatch, tmp_path):
    """A library function must not retune its host program's allocator: only `selfsup train` does."""
    import inspect

    from selfsup import cli
    from selfsup.engine import trainer

    assert "tune_cpu_allocator" not in inspect.getsource(trainer)
    calls = []
    monkeypatch.setattr("selfsup.ops.tune_cpu_allocator", lambda: calls.append("tuned") or "tuned")
    monkeypatch.setattr("selfsup.engine.train", lambda config, resume=False, **kwargs: (_ for _ in ()).throw(SystemExit(0)))
    for setting, expected in (("tuned", ["tuned"]), ("system", [])):
        calls.clear()
        with pytest.raises(SystemExit):
            cli.main(["train", "--set", f"cpu.allocator={setting}", "--set", "trainer.accelerator=cpu",
                      "--output-dir", str(tmp_path / setting)])
        assert calls == expected, setting
