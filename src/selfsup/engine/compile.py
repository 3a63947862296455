"""``trainer.compile``: the method's forward (backbone, heads, loss) through ``torch.compile``.

The bound ``forward`` is compiled, not the module, so parameters, ``state_dict`` keys and
checkpoints stay those of the eager method. ``reduce-overhead`` replays CUDA graphs (PyTorch docs,
"torch.compile: mode"): one launch per graph instead of one per kernel, which is what bounds small
models on a GPU; each step is then marked as a new graph step, and outputs that outlive the step
must be copied (the next replay overwrites them).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

log = logging.getLogger(__name__)

GRAPH_MODES = ("reduce-overhead", "max-autotune")  # the modes that replay CUDA graphs on a GPU


def compile_mode(setting: Union[bool, str]) -> Optional[str]:
    """``trainer.compile`` -> torch.compile's ``mode`` (None: eager)."""
    if setting is False:
        return None
    return "default" if setting is True else str(setting)


class CompiledForward:
    """Calls ``method(views, indices)``, compiled when ``setting`` asks; falls back to eager on failure.

    torch.compile compiles at the first call; if that raises (no compiler toolchain, an operation
    dynamo cannot trace into a graph, an old GPU for Triton), one warning line says why and every
    later step runs eagerly. Errors after the first successful step are the model's, and propagate.
    """

    def __init__(self, method: nn.Module, setting: Union[bool, str]) -> None:
        self.method = method
        self.mode = compile_mode(setting)
        self.graphs = False  # whether the last step replayed CUDA graphs (its outputs are overwritten by the next)
        self._compiled: Optional[Callable[..., Any]] = None
        self._proven = False
        if self.mode is not None:
            try:
                self._compiled = torch.compile(method.forward, mode=self.mode)
            except Exception as err:  # e.g. "torch.compile is not supported on Python 3.14+"
                self._warn(err)

    def _warn(self, err: Exception) -> None:
        message = " ".join(str(err).split())[:300] or type(err).__name__
        log.warning("trainer.compile=%s: torch.compile failed (%s: %s); training eagerly",
                    self.mode, type(err).__name__, message)

    def __call__(self, views: Any, indices: Any) -> Any:
        if self._compiled is None:
            return self.method(views, indices)
        self.graphs = self.mode in GRAPH_MODES and any(v.is_cuda for v in views)
        if self.graphs:
            torch.compiler.cudagraph_mark_step_begin()
        if self._proven:
            return self._compiled(views, indices)
        try:
            output = self._compiled(views, indices)
        except Exception as err:
            self._warn(err)
            self._compiled, self.graphs = None, False
            return self.method(views, indices)
        self._proven = True
        return output
