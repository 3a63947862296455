"""The report of a trained checkpoint beside its floors — a randomly initialised encoder of the
same architecture and the raw pixels — as ``selfsup train`` (``eval.json``) and ``selfsup bench``
write it, and the table ``selfsup train`` prints of it."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from selfsup.data import SKIPPED_FILE, ImageDataset, load_dataset, set_bad_image_policy
from selfsup.evaluation.features import FeatureCache
from selfsup.evaluation.load import load_encoder
from selfsup.evaluation.pixels import evaluate_pixels
from selfsup.evaluation.suite import PROTOCOLS, EvalSettings, evaluate_encoder


def evaluate_with_floors(
    checkpoint: Union[str, Path],
    train_set: ImageDataset,
    test_set: ImageDataset,
    protocols: Sequence[str] = PROTOCOLS,
    settings: Optional[EvalSettings] = None,
    cache: Optional[FeatureCache] = None,
    floor_seed: int = 0,
    random_init: bool = True,
    pixels: bool = False,
) -> Dict[str, Any]:
    """``{"trained": …, "random_init": …, "pixels": …}``: the metrics of
    :func:`~selfsup.evaluation.suite.evaluate_encoder` for a training checkpoint and its floors.

    ``settings.image_size`` None evaluates at the resolution the encoder was trained at (its
    config's views; the dataset's when that is unset too). The random-init floor is the same kind
    of encoder (method wrappers included) seeded with ``floor_seed``; ``pixels`` adds the raw-pixel
    floor (:func:`~selfsup.evaluation.pixels.evaluate_pixels`, with a ``"note"`` when projected).
    """
    settings = settings or EvalSettings()
    trained = load_encoder(str(checkpoint))
    if settings.image_size is None:  # as trained
        settings = dataclasses.replace(settings, image_size=(trained.config or {}).get("views", {}).get("image_size"))
    report: Dict[str, Any] = {
        "trained": evaluate_encoder(trained.encoder, train_set, test_set, protocols, settings, cache, trained.source)}
    if random_init:
        floor = load_encoder("random", trained.backbone, trained.backbone_args, trained.in_channels, seed=floor_seed,
                             method=trained.method)
        report["random_init"] = evaluate_encoder(floor.encoder, train_set, test_set, protocols, settings, cache,
                                                 floor.source)
    if pixels:  # the other floor: the images themselves, no encoder at all
        report["pixels"] = evaluate_pixels(train_set, test_set, protocols, settings, cache)
    return report


def evaluate_run(config: Any, checkpoint: Union[str, Path], progress: bool = False) -> Dict[str, Any]:
    """The end-of-run report of ``selfsup train`` (``eval.json``): kNN + linear of the trained
    encoder and, with ``config.eval.floor``, of the random-init and raw-pixel floors, on the test
    split of ``config.eval_data`` (default ``config.data``). Empty when that dataset has no labels.

    ``config`` is a :class:`~selfsup.config.TrainConfig`; features are cached under
    ``output_dir/features``, and ``progress`` shows a progress bar of their extraction on stderr.
    """
    data = config.eval_data or config.data
    train_set = load_dataset(data, "train", config.data_dir, config.download)
    if train_set.info.num_classes == 0:
        print(f"no labels in {data}: skipping evaluation (set eval_data to a labelled dataset)", file=sys.stderr)
        return {}
    test_set = load_dataset(data, "test", config.data_dir, config.download)
    for dataset in (train_set, test_set):  # as in training: a bad file must not end the run here
        set_bad_image_policy(dataset, config.on_bad_image, Path(config.output_dir) / SKIPPED_FILE)
    ev = config.eval
    protocols = [p for p in ("knn", "linear") if getattr(ev, p)]
    settings = EvalSettings(knn_k=ev.knn_k, knn_temperature=ev.knn_temperature, linear_epochs=ev.linear_epochs,
                            batch_size=ev.batch_size, image_size=config.views.get("image_size"),
                            memory_budget_gb=ev.memory_budget_gb, progress=progress)
    cache = FeatureCache(Path(config.output_dir) / "features")
    report: Dict[str, Any] = {"data": data, "checkpoint": str(checkpoint), "protocols": protocols}
    report.update(evaluate_with_floors(checkpoint, train_set, test_set, protocols, settings, cache,
                                       floor_seed=config.seed, random_init=ev.floor, pixels=ev.floor))
    return report


def _percent(value: Optional[float]) -> str:
    return "   —  " if value is None else f"{100 * value:6.2f} %"


def format_report(report: Dict[str, Any], label: str) -> str:
    """A small table: the trained encoder beside the floors (random init, raw pixels) and the
    gain over the random-init floor; a footnote says when the pixels were randomly projected."""
    trained, floor, pixels = report["trained"], report.get("random_init"), report.get("pixels")
    note = pixels.get("note") if pixels else None
    rows = [("metric", label, "random init (floor)", "raw pixels*" if note else "raw pixels", "gain over random init")]
    for key, name in (("knn_top1", "kNN top-1"), ("linear_top1", "linear top-1")):
        if key not in trained:
            continue
        base = floor.get(key) if floor else None
        gain = f"{100 * (trained[key] - base):+.2f} pts" if base is not None else "—"
        rows.append((name, _percent(trained[key]), _percent(base), _percent(pixels.get(key) if pixels else None), gain))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    if note:
        lines.append(f"* raw pixels: {note} (seeded sparse random projection, Li et al. 2006)")
    return "\n".join(lines)
