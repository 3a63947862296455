"""Tracking by copying through attention (Vondrick et al., "Tracking Emerges by Colorizing Videos", ECCV 2018).

A model trained to colourise a grey target frame by pointing into a colourful reference frame
(:mod:`selfsup.methods.video_colorization`) can point with anything else: here, segmentation
labels. The pointer is the method's :func:`~selfsup.methods.video_colorization.attention_copy`
(the paper's Eq. 1-2: each target pixel's copy is an attention-weighted sum of the reference
pixels' values, the attention a softmax over dot products of per-pixel embeddings);
:func:`propagate_masks` uses it to carry the first frame's mask through a video (Sec. 3.3,
"tracking"), and :func:`mean_iou` scores the result against ground-truth masks (the region
similarity J of the DAVIS benchmark); :func:`read_masks` and :func:`write_mask` read and write
label PNGs (DAVIS palettes). ``selfsup track`` (:mod:`selfsup.commands.track`) is the command line.

Example:
    >>> masks = propagate_masks(model, frames, first_mask)   # frames (T, 3, H, W) uint8, first_mask (H, W)
    >>> mean_iou(masks, ground_truth)                         # over frames 2..T and objects
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Protocol, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from selfsup.errors import DataError
from selfsup.methods.video_colorization import attention_copy


class PixelEmbedder(Protocol):
    """What propagation needs from a model: per-pixel embeddings of RGB frames."""

    def pixel_embeddings(self, rgb: Tensor) -> Tensor:
        """RGB in [0, 1] ``(B, 3, H, W)`` -> embeddings ``(B, E, h, w)``."""
        ...


def _as_unit_rgb(frames: Tensor) -> Tensor:
    return frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()


@torch.no_grad()
def propagate_masks(model: PixelEmbedder, frames: Tensor, first_mask: Tensor, temperature: float = 0.5,
                    topk: Optional[int] = None, context: int = 1, size: Optional[Tuple[int, int]] = None,
                    batch_size: int = 16) -> Tensor:
    """Carry ``first_mask`` through ``frames`` by attention between per-pixel embeddings.

    Each frame ``t >= 1`` copies label probabilities from the first frame (its given mask, exact)
    and from the ``context`` frames before it (their propagated probabilities), the references of
    one attention over all their pixels; labels are the argmax of the copied probabilities,
    upsampled bilinearly from the embedding grid to the frame size.

    Args:
        model: anything with ``pixel_embeddings`` (a trained ``video-colorization`` method).
        frames: ``(T, 3, H, W)`` uint8, or float in [0, 1].
        first_mask: ``(H, W)`` integer labels of frame 0 (0 = background, 1..K-1 = objects).
        temperature: softmax temperature of the attention (0.5: sharper than training, so an object
            keeps more than half of the copied label mass).
        topk: attend to the ``topk`` most similar reference pixels only (None: all).
        context: number of previous frames used as references besides the first.
        size: run the network on frames resized to ``size`` (default: as given).
        batch_size: frames embedded per forward pass.
    Returns:
        ``(T, H, W)`` int64 labels; frame 0 is ``first_mask``.
    """
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be (T, 3, H, W) RGB, got {tuple(frames.shape)}")
    if tuple(first_mask.shape) != tuple(frames.shape[-2:]):
        raise ValueError(f"first_mask {tuple(first_mask.shape)} must have the frames' size {tuple(frames.shape[-2:])}")
    height, width = frames.shape[-2:]
    rgb = _as_unit_rgb(frames)
    if size is not None and tuple(size) != (height, width):
        rgb = F.interpolate(rgb, size=size, mode="bilinear", antialias=True, align_corners=False)
    embeddings = torch.cat([model.pixel_embeddings(chunk) for chunk in rgb.split(batch_size)])  # (T, E, h, w)
    grid = embeddings.shape[-2:]
    flat = embeddings.flatten(2)  # (T, E, N)
    labels = first_mask.long()
    num_labels = int(labels.max()) + 1
    one_hot = F.one_hot(labels, num_labels).permute(2, 0, 1).float().unsqueeze(0)  # (1, K, H, W)
    first_probs = F.adaptive_avg_pool2d(one_hot, grid).flatten(2).transpose(1, 2)  # (1, N, K)
    masks = [labels]
    recent: list[Tuple[Tensor, Tensor]] = []  # (embeddings (1, E, N), probabilities (1, N, K)) of the last frames
    for t in range(1, len(frames)):
        keys = torch.cat([flat[:1]] + [e for e, _ in recent], dim=2)  # (1, E, N * references)
        values = torch.cat([first_probs] + [p for _, p in recent], dim=1)  # (1, N * references, K)
        probs, _ = attention_copy(keys, flat[t:t + 1], values, temperature, topk)  # (1, N, K)
        if context > 0:
            recent = (recent + [(flat[t:t + 1], probs)])[-context:]
        full = F.interpolate(probs.transpose(1, 2).reshape(1, num_labels, *grid), size=(height, width),
                             mode="bilinear", align_corners=False)
        masks.append(full[0].argmax(dim=0))
    return torch.stack(masks)


def mean_iou(predicted: Tensor, truth: Tensor, skip_first: bool = True) -> float:
    """Region similarity J: intersection over union per object and frame, averaged.

    Objects are the non-zero labels of ``truth``'s first frame; a frame where an object is absent
    from both masks counts as 1. ``skip_first``: frame 0 is the given mask, not a prediction.

    Args:
        predicted, truth: ``(T, H, W)`` integer labels.
    """
    if predicted.shape != truth.shape:
        raise ValueError(f"predicted {tuple(predicted.shape)} and true masks {tuple(truth.shape)} differ in shape")
    objects = [k for k in torch.unique(truth[0]).tolist() if k != 0]
    scores = []
    for t in range(1 if skip_first else 0, len(truth)):
        for k in objects:
            p, g = predicted[t] == k, truth[t] == k
            union = (p | g).sum().item()
            scores.append(1.0 if union == 0 else (p & g).sum().item() / union)
    return float(sum(scores) / len(scores)) if scores else float("nan")


#: background black, then distinct colours for objects 1, 2, … (the label is the palette index).
PALETTE = [0, 0, 0, 230, 25, 75, 60, 180, 75, 255, 225, 25, 0, 130, 200, 245, 130, 48, 145, 30, 180,
           70, 240, 240, 240, 50, 230, 210, 245, 60, 250, 190, 212, 0, 128, 128]


def read_masks(paths: list[Path]) -> list[torch.Tensor]:
    """Label masks ``(H, W)`` int64 of one video: palette indices (DAVIS), or for grey/RGB images the
    rank of each distinct value among all of the video's masks (black = 0, background)."""
    arrays = []
    for path in paths:
        try:
            with Image.open(path) as image:
                if image.mode == "P":
                    arrays.append(("index", np.array(image, dtype=np.int64)))
                    continue
                pixels = np.array(image.convert("RGB"), dtype=np.int64)
        except (OSError, SyntaxError, ValueError) as e:
            raise DataError(f"cannot read mask {path}: {e}".replace("\n", " ")) from e
        arrays.append(("code", (pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2]))
    codes = np.unique(np.concatenate([a.ravel() for kind, a in arrays if kind == "code"] or [np.zeros(1, np.int64)]))
    codes = np.union1d(codes, [0])  # black is label 0 even when no mask has background
    return [torch.from_numpy(a if kind == "index" else np.searchsorted(codes, a)) for kind, a in arrays]


def write_mask(mask: torch.Tensor, path: Path) -> None:
    """Labels ``(H, W)`` as a palette PNG (index = label)."""
    if int(mask.max()) > 255:
        raise DataError(f"mask has label {int(mask.max())}; palette PNGs hold labels 0..255")
    image = Image.fromarray(mask.to(torch.uint8).numpy(), mode="P")
    image.putpalette(PALETTE + [0] * (768 - len(PALETTE)))
    image.save(path)


__all__ = ["PALETTE", "PixelEmbedder", "attention_copy", "mean_iou", "propagate_masks", "read_masks", "write_mask"]
