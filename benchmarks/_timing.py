"""What every benchmark reports about its timings: per-step seconds kept, the median with its spread.

A figure is the median images/s over every timed step of every round; its spread is the range
(min–max) of those steps' images/s, so one slow step shows. The machine line comes from
``selfsup.ops.machine`` (CPU model, cores/threads, ISA flags, torch, which kernels ran).
"""

from __future__ import annotations

import statistics
from typing import Dict, Iterable, List

MIN_WARMUP, MIN_STEPS, MIN_ROUNDS = 4, 10, 2
"""Defaults of every benchmark: steady state (glibc's malloc and oneDNN's primitive caches settle in
the first steps), enough steps for a median, sides interleaved A, B, A, B in fresh processes."""


def rate(seconds: Iterable[float], images: int) -> Dict[str, float]:
    """Images/s of timed steps: ``median``, ``min`` and ``max`` (the spread), ``steps``."""
    seconds = [s for s in seconds if s > 0]
    if not seconds:
        raise ValueError("no timed steps")
    return {"median": round(images / statistics.median(seconds), 2), "min": round(images / max(seconds), 2),
            "max": round(images / min(seconds), 2), "steps": len(seconds)}


def pooled(runs: List[Dict], key: str) -> List[float]:
    """Every step time under ``key`` of every run (round)."""
    return [s for run in runs for s in run[key]]


def fmt(summary: Dict[str, float], digits: int = 1) -> str:
    """``"57.7 (55.1–58.3)"``: median (min–max)."""
    return f"{summary['median']:.{digits}f} ({summary['min']:.{digits}f}–{summary['max']:.{digits}f})"
