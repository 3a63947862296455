"""CPU time per image of SimCLR views of a JPEG folder: the per-image path vs the split path, one thread.

    python benchmarks/gpu_throughput.py write-jpegs --dir /tmp/jpegs --images 300
    python benchmarks/split_views_cpu.py --dir /tmp/jpegs

Per-image: decode + views.py's MultiViewTransform per image (what DataLoader workers did for folders).
Split: decode + CropFlipViews per image, then PhotometricViews on the collated batch (what the workers
and the training device do with ``augment: split``). Both on one thread, the same files; the median of
``--steps`` batches after ``--warmup``, per image.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from selfsup.data import FolderDataset, ViewDataset
from selfsup.data.decode import DecodedFolder
from selfsup.transforms import MultiViewTransform, ViewConfig
from selfsup.transforms.split_views import CropFlipViews, PhotometricViews


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", required=True)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    folder = DecodedFolder(FolderDataset(args.dir))
    cfg = ViewConfig.simclr(image_size=args.image_size)
    per_image = ViewDataset(folder, MultiViewTransform(cfg, folder.info))
    crops = ViewDataset(folder, CropFlipViews(cfg, folder.info))
    colour = PhotometricViews(cfg, folder.info)
    b = args.batch_size

    def batch_per_image(k: int) -> None:
        [per_image[(k * b + i) % len(folder)] for i in range(b)]

    def batch_split(k: int) -> None:
        items = [crops[(k * b + i) % len(folder)][0] for i in range(b)]
        colour([torch.stack(views) for views in zip(*items)])

    print("python benchmarks/split_views_cpu.py " + " ".join(sys.argv[1:] if argv is None else argv))
    for name, make in (("per-image", batch_per_image), ("split", batch_split)):
        for k in range(args.warmup):
            make(k)
        times = []
        for k in range(args.steps):
            start = time.perf_counter()
            make(args.warmup + k)
            times.append(time.perf_counter() - start)
        q = statistics.quantiles(times, n=4, method="inclusive")
        print(f"{name}: {1000 * statistics.median(times) / b:.1f} ms per image "
              f"(quartiles {1000 * q[0] / b:.1f}–{1000 * q[2] / b:.1f}), {args.steps} batches of {b}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
