"""Losses: one small module per file, each citing the equation it implements."""

from selfsup.losses.ntxent import NTXentLoss

__all__ = ["NTXentLoss"]
