"""Views made on a side CUDA stream, so that they overlap the previous step's kernels.

Lightning moves batch ``t + 1`` to the device and makes its views (``transfer_batch_to_device``)
right after step ``t``'s kernels are queued: without host syncs in the step, the CPU is then ahead
of the GPU and step ``t``'s kernels are still running. On the default stream the copy and the view
kernels would queue behind them; on a side stream they run beside them (the view ops are
memory-bound elementwise kernels, the step's are mostly compute-bound convolutions and GEMMs), and
the default stream only waits for them where step ``t + 1`` begins (CUDA C Programming Guide,
"Streams"; ``torch.cuda.Stream``). Tensors made on the side stream and read on the default one are
``record_stream``-ed so the caching allocator does not hand their memory back to the side stream
early (PyTorch docs, "CUDA semantics: stream semantics").

On the CPU (and any non-CUDA device) the views are simply made in place, as before.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from lightning.fabric.utilities.apply_func import apply_to_collection


class ViewsMade(tuple):
    """A ``(views, labels, indices)`` batch whose views are already made (``on_after_batch_transfer`` skips it)."""


class ViewStream:
    """Runs ``make()`` (device copy + views of one batch) on a side stream of a CUDA ``device``.

    Example:
        >>> stream = ViewStream()
        >>> batch = stream.run(lambda: make_views(batch.to(device, non_blocking=True)), device)
    """

    def __init__(self) -> None:
        self.streams: dict[torch.device, torch.cuda.Stream] = {}

    def run(self, make: Callable[[], Any], device: torch.device) -> ViewsMade:
        if device.type != "cuda":
            return ViewsMade(make())
        main = torch.cuda.current_stream(device)
        side = self.streams.get(device)
        if side is None:
            side = self.streams[device] = torch.cuda.Stream(device)
            side.wait_stream(main)  # once: whatever the default stream prepared (the transform's buffers)
        with torch.cuda.stream(side):
            batch = make()
        main.wait_stream(side)
        apply_to_collection(batch, torch.Tensor, lambda t: t.record_stream(main) if t.is_cuda else None)
        return ViewsMade(batch)
