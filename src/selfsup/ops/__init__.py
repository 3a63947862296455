"""Fast CPU kernels behind ordinary ``nn`` modules; each falls back to PyTorch's own elsewhere."""

from selfsup.ops.winograd import (
    KernelUnavailable,
    WinogradConv2d,
    dense_conv3x3,
    use_direct,
    use_winograd,
    winograd_conv3x3,
)

__all__ = ["KernelUnavailable", "WinogradConv2d", "dense_conv3x3", "use_direct", "use_winograd", "winograd_conv3x3"]
