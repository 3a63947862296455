"""Videos as folders of frames: ``frames:PATH``, training pairs for video colorization.

``PATH`` holds one sub-folder per video; a video's frames are the images directly inside its
folder, in file-name order (``00000.jpg``, ``00001.jpg`` … as DAVIS and most frame dumps name
them). ``PATH/train`` and ``PATH/test`` (or ``val``) sub-folders, when present, are the splits.

``dataset[i]`` is ``(pair, -1)``: a uint8 tensor ``(2·C, H, W)``, the reference frame's ``C``
channels then the target frame's, from the same video. Stacking the two frames as channels lets
the engine batch, crop and flip them like any image (the same crop for both frames) and lets the
method unstack them (:func:`unstack_frames`). ``info.num_channels`` is ``2·C`` and ``info.mean`` /
``info.std`` are the per-frame statistics repeated, so normalisation treats both frames alike.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms.v2.functional import pil_to_tensor

from selfsup.data.base import UNLABELED, DatasetInfo, ImageDataset
from selfsup.data.catalog import DATASETS, FRAMES_PREFIX
from selfsup.data.folder import IMAGENET_MEAN, IMAGENET_STD
from selfsup.data.images import (EXTENSIONS, GRAY_MODES, PathList, SkipLog, UnreadableImage, check_policy, first_readable,
                                 open_image, split_root)
from selfsup.errors import DataError

FRAMES_PER_SAMPLE = 2  # reference, target
MAX_GAP = 5
"""Largest distance in frames between a reference and its target (training pairs are drawn with a
gap uniform in 1..MAX_GAP, limited by the frames before the target)."""


def frame_files(video: Path) -> list[Path]:
    """The frames of one video folder, sorted by file name (hidden files skipped)."""
    return sorted(p for p in video.iterdir()
                  if p.is_file() and p.suffix.lower() in EXTENSIONS and not p.name.startswith("."))


def video_folders(root: Path) -> list[Path]:
    """Sub-folders of ``root`` that hold at least one frame, sorted by name."""
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and frame_files(d))


def read_frame(path: Path, mode: str = "RGB") -> Tensor:
    """One frame as uint8 ``(C, H, W)`` (C = 3 for ``mode="RGB"``, 1 for ``"L"``); raises
    :class:`~selfsup.data.images.UnreadableImage` for a bad file."""
    with open_image(path) as image:
        return pil_to_tensor(image.convert(mode))


def read_video(folder: str | Path, mode: str = "RGB") -> tuple[Tensor, list[Path]]:
    """All frames of a video folder, uint8 ``(T, C, H, W)``, and their files (in order)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"video folder {folder} does not exist")
    files = frame_files(folder)
    if not files:
        raise DataError(f"no frames ({', '.join(EXTENSIONS)}) in video folder {folder}")
    frames = [read_frame(p, mode) for p in files]
    sizes = {tuple(f.shape[1:]) for f in frames}
    if len(sizes) > 1:
        raise DataError(f"frames of {folder} differ in size ({', '.join(f'{w}x{h}' for h, w in sorted(sizes))}); "
                        "a video's frames must share one size")
    return torch.stack(frames), files


def unstack_frames(pairs: Tensor, frames: int = FRAMES_PER_SAMPLE) -> list[Tensor]:
    """``(B, frames·C, H, W)`` -> ``frames`` tensors ``(B, C, H, W)``, in order (reference first)."""
    return list(pairs.chunk(frames, dim=1))


class FramePairDataset(ImageDataset):
    """(reference, target) frame pairs of every video below ``root``; see the module docstring.

    Item ``i`` is target frame ``i`` of the concatenated videos (each video's first frame is only
    ever a reference); its reference is drawn ``gap`` frames earlier, ``gap`` uniform in
    ``1..min(max_gap, index in its video)``, with torch's global generator (seeded per DataLoader
    worker, or per sample by :class:`~selfsup.data.ViewDataset`). Frames load as RGB unless up to 16
    sampled frames are all grayscale. A pair with an unreadable frame follows ``on_bad_image`` as in
    :class:`~selfsup.data.FolderDataset` (``skip``: the next readable pair replaces it).
    """

    def __init__(self, root: str | Path, max_gap: int = MAX_GAP, name: str | None = None,
                 on_bad_image: str = "error", skip_log: Optional[SkipLog] = None) -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"frames folder {root} does not exist")
        if max_gap < 1:
            raise DataError(f"max_gap={max_gap} must be >= 1 frame")
        self.max_gap = max_gap
        self.on_bad_image = check_policy(on_bad_image)
        self.skip_log = skip_log or SkipLog()
        videos = [files for files in (frame_files(v) for v in video_folders(root)) if len(files) >= FRAMES_PER_SAMPLE]
        if not videos:
            raise DataError(f"no videos in {root}: expected one sub-folder per video holding >= 2 frames "
                            f"({', '.join(EXTENSIONS)}), e.g. {root}/video1/00000.png")
        # Packed, not lists of objects, so that DataLoader workers do not copy them (see PathList).
        self.frames = PathList(p for files in videos for p in files)
        starts = np.cumsum([0] + [len(files) for files in videos[:-1]])
        # Sample i: target frame self.frames[_targets[i]], the _positions[i]-th frame (>= 1) of its video.
        self._positions = np.concatenate([np.arange(1, len(files)) for files in videos]).astype(np.int64)
        self._targets = np.concatenate([start + np.arange(1, len(files)) for start, files in zip(starts, videos)])
        sample = self.frames[:: math.ceil(len(self.frames) / 16)]
        headers = []  # (mode, size) of the sampled frames that open; the others are left to the policy
        for path in sample:
            try:
                with open_image(path, decode=False) as image:
                    headers.append((image.mode, image.size))
            except UnreadableImage:
                pass
        if not headers:
            raise DataError(f"none of {len(sample)} sampled frames of {root} is a readable image")
        self.mode = "L" if all(mode in GRAY_MODES for mode, _ in headers) else "RGB"
        channels = 1 if self.mode == "L" else 3
        first_size = headers[0][1]
        mean, std = ((0.5,), (0.5,)) if channels == 1 else (IMAGENET_MEAN, IMAGENET_STD)
        self.info = DatasetInfo(
            name=name or f"frames:{root}", num_channels=FRAMES_PER_SAMPLE * channels, num_classes=0,
            image_size=min(first_size), mean=mean * FRAMES_PER_SAMPLE, std=std * FRAMES_PER_SAMPLE)

    def __len__(self) -> int:
        return len(self._targets)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return first_readable(i, len(self._targets), self._read, self.on_bad_image, self.skip_log)

    def _read(self, i: int) -> tuple[Tensor, int]:
        target, position = int(self._targets[i]), int(self._positions[i])
        gap = int(torch.randint(1, min(self.max_gap, position) + 1, ()).item())
        first, second = self.frames[target - gap], self.frames[target]
        reference, frame = read_frame(first, self.mode), read_frame(second, self.mode)
        if reference.shape != frame.shape:
            raise DataError(f"frames {first} and {second} of one video differ in size")
        return torch.cat([reference, frame]), UNLABELED


@DATASETS.register(FRAMES_PREFIX + "PATH")
def frames(split: str, path: str | None, download: bool) -> FramePairDataset:
    """``frames:PATH``: one sub-folder of frames per video (``split`` picks ``PATH/train`` etc. when present)."""
    if not path:
        raise DataError("frames dataset needs a path: use 'frames:/path/to/videos' "
                        "(one sub-folder of frames per video)")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"frames folder {root} does not exist")
    return FramePairDataset(split_root(root, split), name=f"frames:{path}")
