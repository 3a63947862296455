"""What CPU this is: model, instruction sets, cores; for cache keys and the benchmarks' machine line.

One place answers "which CPU ran this": the kernel build cache and the autotune cache are keyed by
:func:`cpu_key` (a shared home directory on a mixed cluster must not hand one CPU's binary or
timings to another), and every benchmark prints :func:`machine_line`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
from typing import Dict, List

import torch

# Flags of /proc/cpuinfo that decide which kernels are fast, in the order they are printed.
# x86: AVX2 + FMA (Haswell, Zen 1+), AVX-512 (Skylake-SP, Zen 4), AVX512_BF16 (Cooper Lake, Zen 4),
# AMX (Sapphire Rapids); Arm: NEON ("asimd") and the bf16 dot products of Armv8.6 ("bf16").
ISA_FLAGS = {
    "avx2": "AVX2", "fma": "FMA", "avx512f": "AVX-512", "avx512_bf16": "AVX512_BF16", "amx_bf16": "AMX_BF16",
    "amx_tile": "AMX", "asimd": "NEON", "sve": "SVE", "bf16": "BF16",
}


@functools.lru_cache(maxsize=None)
def _cpuinfo() -> Dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    fields: Dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """The CPU's marketing name, e.g. ``"AMD EPYC 9654 96-Core Processor"`` (else the architecture)."""
    info = _cpuinfo()
    return info.get("model name") or info.get("hardware") or platform.processor() or platform.machine()


def isa_flags() -> List[str]:
    """The instruction-set extensions among :data:`ISA_FLAGS` this CPU reports, e.g. ``["AVX2", "FMA"]``."""
    info = _cpuinfo()
    reported = set((info.get("flags") or info.get("features") or "").split())
    if not reported and platform.machine() in ("arm64", "aarch64"):
        reported.add("asimd")  # every Armv8 core has NEON; macOS has no /proc/cpuinfo
    return [name for flag, name in ISA_FLAGS.items() if flag in reported]


def has_flag(name: str) -> bool:
    """Whether this CPU reports the /proc/cpuinfo flag ``name`` (e.g. ``"avx512f"``)."""
    info = _cpuinfo()
    return name in (info.get("flags") or info.get("features") or "").split()


def cpu_capability() -> str:
    """Which of PyTorch's own CPU kernel builds runs here (``torch.backends.cpu.get_cpu_capability``)."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # older than the function
        return "unknown"


def cpu_key() -> str:
    """A short hash of the architecture, CPU model and ISA flags: what a cached binary or timing depends on."""
    text = "|".join([platform.machine(), cpu_model(), ",".join(isa_flags())])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def machine_line(threads: int | None = None) -> str:
    """One line for benchmark output: CPU, cores/threads, ISA flags, torch and the kernels that ran, e.g.
    ``AMD EPYC (x86_64), 2 logical CPUs, 2 torch threads; AVX2 FMA AVX-512 AVX512_BF16; torch 2.5.1,
    ATen CPU kernels AVX512; selfsup Winograd kernels: avx512 build``."""
    from selfsup.ops import winograd  # the build variant it would load on this CPU

    threads = torch.get_num_threads() if threads is None else threads
    flags = " ".join(isa_flags()) or "no AVX/NEON flags reported"
    return (f"{cpu_model()} ({platform.machine()}), {os.cpu_count()} logical CPUs, {threads} torch threads; "
            f"{flags}; torch {torch.__version__}, ATen CPU kernels {cpu_capability()}; "
            f"selfsup Winograd kernels: {winograd.build_variant()} build")


def machine_info(threads: int | None = None) -> Dict[str, object]:
    """The fields of :func:`machine_line`, for benchmark JSON."""
    from selfsup.ops import winograd

    return {"cpu": cpu_model(), "arch": platform.machine(), "logical_cpus": os.cpu_count(),
            "threads": torch.get_num_threads() if threads is None else threads, "isa": isa_flags(),
            "torch": torch.__version__, "aten_cpu_capability": cpu_capability(),
            "winograd_build": winograd.build_variant(), "line": machine_line(threads)}
