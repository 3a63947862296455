"""Winograd convolution F(4×4, 3×3) for CPU training (Lavin & Gray 2016, "Fast Algorithms for
Convolutional Neural Networks").

Why it exists: a 3×3 stride-1 convolution is most of a ResNet's arithmetic, and on CPUs without
AVX-512 oneDNN (PyTorch's CPU convolution) has no Winograd kernel, only direct ones; its
weight-gradient kernel is the slowest of the three passes. Winograd's algorithm computes each 4×4
output tile from a 6×6 input tile with 36 products per (input, output) channel pair instead of
144, in three steps::

    V = Bᵀ d B            input tiles  -> 36 planes (T, C)       (C kernel, memory bound)
    M[ξ] = V[ξ] @ U[ξ]     one GEMM per plane, U = G g Gᵀ (C, K)  (torch.mm, i.e. MKL)
    Y = Aᵀ M A             36 planes -> output tiles             (C kernel, memory bound)

The backward pass is the same machinery: the input gradient is this convolution of ``dY`` with
the flipped, transposed filter; the weight gradient is ``dU[ξ] = V[ξ]ᵀ @ (A dY Aᵀ)[ξ]`` mapped
back through ``Gᵀ · G``. Results equal the direct convolution up to float32 rounding (relative
error ~1e-5, tested against ``F.conv2d`` and its autograd).

``benchmarks/winograd.py`` times each layer shape against oneDNN's direct kernels and
``benchmarks/vs_lightly.py --convolution-controls`` the whole training step (BENCHMARKS.md).
Maps smaller than 4×4 do not use it: one 6×6 tile for a 2×2 output costs more than the 16 products
the convolution needs there; maps of at most 2×2 run as one dense GEMM instead
(:func:`dense_conv3x3`, no padding products), 3×3 maps stay direct.

The tile planes are large, short-lived buffers (2.25× the activation they come from): on glibc's
default malloc each one is a fresh ``mmap`` whose pages fault in at every call, which costs more
than Winograd saves. ``selfsup train`` tunes the allocator on CPU runs
(``selfsup.ops.tune_cpu_allocator``); call it too when using :func:`use_winograd` in your own loop.

Where it pays depends on the CPU: on an AVX2-only host (the machine it was written on) the ResNet-18
SimCLR step ran ~1.6× faster with it; on an AVX-512 host (AMD EPYC with avx512_bf16) oneDNN's own
kernels were faster (direct 67–70 img/s, Winograd 56). ``cpu.convolution=auto`` (the default)
therefore times both per layer shape at the first step and keeps the faster
(``selfsup.ops.autotune``); ``winograd`` forces it wherever it applies.

The transforms live in ``winograd_kernels.c``, compiled at first use with the system C compiler
(``$CC``, else ``cc``) into a cache folder and loaded with ctypes. Builds are keyed by the source,
the compiler (path and ``--version``), the flags and the CPU (:func:`build_key`): a generic build,
an AVX2+FMA one and an AVX-512 one (:data:`BUILD_FLAGS`; :func:`build_variant` picks by the CPU's
flags). ctypes releases the GIL, so the tiles of one transform are split across at most
``torch.get_num_threads()`` Python threads that live for that call only (:func:`_parallel`).
Without a compiler nothing breaks: :func:`use_winograd` warns once and leaves the convolutions as
they are.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

log = logging.getLogger(__name__)

KERNEL_SOURCE = Path(__file__).with_name("winograd_kernels.c")
MIN_SIZE = 4
"""Smallest feature-map side computed with Winograd; smaller maps use the direct convolution."""
MIN_CHANNELS = 64
"""Fewest input and output channels computed with Winograd. Below, its memory-bound transforms
outweigh the products it saves (``benchmarks/winograd.py``: resnet18-tiny's 16- and 32-channel
layers ran slower than direct; from 64 channels on, as fast or faster)."""

# F(4×4, 3×3) with interpolation points 0, ±1, ±2, ∞ (Lavin & Gray 2016). The C kernels
# hold Bᵀ and Aᵀ; the filter transform G runs here, on the small weight tensor.
FILTER_TRANSFORM = (
    (1 / 4, 0.0, 0.0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0.0, 0.0, 1.0),
)
TILES = 36  # 6×6 transformed positions per tile
PLANE_PADDING = 16  # floats between planes, so their starts are not 2^k bytes apart (cache sets)


class KernelUnavailable(RuntimeError):
    """The C kernels could not be built or loaded (no compiler, unwritable cache, ...)."""


# ----------------------------------------------------------------------------- building the kernels
_library: Optional[ctypes.CDLL] = None
_library_error: Optional[str] = None
_build_lock = threading.Lock()

BUILD_FLAGS = {
    "generic": [],
    "avx2": ["-mavx2", "-mfma"],
    "avx512": ["-mavx2", "-mfma", "-mavx512f"],
}
"""The instruction sets each build may use beyond the compiler's baseline (x86-64 SSE2, Armv8 NEON).
The C loops run over 16 channels: one AVX-512 register, two AVX2 ones."""
COMMON_FLAGS = ["-O3", "-std=c99", "-shared", "-fPIC"]


def build_variant() -> str:
    """The build this CPU runs: ``"avx512"`` with AVX-512F, ``"avx2"`` with AVX2 and FMA, else ``"generic"``."""
    from selfsup.ops.machine import cpu_capability, has_flag

    if has_flag("avx512f") and has_flag("avx2") and has_flag("fma"):
        return "avx512"
    if has_flag("avx2") and has_flag("fma"):
        return "avx2"
    capability = cpu_capability()  # no /proc/cpuinfo (macOS): what PyTorch's dispatcher found
    return {"AVX512": "avx512", "AVX2": "avx2"}.get(capability, "generic")


def _compiler_flags(variant: Optional[str] = None) -> List[str]:
    return COMMON_FLAGS + BUILD_FLAGS[variant or build_variant()]


def cache_dir() -> Path:
    """Where compiled kernels and autotune timings are kept: ``$SELFSUP_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/selfsup`` (``~/.cache/selfsup``)."""
    if os.environ.get("SELFSUP_CACHE_DIR"):
        return Path(os.environ["SELFSUP_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "selfsup"


def compiler_identity(compiler: str) -> str:
    """The compiler's resolved path and the first line of its ``--version``: a different gcc (or a
    gcc upgraded in place) must not load another's binary."""
    path = shutil.which(compiler)
    if path is None:
        raise KernelUnavailable(f"C compiler '{compiler}' not found; install gcc or set CC")
    try:
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as error:
        raise KernelUnavailable(f"C compiler '{compiler}' does not run: {error}") from None
    return f"{os.path.realpath(path)} {version.strip().splitlines()[0] if version.strip() else ''}"


