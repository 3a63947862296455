"""Keep training activations in the process's heap instead of handing them back to the kernel.

Why: glibc's ``malloc`` serves every block above its mmap threshold (128 KiB, raised adaptively
to at most 32 MiB) with a fresh ``mmap`` and returns it with ``munmap`` when it is freed. A
training step on the CPU allocates and frees hundreds of activation and gradient tensors of tens
to hundreds of MiB, so every step faults all of those pages back in and the kernel zeroes each of
them first: page faults and zeroing, not arithmetic, then take a sizeable part of the step
(``python benchmarks/vs_lightly.py --allocator-controls`` and
``python benchmarks/throughput.py --allocator system|tuned`` measure it). Serving large blocks
from the heap and never trimming it makes each step reuse the previous step's pages: what
jemalloc/tcmalloc give PyTorch's own CPU launcher (``torch.backends.xeon.run_cpu``), done here
with glibc's ``mallopt`` and nothing to install.

The cost: memory a step frees stays with the process (its resident size stays at its peak) until
it exits, which is what a training process does anyway.

Because it is process-wide, the library never calls it on its own: ``train()`` leaves malloc as the
host program set it. The command line does (``selfsup train`` and ``selfsup eval`` on CPU, unless
``cpu.allocator=system``). In your own training script, call it once at the start, before any
DataLoader worker starts (they inherit it)::

    from selfsup.ops import tune_cpu_allocator
    tune_cpu_allocator()
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

OPT_OUT_ENV = "SELFSUP_CPU_ALLOCATOR"
"""``SELFSUP_CPU_ALLOCATOR=system`` leaves the C allocator as it is, in every selfsup command."""

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_TOP_PAD_BYTES = 64 << 20  # grow the heap in 64 MiB steps: fewer brk calls while it fills
_NEVER_TRIM = 2**31 - 1  # the largest value the int parameter takes (2 GiB of free top)
_USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")
ENVIRONMENT = ("LD_PRELOAD", "GLIBC_TUNABLES", OPT_OUT_ENV, *_USER_SETTINGS)
"""The environment variables that decide whether it tunes (see ``tune_cpu_allocator``)."""

_state: str | None = None


def tune_cpu_allocator() -> str:
    """Make glibc's malloc keep freed tensor memory for reuse (no mmap for large blocks, no trim).

    For any CPU training loop, selfsup's or your own; call it once at the start of the process.
    It is process-wide and idempotent. It leaves things as they are when the process runs another
    allocator (jemalloc, tcmalloc or mimalloc in ``LD_PRELOAD``), when the user has set glibc's
    own ``MALLOC_*`` variables or ``glibc.malloc`` tunables, when ``SELFSUP_CPU_ALLOCATOR=system``,
    or where the C library is not glibc.

    Returns:
        ``"tuned"``, or the reason it left the allocator alone (a short phrase, for logs).
    """
    global _state
    if _state is None:
        _state = _tune()
        log.info("CPU allocator: %s", _state)
    return _state


def _tune() -> str:
    if os.environ.get(OPT_OUT_ENV, "").lower() == "system":
        return f"system ({OPT_OUT_ENV}=system)"
    preload = os.environ.get("LD_PRELOAD", "")
    for name in _OTHER_ALLOCATORS:
        if name in preload:
            return f"system ({name} preloaded)"
    user = [name for name in _USER_SETTINGS if name in os.environ]
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        user.append("GLIBC_TUNABLES")
    if user:
        return f"system (set by the user: {', '.join(user)})"
    if not sys.platform.startswith("linux"):
        return f"system (not glibc: {sys.platform})"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # only glibc has it (musl has mallopt as a no-op stub)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "system (not glibc)"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success, 0 on error; M_MMAP_MAX=0 first: it is the one that matters.
    ok = all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM), (_M_TOP_PAD, _TOP_PAD_BYTES)))
    return "tuned" if ok else "system (mallopt refused the settings)"
