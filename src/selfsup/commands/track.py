"""``selfsup track``: propagate a segmentation mask through a video with a video-colorization model.

    selfsup track --checkpoint runs/video/last.ckpt --video clips/bear --masks annotations/bear --output out/bear

The video is a folder of frames sorted by file name. ``--masks`` is a folder of label PNGs sorted
the same way (palette PNGs as in DAVIS, or grey/RGB images whose distinct values are the objects,
black = background): its first mask starts the propagation, and when it holds one mask per frame
they are the ground truth of the mean IoU (J) that is printed beside the IoU of simply repeating
the first mask. ``--first-mask FILE`` gives the first mask alone. The propagated masks are written
as palette PNGs named after the frames, and a summary as ``track.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

import torch

from selfsup.errors import ConfigError, DataError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("track", help="propagate a first-frame mask through a video (video-colorization)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="last.ckpt of a `selfsup train --method video-colorization` run")
    p.add_argument("--video", required=True, help="folder of the video's frames (sorted by file name)")
    masks = p.add_mutually_exclusive_group(required=True)
    masks.add_argument("--masks", help="folder of label PNGs: the first starts tracking; one per frame = ground truth")
    masks.add_argument("--first-mask", help="label PNG of the first frame")
    p.add_argument("--output", required=True, help="folder for the propagated masks and track.json")
    p.add_argument("--temperature", type=float, default=0.5,
                   help="attention softmax temperature (default 0.5: sharper than training's 1, which blurs the "
                        "copied labels below the 0.5 needed to keep an object)")
    p.add_argument("--topk", type=int, help="attend to the k most similar reference pixels only (default: all)")
    p.add_argument("--context", type=int, default=1, help="previous frames used as references besides the first")
    p.add_argument("--image-size", type=int, help="shorter side the network sees (default: the training size)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_track)


def cmd_track(args: argparse.Namespace) -> int:
    from selfsup.apps.colorization import load_method, network_size, training_size
    from selfsup.apps.tracking import mean_iou, propagate_masks, read_masks, write_mask
    from selfsup.data.frames import frame_files, read_video

    if args.temperature <= 0:
        raise ConfigError(f"--temperature {args.temperature} must be > 0")
    if args.topk is not None and args.topk < 1 or args.context < 0:
        raise ConfigError(f"--topk {args.topk} must be >= 1 and --context {args.context} >= 0")
    method, meta = load_method(args.checkpoint, ("video-colorization",), "track")
    method.to(args.device)
    frames, files = read_video(args.video)
    truth: Optional[torch.Tensor] = None
    if args.masks:
        folder = Path(args.masks).expanduser()
        if not folder.is_dir():
            raise DataError(f"--masks {folder} is not a folder")
        mask_files = frame_files(folder)
        if not mask_files:
            raise DataError(f"no mask images in {folder}")
        masks = read_masks(mask_files if len(mask_files) == len(files) else mask_files[:1])
        first = masks[0]
        if len(masks) == len(files):
            truth = torch.stack(masks)
    else:
        first = read_masks([Path(args.first_mask).expanduser()])[0]
    if tuple(first.shape) != tuple(frames.shape[-2:]):
        raise DataError(f"the first mask is {first.shape[1]}x{first.shape[0]} but the frames are "
                        f"{frames.shape[-1]}x{frames.shape[-2]}")
    side = args.image_size or training_size(meta)
    temperature = args.temperature
    predicted = propagate_masks(method, frames.to(args.device), first.to(args.device), temperature=temperature,
                                topk=args.topk, context=args.context,
                                size=network_size(frames.shape[-2], frames.shape[-1], side)).cpu()
    output = Path(args.output).expanduser()
    output.mkdir(parents=True, exist_ok=True)
    for mask, path in zip(predicted, files):
        write_mask(mask, output / f"{path.stem}.png")
    summary = {"video": str(args.video), "frames": len(files), "objects": int(first.max()),
               "temperature": temperature, "topk": args.topk, "context": args.context, "image_size": side}
    line = f"propagated the first mask through {len(files)} frames into {output}"
    if truth is not None:
        summary["mean_iou"] = mean_iou(predicted, truth)
        summary["mean_iou_first_mask_repeated"] = mean_iou(first.expand_as(truth), truth)
        line += (f"; mean IoU (J) over frames 2..{len(files)}: {100 * summary['mean_iou']:.1f} % "
                 f"(repeating the first mask: {100 * summary['mean_iou_first_mask_repeated']:.1f} %)")
    (output / "track.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(line)
    return 0
