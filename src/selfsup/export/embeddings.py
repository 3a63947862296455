"""Embeddings of a folder of images, one row per image, written in resumable chunks.

Rows are computed ``chunk_size`` images at a time; each chunk is written to
``<output>.chunks/`` atomically (temporary file + rename), its features last, so a chunk either
exists whole or not at all. ``manifest.json`` records what the chunks are of (encoder, data,
image size, chunk size); a rerun with the same settings skips the finished chunks, a rerun
with other settings is refused. When every chunk is there, the outputs are assembled chunk by
chunk (memory stays one chunk, for folders of millions of files):

* ``<output>.npy``: ``(N, D)`` float32 features, row ``i`` = image ``i``;
* ``<output>.csv``: ``index,path[,label,class]`` (relative paths; labels when the folder has
  class sub-folders);
* ``<output>.parquet`` with ``format="parquet"`` (needs pyarrow): the same columns plus ``feature``.

A file that cannot be read (truncated, empty, not an image, over the pixel limit) keeps its row
with NaN features, so that row ``i`` is always file ``i``; each is named in a warning line.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from selfsup.data import FolderDataset
from selfsup.data.images import UnreadableImage
from selfsup.errors import ConfigError
from selfsup.export import write_json
from selfsup.io import atomic_write_text, atomic_write_to

FORMATS = ("npy", "parquet")
MANIFEST = "manifest.json"

log = logging.getLogger(__name__)


class _RowPerFile(Dataset):
    """``(image, label, readable)`` of file ``i`` through ``transform``; an unreadable file gives a
    blank image and ``readable=False`` (its row gets NaN features, never another file's)."""

    def __init__(self, dataset: FolderDataset, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.dataset, self.transform = dataset, transform
        self.blank = transform(torch.zeros(dataset.info.num_channels, 8, 8, dtype=torch.uint8))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        try:
            image, label = self.dataset[i]
        except UnreadableImage as error:
            log.warning("embed: cannot read %s (%s); its row %d gets NaN features", error.path, error.reason, i)
            return self.blank, -1 if self.dataset.labels is None else int(self.dataset.labels[i]), False
        return self.transform(image), label, True


@dataclass
class EmbeddingResult:
    features: Path
    """``(N, D)`` float32 ``.npy``."""
    table: Path
    """``.csv`` (or ``.parquet``) of index, path, label, class."""
    num_images: int
    computed_chunks: int
    """Chunks computed by this call (the others were done by an earlier, interrupted one)."""


def output_paths(output: str | Path) -> Dict[str, Path]:
    """The files an ``output`` of ``emb`` / ``emb.npy`` / ``emb.parquet`` / ``emb.csv`` stands for."""
    output = Path(output)
    stem = output.with_suffix("") if output.suffix in (".npy", ".csv", ".parquet") else output
    return {"npy": stem.with_name(stem.name + ".npy"), "csv": stem.with_name(stem.name + ".csv"),
            "parquet": stem.with_name(stem.name + ".parquet"), "chunks": stem.with_name(stem.name + ".chunks")}


def write_embeddings(
    encoder: nn.Module,
    dataset: FolderDataset,
    transform: Callable[[torch.Tensor], torch.Tensor],
    output: str | Path,
    identity: Dict[str, object],
    chunk_size: int = 4096,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    output_format: str = "npy",
    progress: bool = True,
    on_chunk_written: Optional[Callable[[int], None]] = None,
) -> EmbeddingResult:
    """Embed every image of ``dataset`` (``transform`` makes the encoder's input) into ``output``.

    Args:
        encoder: images ``(B, C, H, W)`` → features ``(B, D)``, already on ``device``.
        identity: what the rows depend on (encoder source, data, image size): a rerun resumes
            only when it is the same.
        on_chunk_written: called with the chunk index after each chunk is on disk (tests use it
            to interrupt a run).
    """
    if output_format not in FORMATS:
        raise ConfigError(f"unknown embedding format '{output_format}'; valid formats: {', '.join(FORMATS)}")
    if output_format == "parquet":
        _require_pyarrow()
    if chunk_size < 1 or batch_size < 1:
        raise ConfigError(f"chunk_size={chunk_size} and batch_size={batch_size} must be positive")
    paths = output_paths(output)
    chunks_dir = paths["chunks"]
    num_images = len(dataset)
    num_chunks = -(-num_images // chunk_size)
    manifest = {"identity": identity, "num_images": num_images, "chunk_size": chunk_size, "num_chunks": num_chunks}
    _check_or_write_manifest(chunks_dir, manifest)
    labelled = dataset.labels is not None
    classes = dataset.info.classes
    todo = [k for k in range(num_chunks) if not _chunk_path(chunks_dir, k, ".npy").is_file()]
    bar = _progress_bar(num_images, num_images - sum(_chunk_len(k, chunk_size, num_images) for k in todo), progress)
    modes = {m: m.training for m in encoder.modules()}
    encoder.eval()
    try:
        for k in todo:
            start, stop = k * chunk_size, min((k + 1) * chunk_size, num_images)
            loader = DataLoader(Subset(_RowPerFile(dataset, transform), range(start, stop)), batch_size=batch_size,
                                num_workers=num_workers, pin_memory=torch.device(device).type == "cuda")
            features, labels = [], []
            for images, targets, readable in loader:
                with torch.inference_mode():
                    rows_of_batch = encoder(images.to(device, non_blocking=True)).float().cpu().numpy()
                rows_of_batch[~readable.numpy()] = np.nan
                features.append(rows_of_batch)
                labels.append(np.asarray(targets, dtype=np.int64))
                bar.update(len(images))
            rows = io.StringIO()
            writer = csv.writer(rows, lineterminator="\n")
            for i, label in zip(range(start, stop), np.concatenate(labels)):
                writer.writerow([i, dataset.relative_path(i)] + ([int(label), classes[label]] if labelled else []))
            # The table first, the features last: a chunk is finished when its .npy exists.
            atomic_write_text(_chunk_path(chunks_dir, k, ".csv"), rows.getvalue())
            array = np.concatenate(features).astype(np.float32)
            atomic_write_to(_chunk_path(chunks_dir, k, ".npy"), lambda tmp: _save_npy(tmp, array))
            if on_chunk_written is not None:
                on_chunk_written(k)
    finally:
        bar.close()
        for module, training in modes.items():
            module.train(training)
    header = ["index", "path"] + (["label", "class"] if labelled else [])
    _assemble(chunks_dir, num_chunks, num_images, paths, header, output_format)
    shutil.rmtree(chunks_dir)
    return EmbeddingResult(paths["npy"], paths["parquet" if output_format == "parquet" else "csv"], num_images, len(todo))


def _chunk_path(chunks_dir: Path, k: int, suffix: str) -> Path:
    return chunks_dir / f"chunk-{k:06d}{suffix}"


def _chunk_len(k: int, chunk_size: int, num_images: int) -> int:
    return min((k + 1) * chunk_size, num_images) - k * chunk_size


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # np.save on a name would append ".npy" to the temporary name
        np.save(handle, array)


def _check_or_write_manifest(chunks_dir: Path, manifest: Dict[str, object]) -> None:
    path = chunks_dir / MANIFEST
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored != json.loads(json.dumps(manifest)):
            raise ConfigError(f"{chunks_dir} holds chunks of another run (other encoder, data, image size or chunk "
                              f"size); remove it or choose another --output")
        return
    chunks_dir.mkdir(parents=True, exist_ok=True)
    write_json(manifest, path)


def _assemble(chunks_dir: Path, num_chunks: int, num_images: int, paths: Dict[str, Path], header: list,
              output_format: str) -> None:
    """Concatenate the chunks into the final files, one chunk in memory at a time, each file atomically."""
    first = np.load(_chunk_path(chunks_dir, 0, ".npy"))

    def write_npy(tmp: Path) -> None:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(num_images, first.shape[1]))
        row = 0
        for k in range(num_chunks):
            chunk = np.load(_chunk_path(chunks_dir, k, ".npy"))
            out[row:row + len(chunk)] = chunk
            row += len(chunk)
        out.flush()
        del out

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            handle.write(",".join(header) + "\n")
            for k in range(num_chunks):
                handle.write(_chunk_path(chunks_dir, k, ".csv").read_text())

    atomic_write_to(paths["npy"], write_npy)
    atomic_write_to(paths["csv"], write_csv)
    if output_format == "parquet":
        atomic_write_to(paths["parquet"], lambda tmp: _write_parquet(tmp, chunks_dir, num_chunks, header))


def _write_parquet(tmp: Path, chunks_dir: Path, num_chunks: int, header: list) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for k in range(num_chunks):
            features = np.load(_chunk_path(chunks_dir, k, ".npy"))
            rows = list(csv.reader(io.StringIO(_chunk_path(chunks_dir, k, ".csv").read_text())))
            columns = {"index": pa.array([int(r[0]) for r in rows], pa.int64()), "path": pa.array([r[1] for r in rows])}
            if "label" in header:
                columns["label"] = pa.array([int(r[2]) for r in rows], pa.int64())
                columns["class"] = pa.array([r[3] for r in rows])
            columns["feature"] = pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1)), features.shape[1])
            table = pa.table(columns)
            if writer is None:
                writer = pq.ParquetWriter(str(tmp), table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def _require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ConfigError("--format parquet needs pyarrow: pip install 'selfsup[parquet]' (or use --format npy)") from None


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, done: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="img", desc="embed", dynamic_ncols=True)
