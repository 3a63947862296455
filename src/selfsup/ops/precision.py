"""``trainer.precision=auto`` on the CPU: bf16 autocast where the CPU has native bf16 and it
measures faster on the network being trained, float32 elsewhere.

CPUs with bf16 dot-product instructions (x86 AVX512_BF16: Cooper Lake, Sapphire Rapids, Zen 4;
AMX; Arm's Armv8.6 BF16) run oneDNN's bf16 convolutions and GEMMs at about twice the float32 rate:
on an AMD EPYC with avx512_bf16 a plain PyTorch ResNet-18 small-stem step ran ≈ 47 img/s in float32
and ≈ 94 img/s under bf16 autocast. Without those instructions bf16 is emulated and slower. So
``auto`` times the backbone's forward and backward on a small random batch in both precisions
(a copy of it: BatchNorm statistics and RNG streams of the run are untouched) and picks bf16 only
when it is clearly faster; the result is cached per (CPU, torch version, threads, backbone, input
shape) next to the convolution autotune. Losses keep float32 arithmetic under autocast
(``selfsup.losses.precision``); Winograd convolutions stay float32-only (autocast → direct).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import torch
from torch import nn

from selfsup.io import FileWriteError, atomic_write_json
from selfsup.ops.autotune import best_ms

log = logging.getLogger(__name__)

BF16 = "bf16-mixed"
FLOAT32 = "32-true"
REQUIRED_SPEEDUP = 1.15
"""bf16 is chosen only when the probe step is at least this much faster: near-equal timings are noise,
and float32 is the safer default for accuracy."""


def native_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic instructions (AVX512_BF16, AMX-BF16, Arm BF16)."""
    from selfsup.ops.machine import has_flag

    if any(has_flag(flag) for flag in ("avx512_bf16", "amx_bf16", "bf16")):
        return True
    is_supported = getattr(getattr(torch, "cpu", None), "_is_avx512_bf16_supported", None)  # no /proc/cpuinfo
    return bool(is_supported()) if callable(is_supported) else False


def _step_ms(model: nn.Module, example: torch.Tensor, bf16: bool, repeats: int) -> float:
    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(example)
        out = out[0] if isinstance(out, (tuple, list)) else out
        out.float().sum().backward()

    return best_ms(step, repeats)


def probe_bf16(backbone: nn.Module, input_shape: Sequence[int], channels_last: bool = True,
               repeats: int = 2) -> Tuple[float, float]:
    """Milliseconds of one forward + backward of a copy of ``backbone`` on a random batch of
    ``input_shape`` (N, C, H, W): (float32, bf16 autocast)."""
    model = copy.deepcopy(backbone).train()
    with torch.random.fork_rng(devices=[]):  # dropout/drop-path draws leave the run's stream alone
        example = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
        if channels_last and example.dim() == 4:
            model = model.to(memory_format=torch.channels_last)
            example = example.contiguous(memory_format=torch.channels_last)
        return _step_ms(model, example, False, repeats), _step_ms(model, example, True, repeats)


def _cache_file(description: str) -> Path:
    from selfsup.ops.machine import cpu_key
    from selfsup.ops.winograd import cache_dir

    text = f"{cpu_key()}|{torch.__version__}|{torch.get_num_threads()}|{description}"
    return cache_dir() / "autotune" / f"precision-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"


def resolve_precision(precision: str, on_cpu: bool, backbone: Optional[nn.Module] = None,
                      input_shape: Optional[Sequence[int]] = None, description: str = "",
                      probe: Callable[..., Tuple[float, float]] = probe_bf16, channels_last: bool = True) -> str:
    """The Lightning precision for ``trainer.precision``: itself unless it is ``"auto"``.

    ``auto`` is ``32-true`` off the CPU (GPUs keep their current behaviour) and on CPUs without
    native bf16; on CPUs with it, ``bf16-mixed`` when :func:`probe_bf16` on ``backbone`` measures
    it at least :data:`REQUIRED_SPEEDUP` × faster. ``description`` names the backbone and input
    for the cache (e.g. the backbone's registered name and arguments).
    """
    if precision != "auto":
        return precision
    if not on_cpu or backbone is None or input_shape is None or not native_bf16():
        return FLOAT32
    path = _cache_file(f"{description}|{tuple(input_shape)}|{channels_last}")
    timings = None
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
            timings, source = (float(stored["float32_ms"]), float(stored["bf16_ms"])), "cache"
        except (OSError, ValueError, KeyError, TypeError):
            timings = None
    if timings is None:
        timings, source = probe(backbone, input_shape, channels_last=channels_last), "measured"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, {"float32_ms": timings[0], "bf16_ms": timings[1], "input_shape": list(input_shape),
                                     "description": description}, indent=None, sort_keys=False)
        except (OSError, FileWriteError) as error:
            log.warning("cannot write the precision probe cache %s: %s", path, error)
    float32_ms, bf16_ms = timings
    chosen = BF16 if float32_ms >= REQUIRED_SPEEDUP * bf16_ms else FLOAT32
    log.info("trainer.precision=auto: %s (CPU has native bf16; backbone step float32 %.0f ms, bf16 %.0f ms, %s)",
             chosen, float32_ms, bf16_ms, source)
    return chosen
