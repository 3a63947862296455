"""Evaluation of encoders: frozen-feature protocols (kNN, linear probe, few-label), full
fine-tuning, dense (segmentation) probing, and representation-health metrics.

Example:
    >>> train_x, train_y = extract_features(encoder, train_set)
    >>> test_x, test_y = extract_features(encoder, test_set)
    >>> knn_accuracy(train_x, train_y, test_x, test_y, num_classes=10)
    {'knn_top1': 0.85, 'knn_top5': 0.99}
    >>> knn_sweep(train_x, train_y, test_x, test_y, 10, ks=(10, 20, 100, 200))   # one similarity pass
    >>> linear_probe(train_x, train_y, test_x, test_y, num_classes=10).top1
    >>> linear_probe_sweep(train_x, train_y, test_x, test_y, 10, lrs=(0.01, 0.1, 1.0)).best.top1
    >>> finetune(encoder, train_set, test_set, FinetuneSettings(epochs=5)).top1
    >>> dense_probe(vit, load_segmentation(path, "train"), load_segmentation(path, "test")).miou
    >>> health_metrics(features)   # {'rankme', 'feature_std', 'feature_std_ratio', 'uniformity'}
    >>> evaluate_encoder(encoder, train_set, test_set, settings=EvalSettings(memory_budget_gb=4))  # bigger: on disk
    >>> evaluate_pixels(train_set, test_set)   # the raw-pixel floor (projected above 4096 values)
    >>> evaluate_with_floors("runs/x/last.ckpt", train_set, test_set, pixels=True)  # trained, random init, pixels
"""

from selfsup.evaluation.dense import DenseResult, DenseSettings, dense_features, dense_probe, load_segmentation
from selfsup.evaluation.features import FeatureCache, extract_features
from selfsup.evaluation.finetune import FinetuneResult, FinetuneSettings, finetune
from selfsup.evaluation.health import HealthMonitor, effective_rank, health_metrics
from selfsup.evaluation.knn import knn_accuracy, knn_predict, knn_sweep, topk_accuracy
from selfsup.evaluation.linear import LinearProbeResult, LinearSweepResult, linear_probe, linear_probe_sweep
from selfsup.evaluation.load import RANDOM, LoadedEncoder, export_encoder, load_encoder
from selfsup.evaluation.pixels import SparseRandomProjection, evaluate_pixels, pixel_encoder
from selfsup.evaluation.report import evaluate_run, evaluate_with_floors, format_report
from selfsup.evaluation.storage import MemoryBudget
from selfsup.evaluation.subsets import balanced_subset, stratified_split
from selfsup.evaluation.suite import EvalSettings, evaluate_encoder, evaluate_features

__all__ = [
    "DenseResult",
    "DenseSettings",
    "EvalSettings",
    "FeatureCache",
    "FinetuneResult",
    "FinetuneSettings",
    "HealthMonitor",
    "LinearProbeResult",
    "LinearSweepResult",
    "LoadedEncoder",
    "MemoryBudget",
    "RANDOM",
    "SparseRandomProjection",
    "balanced_subset",
    "dense_features",
    "dense_probe",
    "effective_rank",
    "evaluate_encoder",
    "evaluate_features",
    "evaluate_pixels",
    "evaluate_run",
    "evaluate_with_floors",
    "export_encoder",
    "extract_features",
    "finetune",
    "format_report",
    "health_metrics",
    "knn_accuracy",
    "knn_predict",
    "knn_sweep",
    "linear_probe",
    "linear_probe_sweep",
    "load_encoder",
    "load_segmentation",
    "pixel_encoder",
    "stratified_split",
    "topk_accuracy",
]
