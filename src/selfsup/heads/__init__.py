"""Heads placed on top of a backbone: projectors, predictors, prototypes."""

from selfsup.heads.projection import ProjectionHead

__all__ = ["ProjectionHead"]
