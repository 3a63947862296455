"""Augmented views for pretraining and deterministic preprocessing for evaluation.

Example:
    >>> from selfsup.transforms import MultiViewTransform, ViewConfig
    >>> transform = MultiViewTransform(ViewConfig.byol(), dataset.info)
    >>> views = transform(image)   # uint8 (C, H, W) -> [float32 (C, S, S), float32 (C, S, S)]
"""

from selfsup.transforms.batched import BatchedMultiViewTransform
from selfsup.transforms.config import ViewConfig
from selfsup.transforms.eval import denormalize, eval_transform
from selfsup.transforms.grid import save_view_grid
from selfsup.transforms.views import MultiViewTransform, blur_kernel_size, build_view

__all__ = ["BatchedMultiViewTransform", "MultiViewTransform", "ViewConfig", "blur_kernel_size", "build_view",
           "denormalize", "eval_transform", "save_view_grid"]
