"""CPU speed-ups, one removable part: fast 3×3 convolutions behind ordinary ``nn`` modules
(Winograd F(4×4, 3×3), chosen per layer shape by measurement), bf16 autocast where the CPU has it,
and the C allocator setting for CPU training. ``selfsup train`` applies them through
:class:`CpuSpeedups` (``cpu:`` config section) and :func:`tune_cpu_allocator`; each falls back
to PyTorch's own behaviour elsewhere."""

from selfsup.ops.allocator import tune_cpu_allocator
from selfsup.ops.autotune import AUTOTUNER, ConvolutionAutotuner
from selfsup.ops.callback import CpuSpeedups
from selfsup.ops.machine import machine_info, machine_line
from selfsup.ops.precision import native_bf16, resolve_precision
from selfsup.ops.winograd import (
    AutotunedConv2d,
    KernelUnavailable,
    WinogradConv2d,
    dense_conv3x3,
    use_direct,
    use_winograd,
    winograd_conv3x3,
)

__all__ = ["AUTOTUNER", "AutotunedConv2d", "ConvolutionAutotuner", "CpuSpeedups", "KernelUnavailable",
           "WinogradConv2d", "dense_conv3x3", "machine_info", "machine_line", "native_bf16", "resolve_precision",
           "tune_cpu_allocator", "use_direct", "use_winograd", "winograd_conv3x3"]
