"""Per-machine choice between selfsup's fast 3×3 convolutions and PyTorch's direct ones.

Whether Winograd F(4×4, 3×3) pays depends on the CPU: ~1.6× on the ResNet-18 step of an AVX2-only
host, 0.82× on an AVX-512 host where oneDNN's own kernels are strong (README, "CPU speed-ups").
So, like ``torch.backends.cudnn.benchmark``, :class:`AutotunedConv2d
<selfsup.ops.winograd.AutotunedConv2d>` times both on the first input of each distinct layer shape
(batch, channels, map size, dtype, memory format, and whether a backward pass follows) and keeps
the faster. The timings are kept per machine in ``<cache dir>/autotune/<key>.json``, the key being
the CPU (architecture, model, ISA flags), the torch version, the selfsup kernel source and the
kernel build (compiler included): a later run on the same machine measures nothing, another CPU measures anew.

The measurement runs on its own random tensors (a private generator: the training RNG streams are
untouched) for ``repeats`` timed calls after one warm-up, best time kept: a few hundred ms to a few
seconds per shape on the first step of the first run, once per machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.io import FileWriteError, atomic_write_json

log = logging.getLogger(__name__)

CACHE_VERSION = 1
"""Bump when the measurement itself changes, so that old timings are not reused."""


@dataclass(frozen=True)
class LayerShape:
    """What a convolution's speed depends on (one autotune entry)."""

    path: str  # the fast path that applies: "winograd" or "dense"
    batch: int
    in_channels: int
    out_channels: int
    height: int
    width: int
    dtype: str
    channels_last: bool
    backward: bool  # timed with the backward pass (training) or forward only (no grad)
    threads: int

    def key(self) -> str:
        return (f"{self.path}:{self.batch}x{self.in_channels}x{self.height}x{self.width}->{self.out_channels}:"
                f"{self.dtype}:{'nhwc' if self.channels_last else 'nchw'}:{'fwd+bwd' if self.backward else 'fwd'}:"
                f"{self.threads}t")

    @staticmethod
    def of(path: str, input: Tensor, weight: Tensor) -> "LayerShape":
        n, c, h, w = input.shape
        return LayerShape(path, n, c, weight.shape[0], h, w, str(input.dtype).replace("torch.", ""),
                          input.dim() == 4 and input.is_contiguous(memory_format=torch.channels_last)
                          and not input.is_contiguous(),
                          torch.is_grad_enabled() and (input.requires_grad or weight.requires_grad),
                          torch.get_num_threads())


@dataclass
class Choice:
    direct_ms: float
    fast_ms: float
    source: str = "measured"  # or "cache"

    @property
    def fast(self) -> bool:
        return self.fast_ms < self.direct_ms


def best_ms(call: Callable[[], object], repeats: int) -> float:
    """Milliseconds of the fastest of ``repeats`` calls, after one warm-up call."""
    call()  # warm-up: first-touch of buffers, oneDNN primitive creation
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return 1e3 * best


def measure(shape: LayerShape, repeats: int = 3) -> Tuple[float, float]:
    """Milliseconds of (direct, fast path) for one layer shape: forward, plus both gradients when
    ``shape.backward``; best of ``repeats`` after a warm-up."""
    from selfsup.ops.winograd import dense_conv3x3, winograd_conv3x3

    generator = torch.Generator().manual_seed(0)
    dtype = getattr(torch, shape.dtype)
    x = torch.randn(shape.batch, shape.in_channels, shape.height, shape.width, generator=generator, dtype=dtype)
    if shape.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(shape.out_channels, shape.in_channels, 3, 3, generator=generator, dtype=dtype)
    weight = weight * shape.in_channels ** -0.5
    fast = winograd_conv3x3 if shape.path == "winograd" else dense_conv3x3
    grad = torch.randn(shape.batch, shape.out_channels, shape.height, shape.width, generator=generator, dtype=dtype)
    if shape.channels_last:
        grad = grad.contiguous(memory_format=torch.channels_last)

    def step(conv: Callable[[Tensor, Tensor], Tensor]) -> Callable[[], object]:
        if not shape.backward:
            return lambda: conv(x, weight)
        leaf_x, leaf_w = x.detach().requires_grad_(True), weight.detach().requires_grad_(True)
        return lambda: torch.autograd.grad(conv(leaf_x, leaf_w), (leaf_x, leaf_w), grad)

    with torch.enable_grad() if shape.backward else torch.no_grad():
        direct = best_ms(step(lambda a, b: F.conv2d(a, b, padding=1)), repeats)
        ours = best_ms(step(fast), repeats)
    return direct, ours


def machine_cache_key() -> str:
    """CPU (architecture, model, ISA flags), torch version, selfsup kernel source, and the kernel
    build (variant, compiler path and version: :func:`selfsup.ops.winograd.build_key`)."""
    from selfsup.ops import winograd
    from selfsup.ops.machine import cpu_key

    sources = winograd.KERNEL_SOURCE.read_bytes() + Path(winograd.__file__).read_bytes()
    build = winograd.build_key(os.environ.get("CC") or "cc")
    text = f"{cpu_key()}|{torch.__version__}|{winograd.build_variant()}|{build}|{CACHE_VERSION}"
    return hashlib.sha256(sources + text.encode()).hexdigest()[:16]