def build_key(compiler: str, variant: Optional[str] = None) -> str:
    """The cache key of one build: kernel source, compiler (path and version), flags, and the CPU
    (architecture, model, ISA flags; :func:`selfsup.ops.machine.cpu_key`)."""
    from selfsup.ops.machine import cpu_key

    text = " ".join([compiler_identity(compiler), *_compiler_flags(variant), platform.machine(), cpu_key()])
    return hashlib.sha256(KERNEL_SOURCE.read_bytes() + text.encode()).hexdigest()[:16]


def _build(compiler: str, variant: Optional[str] = None) -> Path:
    variant = variant or build_variant()
    flags = _compiler_flags(variant)
    folder = cache_dir() / "kernels"
    target = folder / f"winograd-{platform.machine()}-{variant}-{build_key(compiler, variant)}.so"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    # Compile to a temporary name and rename: a concurrent process never loads a half-written file.
    fd, partial = tempfile.mkstemp(prefix=target.name, suffix=".part", dir=folder)
    os.close(fd)
    try:
        result = subprocess.run([compiler, *flags, str(KERNEL_SOURCE), "-o", partial],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise KernelUnavailable(f"{compiler} failed on {KERNEL_SOURCE.name}: {result.stderr.strip()[:500]}")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


def _open(path: Path) -> ctypes.CDLL:
    library = ctypes.CDLL(str(path))
    for name in ("wino_input", "wino_output", "wino_output_adjoint"):
        getattr(library, name).restype = None
    return library


def load_kernels() -> ctypes.CDLL:
    """Build (once per machine, compiler and source version) and load the C transforms.

    Raises:
        KernelUnavailable: with the reason, e.g. no C compiler on ``$PATH``.
    """
    global _library, _library_error
    with _build_lock:
        if _library is not None:
            return _library
        if _library_error is not None:
            raise KernelUnavailable(_library_error)
        compiler = os.environ.get("CC") or "cc"
        try:
            _library = _open(_build(compiler))
        except (OSError, KernelUnavailable) as error:
            _library_error = f"cannot build selfsup's Winograd kernels: {error}"
            raise KernelUnavailable(_library_error) from None
        return _library


def load_variant(variant: str) -> ctypes.CDLL:
    """Build and load one named build (``"generic"``, ``"avx2"``, ``"avx512"``) whatever this CPU
    runs by default: for tests of each build. The caller must know the CPU can execute it."""
    return _open(_build(os.environ.get("CC") or "cc", variant))


@contextlib.contextmanager
def kernels_from(library: ctypes.CDLL) -> Iterator[None]:
    """Run the convolutions of this block with ``library`` (from :func:`load_variant`)."""
    global _library
    with _build_lock:
        previous, _library = _library, library
    try:
        yield
    finally:
        with _build_lock:
            _library = previous


def is_available() -> bool:
    """True when the C kernels build and load on this machine."""
    try:
        load_kernels()
    except KernelUnavailable:
        return False
    return True


# ----------------------------------------------------------------------------- running them
def _parallel(kernel, tiles: int, arguments: List[Tuple]) -> None:
    """Run ``kernel(*arguments[i], t_begin, t_end)`` on one range of tiles per thread.

    The threads are this call's own (ctypes releases the GIL while the C loop runs) and end
    with it: no pool outlives a convolution, and there are never more than
    ``torch.get_num_threads()`` of them (see :func:`_threads_for`). Starting two threads costs
    ~0.1 ms against the milliseconds a transform of a ≥ 64-channel layer takes.
    """
    threads = len(arguments)
    bounds = [(tiles * i // threads, tiles * (i + 1) // threads) for i in range(threads)]
    calls = [(*args, ctypes.c_long(b), ctypes.c_long(e)) for args, (b, e) in zip(arguments, bounds)]
    if threads == 1:
        kernel(*calls[0])
        return
    with ThreadPoolExecutor(threads - 1, thread_name_prefix="selfsup-winograd") as pool:
        futures = [pool.submit(kernel, *args) for args in calls[1:]]
        kernel(*calls[0])  # this thread takes the first range
        for future in futures:
            future.result()


def _threads_for(tiles: int) -> int:
    return max(1, min(torch.get_num_threads(), tiles // 64 or 1))


def _ptr(tensor: Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(tensor.data_ptr())


def _planes(tiles: int, channels: int) -> Tensor:
    """36 planes ``(T, channels)``, contiguous each, ``PLANE_PADDING`` floats apart."""
    stride = tiles * channels + PLANE_PADDING
    return torch.empty(TILES * stride).as_strided((TILES, tiles, channels), (stride, channels, 1))


def _tile_count(images: int, height: int, width: int) -> int:
    return images * ((height + 3) // 4) * ((width + 3) // 4)


def _image_to_planes(kernel: str, image: Tensor) -> Tensor:
    """``(N, H, W, C)`` contiguous → 36 planes ``(T, C)`` by ``wino_input`` (``V = Bᵀ d B``) or
    ``wino_output_adjoint`` (``A dY Aᵀ``); pixels past the border read as zero."""
    n, h, w, c = image.shape
    tiles = _tile_count(n, h, w)
    planes, zeros = _planes(tiles, c), torch.zeros(c)
    args = (_ptr(image), _ptr(planes), _ptr(zeros), ctypes.c_int(h), ctypes.c_int(w), ctypes.c_int(c),
            ctypes.c_long(planes.stride(0)))
    _parallel(getattr(load_kernels(), kernel), tiles, [args] * _threads_for(tiles))
    return planes


def _output_transform(planes: Tensor, n: int, h: int, w: int) -> Tensor:
    """``M`` planes ``(36, T, K)`` → ``(N, H, W, K)``."""
    k = planes.shape[2]
    out = torch.empty(n, h, w, k)
    tiles = planes.shape[1]
    scratch = torch.empty(_threads_for(tiles), k)  # each thread's sink for outputs past the border
    _parallel(load_kernels().wino_output, tiles,
              [(_ptr(planes), _ptr(out), _ptr(row), ctypes.c_int(h), ctypes.c_int(w), ctypes.c_int(k),
                ctypes.c_long(planes.stride(0))) for row in scratch])
    return out


def _filter_transform(weight: Tensor) -> Tensor:
    """``(K, C, 3, 3)`` → ``U = G g Gᵀ`` as ``(36, C, K)``."""
    g = weight.new_tensor(FILTER_TRANSFORM)
    return torch.einsum("ai,kcij,bj->abck", g, weight, g).reshape(TILES, weight.shape[1], weight.shape[0]).contiguous()


def _filter_adjoint(grad_u: Tensor) -> Tensor:
    """``dU (36, C, K)`` → ``dg = Gᵀ dU G`` as ``(K, C, 3, 3)``."""
    g = grad_u.new_tensor(FILTER_TRANSFORM)
    return torch.einsum("ai,abck,bj->kcij", g, grad_u.reshape(6, 6, *grad_u.shape[1:]), g)


def _batched_mm(left: Tensor, right: Tensor) -> Tensor:
    """36 independent GEMMs, as a loop of ``torch.mm``: for the skinny (T, 64) @ (64, 64) planes of
    a ResNet's first stage it ran faster than ``torch.bmm`` on this project's 2-core machine (a
    throw-away timing; ``benchmarks/winograd.py`` times the whole layer)."""
    out = _planes(left.shape[1], right.shape[2])
    for i in range(TILES):
        torch.mm(left[i], right[i], out=out[i])
    return out


def _forward_nhwc(x: Tensor, weight: Tensor) -> Tensor:
    """``x (N, H, W, C)`` contiguous, ``weight (K, C, 3, 3)`` → ``(N, H, W, K)``, stride 1, padding 1."""
    n, h, w, _ = x.shape
    return _output_transform(_batched_mm(_image_to_planes("wino_input", x), _filter_transform(weight)), n, h, w)


def _nhwc(t: Tensor) -> Tensor:
    """The ``(N, H, W, C)`` view of an NCHW tensor, in channels_last memory (copied if it is not)."""
    return t.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)


class _WinogradConv3x3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        out = _forward_nhwc(_nhwc(x), weight).permute(0, 3, 1, 2)  # channels_last (N, K, H, W)
        if bias is not None:
            out = out + bias.view(1, -1, 1, 1)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        grad_nhwc = _nhwc(grad_out)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # Stride 1, padding 1: the transposed convolution is this one with the filter rotated
            # 180° and its channel axes swapped.
            grad_x = _forward_nhwc(grad_nhwc, weight.flip(2, 3).transpose(0, 1)).permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            # dU[ξ] = V[ξ]ᵀ dM[ξ]: K = T is long here, where bmm threads each GEMM well.
            grad_u = torch.bmm(_image_to_planes("wino_input", _nhwc(x)).transpose(1, 2),
                               _image_to_planes("wino_output_adjoint", grad_nhwc))
            grad_w = _filter_adjoint(grad_u)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum((0, 2, 3))
        return grad_x, grad_w, grad_b


def winograd_conv3x3(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """3×3 convolution, stride 1, padding 1, computed with Winograd F(4×4, 3×3).

    Args:
        x: ``(N, C, H, W)`` float32 on the CPU (channels_last memory avoids a copy).
        weight: ``(K, C, 3, 3)``.
        bias: optional ``(K,)``.

    Returns:
        ``(N, K, H, W)`` in channels_last memory, equal to ``F.conv2d(x, weight, bias, padding=1)``
        up to float32 rounding.

    Raises:
        KernelUnavailable: the C kernels cannot be built here.
    """
    if x.dim() != 4 or weight.shape[2:] != (3, 3) or x.shape[1] != weight.shape[1]:
        raise ValueError(f"winograd_conv3x3 needs x (N, C, H, W) and weight (K, C, 3, 3) with matching C, "
                         f"got x {tuple(x.shape)} and weight {tuple(weight.shape)}")
    if x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32:
        raise ValueError(f"winograd_conv3x3 runs float32 CPU tensors, got {x.dtype} on {x.device}")
    load_kernels()
    return _WinogradConv3x3.apply(x, weight, bias)


def dense_conv3x3(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """3×3 convolution, stride 1, padding 1, on maps of at most 2×2, as one dense GEMM.

    On such a map every output pixel sees every input pixel through one of the nine taps, so the
    convolution is exactly ``x (N, H·W·C) @ D (H·W·C, H·W·K)`` with ``D`` assembled from the taps,
    and the padding taps a direct kernel multiplies by zero (20 of 36 on a 2×2 map) are gone. Plain
    autograd ops: both gradients are GEMMs too. This is where DINO's 16-pixel local crops end up
    in a ResNet's last stage.

    Args:
        x: ``(N, C, H, W)`` with ``H, W ≤ 2`` (channels_last memory avoids a copy).
        weight: ``(K, C, 3, 3)``; bias: optional ``(K,)``.

    Returns:
        ``(N, K, H, W)`` in channels_last memory.
    """
    n, c, h, w = x.shape
    if h > 2 or w > 2:
        raise ValueError(f"dense_conv3x3 needs maps of at most 2×2, got {h}×{w}")
    k = weight.shape[0]
    pixels = [(i, j) for i in range(h) for j in range(w)]
    # Block (input pixel, output pixel) of D is the tap linking them, picked by a 0/1 matrix: its
    # backward is a GEMM too, deterministic (advanced indexing's index_put_ is not, on the CPU, and
    # a resumed run must repeat the weights bit for bit).
    pick = torch.zeros(len(pixels) ** 2, 9, dtype=weight.dtype)
    for row, ((i_in, j_in), (i_out, j_out)) in enumerate((a, b) for a in pixels for b in pixels):
        pick[row, 3 * (i_in - i_out + 1) + (j_in - j_out + 1)] = 1.0
    blocks = (pick @ weight.permute(2, 3, 1, 0).reshape(9, c * k)).view(h * w, h * w, c, k)
    dense = blocks.permute(0, 2, 1, 3).reshape(h * w * c, h * w * k)
    out = (x.permute(0, 2, 3, 1).reshape(n, h * w * c) @ dense).view(n, h, w, -1).permute(0, 3, 1, 2)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


# ----------------------------------------------------------------------------- nn.Conv2d integration
def _cpu_autocast_enabled() -> bool:
    """Whether CPU autocast is on: ``torch.is_autocast_enabled("cpu")`` from torch 2.4 on (where
    ``torch.get_autocast_dtype`` arrived with it), ``torch.is_autocast_cpu_enabled()`` before."""
    if hasattr(torch, "get_autocast_dtype"):
        return torch.is_autocast_enabled("cpu")
    return torch.is_autocast_cpu_enabled()


def _compiling() -> bool:
    """Whether torch.compile is tracing: ``torch.compiler.is_compiling`` from torch 2.3 on,
    ``torch._dynamo.is_compiling`` in torch 2.2."""
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    if is_compiling is None:
        from torch._dynamo import is_compiling
    return is_compiling()


class WinogradConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (3×3, stride 1, padding 1) for CPU float32 steps: Winograd on maps of at
    least ``MIN_SIZE``×``MIN_SIZE`` with at least ``MIN_CHANNELS`` channels in and out,
    :func:`dense_conv3x3` on maps of at most 2×2, and PyTorch's direct convolution everywhere else
    (3×3 maps, narrow layers, GPU, bf16 autocast, other dtypes, scripting/tracing/compiling).
    Same parameters and state dict as ``nn.Conv2d``."""

    def _fast_path(self, input: Tensor, weight: Tensor) -> Optional[str]:
        """``"winograd"``, ``"dense"`` or None (PyTorch's convolution) for this input."""
        if (
            input.device.type == "cpu"
            and input.dtype == torch.float32
            and weight.dtype == torch.float32
            and input.dim() == 4
            and not _cpu_autocast_enabled()
            and not torch.jit.is_scripting()
            and not torch.jit.is_tracing()
            and not _compiling()
        ):
            if (min(input.shape[-2:]) >= MIN_SIZE and min(self.in_channels, self.out_channels) >= MIN_CHANNELS
                    and _library is not None):
                return "winograd"
            if max(input.shape[-2:]) <= 2:
                return "dense"
        return None

    def _takes_fast_path(self, path: str, input: Tensor, weight: Tensor) -> bool:
        return True

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        path = self._fast_path(input, weight)
        if path is not None and self._takes_fast_path(path, input, weight):
            if path == "winograd":
                return _WinogradConv3x3.apply(input, weight, bias)
            return dense_conv3x3(input, weight, bias)
        return super()._conv_forward(input, weight, bias)


class AutotunedConv2d(WinogradConv2d):
    """:class:`WinogradConv2d` that takes its fast path only for the layer shapes where it measured
    faster than PyTorch's direct convolution on this machine (``selfsup.ops.autotune``, like
    ``torch.backends.cudnn.benchmark``): each new shape is timed once, the choice cached on disk."""

    def _takes_fast_path(self, path: str, input: Tensor, weight: Tensor) -> bool:
        from selfsup.ops.autotune import AUTOTUNER

        return AUTOTUNER.takes_fast_path(path, input, weight)


def _eligible(module: nn.Module) -> bool:
    return (
        type(module) is nn.Conv2d
        and module.kernel_size == (3, 3)
        and module.stride == (1, 1)
        and module.padding in ((1, 1), "same")
        and module.dilation == (1, 1)
        and module.groups == 1
        and module.padding_mode == "zeros"
    )


def use_winograd(model: nn.Module, strict: bool = False, autotune: bool = False) -> int:
    """Switch every plain 3×3, stride-1, padding-1 ``nn.Conv2d`` in ``model`` to
    :class:`WinogradConv2d` (or, with ``autotune``, :class:`AutotunedConv2d`), in place
    (parameters, state dict and GPU behaviour unchanged). Pair it with
    ``selfsup.ops.tune_cpu_allocator()`` (see the module docstring).

    Args:
        model: any module, e.g. a method holding a backbone and its momentum copy.
        strict: raise :class:`KernelUnavailable` instead of warning when the kernels cannot be built.
        autotune: per layer shape, keep whichever of Winograd and the direct convolution measured
            faster on this machine (``cpu.convolution=auto``), instead of always Winograd.

    Returns:
        The number of convolutions switched (0 when the kernels are unavailable).
    """
    try:
        load_kernels()
    except KernelUnavailable as error:
        if strict:
            raise
        log.warning("%s; convolutions stay direct (cpu.convolution=direct silences this)", error)
        return 0
    switched = 0
    target = AutotunedConv2d if autotune else WinogradConv2d
    for module in model.modules():
        if _eligible(module) or type(module) in (WinogradConv2d, AutotunedConv2d):
            module.__class__ = target
            switched += 1
    return switched


def use_direct(model: nn.Module) -> int:
    """Undo :func:`use_winograd` (e.g. before exporting): back to plain ``nn.Conv2d``. Returns the count."""
    switched = 0
    for module in model.modules():
        if type(module) in (WinogradConv2d, AutotunedConv2d):
            module.__class__ = nn.Conv2d
            switched += 1
    return switched
