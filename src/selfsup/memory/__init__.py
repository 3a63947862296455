"""Stateful stores of past embeddings: MoCo's key queue, instance-discrimination memory banks."""

from selfsup.memory.bank import MemoryBank
from selfsup.memory.queue import KeyQueue

__all__ = ["KeyQueue", "MemoryBank"]