def default_cache_file() -> Path:
    from selfsup.ops.winograd import cache_dir

    return cache_dir() / "autotune" / f"conv3x3-{machine_cache_key()}.json"


class ConvolutionAutotuner:
    """Times, remembers and reports the per-shape choice. One per process (:data:`AUTOTUNER`).

    Args:
        cache_file: the JSON file of this machine's timings (None: :func:`default_cache_file`,
            resolved at first use); ``False`` keeps them in memory only.
        measure: ``LayerShape -> (direct_ms, fast_ms)``; tests inject fake timings here.
    """

    def __init__(self, cache_file: Optional[Path] | bool = None,
                 measure: Callable[[LayerShape], Tuple[float, float]] = measure) -> None:
        self._cache_file = cache_file
        self._measure = measure
        self._choices: Dict[str, Choice] = {}
        self._loaded = False
        self._used: Dict[str, Tuple[LayerShape, Choice]] = {}  # this process's shapes, for the summary
        self._reported: set = set()
        self._lock = threading.Lock()

    @property
    def cache_file(self) -> Optional[Path]:
        if self._cache_file is None:
            self._cache_file = default_cache_file()
        return self._cache_file or None

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        path = self.cache_file
        if path is None or not path.is_file():
            return
        try:
            stored = json.loads(path.read_text())["choices"]
            for key, entry in stored.items():
                self._choices.setdefault(key, Choice(float(entry["direct_ms"]), float(entry["fast_ms"]), "cache"))
        except (OSError, ValueError, KeyError, TypeError) as error:  # a damaged cache is re-measured, not fatal
            log.warning("ignoring the convolution autotune cache %s: %s", path, error)

    def _save(self) -> None:
        path = self.cache_file
        if path is None:
            return
        entries = {key: {"direct_ms": round(c.direct_ms, 3), "fast_ms": round(c.fast_ms, 3)}
                   for key, c in self._choices.items()}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_file():  # keep what another process measured meanwhile
                try:
                    entries = {**json.loads(path.read_text()).get("choices", {}), **entries}
                except (OSError, ValueError):
                    pass
            atomic_write_json(path, {"version": CACHE_VERSION, "choices": entries}, indent=1)
        except (OSError, FileWriteError) as error:  # an unwritable cache costs a re-measurement next run, nothing else
            log.warning("cannot write the convolution autotune cache %s: %s", path, error)

    def choice(self, shape: LayerShape) -> Choice:
        """The timings for ``shape``: from this process, the cache file, or measured now."""
        key = shape.key()
        with self._lock:
            self._load()
            found = self._choices.get(key)
            if found is None:
                direct_ms, fast_ms = self._measure(shape)
                found = self._choices[key] = Choice(direct_ms, fast_ms)
                log.debug("conv3x3 autotune %s: direct %.2f ms, %s %.2f ms", key, direct_ms, shape.path, fast_ms)
                self._save()
            self._used[key] = (shape, found)
            return found

    def takes_fast_path(self, path: str, input: Tensor, weight: Tensor) -> bool:
        """Whether the fast ``path`` measured faster than PyTorch's convolution for this input."""
        return self.choice(LayerShape.of(path, input, weight)).fast

    def summary(self) -> Optional[str]:
        """One line on the shapes chosen since the last summary (None when there are none)."""
        new = {key: value for key, value in self._used.items() if key not in self._reported}
        if not new:
            return None
        self._reported.update(new)
        groups: Dict[str, List[Choice]] = {"winograd": [], "dense": [], "direct": []}
        for shape, choice in new.values():
            groups[shape.path if choice.fast else "direct"].append(choice)
        measured = sum(1 for _, c in new.values() if c.source == "measured")

        def ratio(choices: List[Choice]) -> str:
            return f"{sum(c.direct_ms for c in choices) / sum(c.fast_ms for c in choices):.2f}×"

        parts = [f"{name} for {len(choices)}"
                 + (f" ({ratio(choices)} as fast as direct)" if choices and name != "direct" else "")
                 for name, choices in (("winograd", groups["winograd"]), ("dense GEMM", groups["dense"]))
                 if choices]
        parts.append(f"direct for {len(groups['direct'])}"
                     + (f" (the fast path ran {ratio(groups['direct'])} as fast)" if groups["direct"] else ""))
        where = str(self.cache_file) if self.cache_file else "memory (no cache file)"
        return (f"cpu convolution autotune: {len(new)} shapes ({measured} measured now, "
                f"{len(new) - measured} read from {where}): " + ", ".join(parts))

    def log_summary(self) -> Optional[str]:
        """Log :meth:`summary` at INFO (once per set of new shapes) and return it."""
        line = self.summary()
        if line:
            log.info(line)
        return line

    def entries(self) -> Dict[str, Dict[str, object]]:
        """This process's choices, for benchmark JSON."""
        return {key: {**asdict(choice), "fast": choice.fast} for key, choice in self._choices.items()}


AUTOTUNER = ConvolutionAutotuner()
"""The process's autotuner, used by :class:`selfsup.ops.winograd.AutotunedConv2d`."""
