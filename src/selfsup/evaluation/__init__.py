"""Evaluation of frozen encoders: feature extraction and caching, weighted kNN, linear probe.

Example:
    >>> train_x, train_y = extract_features(encoder, train_set)
    >>> test_x, test_y = extract_features(encoder, test_set)
    >>> knn_accuracy(train_x, train_y, test_x, test_y, num_classes=10)
    {'knn_top1': 0.85, 'knn_top5': 0.99}
    >>> linear_probe(train_x, train_y, test_x, test_y, num_classes=10).top1
"""

from selfsup.evaluation.features import FeatureCache, extract_features
from selfsup.evaluation.knn import knn_accuracy, knn_predict, topk_accuracy
from selfsup.evaluation.linear import LinearProbeResult, linear_probe
from selfsup.evaluation.load import RANDOM, LoadedEncoder, export_encoder, load_encoder
from selfsup.evaluation.suite import EvalSettings, evaluate_encoder

__all__ = [
    "EvalSettings",
    "FeatureCache",
    "LoadedEncoder",
    "RANDOM",
    "evaluate_encoder",
    "export_encoder",
    "load_encoder",
    "LinearProbeResult",
    "extract_features",
    "knn_accuracy",
    "knn_predict",
    "linear_probe",
    "topk_accuracy",
]
