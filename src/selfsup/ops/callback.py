"""The CPU speed-ups of ``selfsup train`` as one Lightning callback (``cpu:`` config section).

``train()`` builds one :class:`CpuSpeedups` and hands it to the Trainer; nothing else in the engine
knows about selfsup.ops. Removing the speed-ups is deleting ``src/selfsup/ops/`` and that line
(plus the allocator line of ``selfsup train``/``eval`` in cli.py, see README "CPU speed-ups").
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from lightning.pytorch.callbacks import Callback
from torch import nn

from selfsup.ops.autotune import AUTOTUNER
from selfsup.ops.precision import FLOAT32, resolve_precision
from selfsup.ops.winograd import use_winograd

log = logging.getLogger(__name__)

PROBE_BATCH = 64
"""Images in the bf16 probe's batch: enough to load the cores, small enough to take seconds."""


class CpuSpeedups(Callback):
    """On CPU runs: 3×3 convolutions per ``cpu.convolution`` (``auto``: per layer shape, whichever
    of Winograd and PyTorch's direct kernel measured faster here; ``winograd``; ``direct``), and
    ``trainer.precision=auto`` resolved to bf16 autocast where it pays (:attr:`precision`).
    Off the CPU it changes nothing. The C allocator is not its business: a library must not
    retune a host program's malloc; ``selfsup train`` does that (``selfsup.ops.tune_cpu_allocator``).

    Args:
        config: the run's ``TrainConfig``.
        backbone: the backbone being trained, for the bf16 probe of ``precision=auto``.
        image_size: the side of the training views, for that probe.
        on_cpu: whether the run trains on the CPU.
    """

    def __init__(self, config: Any, backbone: Optional[nn.Module], image_size: Optional[int], on_cpu: bool) -> None:
        self.convolution = config.cpu.convolution
        self.on_cpu = on_cpu
        self._reported = False
        self.precision = FLOAT32 if config.trainer.precision == "auto" else config.trainer.precision
        if config.trainer.precision == "auto" and on_cpu and backbone is not None and image_size:
            first = next((m for m in backbone.modules() if isinstance(m, nn.Conv2d)), None)
            if first is not None:
                shape = (min(PROBE_BATCH, config.batch_size), first.in_channels, image_size, image_size)
                try:
                    self.precision = resolve_precision(
                        "auto", on_cpu, backbone, shape, description=f"{config.backbone} {config.backbone_args}",
                        channels_last=config.trainer.channels_last)
                except (RuntimeError, ValueError) as error:  # a backbone the probe cannot feed: stay float32
                    log.warning("trainer.precision=auto: probe failed (%s); float32", error)

    def setup(self, trainer: Any, pl_module: nn.Module, stage: str) -> None:
        if self.on_cpu and self.convolution != "direct":
            use_winograd(getattr(pl_module, "method", pl_module), autotune=self.convolution == "auto")

    def on_train_batch_end(self, trainer: Any, pl_module: nn.Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self._reported:  # every layer shape has been chosen by the end of the first step
            self._reported = True
            if self.on_cpu and self.convolution == "auto":
                AUTOTUNER.log_summary()
