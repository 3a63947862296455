"""Representation-health metrics against naive references, the monitor's buffer, and the engine hook."""

from __future__ import annotations

import csv
import logging
import math

import numpy as np
import pytest
import torch

from selfsup.config import make_config, parse_override
from selfsup.engine import train
from selfsup.evaluation import health
from selfsup.evaluation.health import (HealthMonitor, alignment, effective_rank, health_metrics,
                                       normalized_feature_std, uniformity)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a busy machine its spin-waiting costs ~5x CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def naive_rankme(z: torch.Tensor, eps: float = 1e-7) -> float:
    """Garrido et al. 2023, Eq. 1, from numpy's SVD: p_k = σ_k / ‖σ‖₁ + ε, exp(-Σ p_k log p_k)."""
    sigma = np.linalg.svd(z.double().numpy(), compute_uv=False)
    entropy = 0.0
    for s in sigma:
        p = s / sigma.sum() + eps
        entropy -= p * math.log(p)
    return math.exp(entropy)


def test_effective_rank_matches_the_formula_and_its_extremes():
    z = torch.randn(64, 16, generator=gen(0)) @ torch.diag(torch.linspace(0.1, 3, 16))
    assert effective_rank(z) == pytest.approx(naive_rankme(z), rel=1e-9)
    assert effective_rank(torch.eye(12) * 5) == pytest.approx(12, rel=1e-5)  # equal singular values: full rank
    rank_one = torch.randn(50, 1, generator=gen(1)) @ torch.randn(1, 8, generator=gen(2))
    assert effective_rank(rank_one) == pytest.approx(1.0, abs=1e-3)  # complete collapse onto a line
    two_dims = torch.randn(200, 2, generator=gen(3)) @ torch.randn(2, 32, generator=gen(4))
    assert 1.2 < effective_rank(two_dims) < 2.01  # dimensional collapse to 2 of 32


def test_normalized_std_matches_loops_and_reads_collapse():
    z = torch.randn(30, 5, generator=gen(5)) + 2.0
    normed = [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in z.double().tolist()]
    stds = []
    for d in range(5):
        column = [row[d] for row in normed]
        mean = sum(column) / len(column)
        stds.append(math.sqrt(sum((v - mean) ** 2 for v in column) / (len(column) - 1)))
    assert normalized_feature_std(z) == pytest.approx(sum(stds) / 5, rel=1e-9)
    isotropic = torch.randn(4000, 64, generator=gen(6))
    assert normalized_feature_std(isotropic) * 8 == pytest.approx(1.0, abs=0.02)  # SimSiam: ≈ 1/√D
    collapsed = torch.ones(100, 64) + 1e-6 * torch.randn(100, 64, generator=gen(7))
    assert health_metrics(collapsed)["feature_std_ratio"] < 1e-4


def test_uniformity_and_alignment_match_pair_loops():
    a, b = torch.randn(12, 6, generator=gen(8)), torch.randn(12, 6, generator=gen(9))
    na = [x / x.norm() for x in a.double()]
    nb = [x / x.norm() for x in b.double()]
    pairs = [math.exp(-2 * float((na[i] - na[j]).pow(2).sum())) for i in range(12) for j in range(i + 1, 12)]
    assert uniformity(a) == pytest.approx(math.log(sum(pairs) / len(pairs)), rel=1e-9)
    assert alignment(a, b) == pytest.approx(sum(float((x - y).pow(2).sum()) for x, y in zip(na, nb)) / 12, rel=1e-9)
    assert alignment(a, a * 3) == pytest.approx(0.0, abs=1e-12)  # scale-free: same direction = aligned
    assert uniformity(torch.ones(10, 4)) == pytest.approx(0.0, abs=1e-12)  # collapsed: worst uniformity


def test_monitor_keeps_the_most_recent_rows_and_needs_positives_for_alignment():
    monitor = HealthMonitor(max_samples=10)
    batches = [torch.randn(4, 3, generator=gen(i)) for i in range(4)]
    for i, batch in enumerate(batches):
        monitor.update(batch, None if i == 2 else batch + 0.1)
    assert monitor.num_samples == 12  # batch 0 dropped; 12 rows cover the last 10
    expected = health_metrics(torch.cat(batches)[-10:])
    metrics = monitor.compute()
    assert "alignment" not in metrics  # a stored batch (2) had no second view
    assert metrics == pytest.approx(expected)
    monitor.reset()
    assert monitor.compute() == {}
    for batch in batches[:2]:
        monitor.update(batch, batch.flip(0))
    assert monitor.compute()["alignment"] == pytest.approx(alignment(torch.cat(batches[:2]), torch.cat([b.flip(0) for b in batches[:2]])))
    monitor.update(batches[0], torch.randn(2, 3))  # not row-aligned: ignored, no crash
    assert "alignment" not in monitor.compute()


def test_training_logs_health_and_warns_once_about_collapse(shapes_folder, tmp_path, monkeypatch, caplog):
    # Every real run is "collapsing" against an impossible threshold: the warning must fire once.
    monkeypatch.setattr(health, "COLLAPSE_RATIO", 1e9)
    settings = [
        f"data=folder:{shapes_folder}", f"output_dir={tmp_path / 'run'}", "epochs=2", "batch_size=8",
        "num_workers=0", "backbone=resnet18", "backbone_args={small_stem: true, width: 0.125}",
        "method_args={projection_hidden_dim: 32, projection_dim: 16}", "views.image_size=16",
        "optim.warmup_epochs=0", "trainer.progress_bar=false", "trainer.limit_train_batches=2",
        "monitor.knn_every=0",
    ]
    engine_log = logging.getLogger("selfsup.engine.module")
    engine_log.addHandler(caplog.handler)  # the CLI may have stopped "selfsup" logs from reaching the root
    try:
        train(make_config(overrides=[parse_override(s) for s in settings]))
    finally:
        engine_log.removeHandler(caplog.handler)
    with open(tmp_path / "run" / "logs" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged = [r for r in rows if r.get("health/rankme")]
    assert len(logged) == 2  # one per epoch
    for row in logged:
        assert 1.0 <= float(row["health/rankme"]) <= 16  # ≤ min(N=16 rows, D=64)
        assert float(row["health/feature_std"]) > 0 and float(row["health/uniformity"]) <= 0
    # SimCLR returns its second view's features, so the alignment of positive pairs is logged.
    assert all(0.0 <= float(r["health/alignment"]) <= 4.0 for r in logged)
    warnings = {id(r): r for r in caplog.records if "collapse" in r.getMessage()}  # (seen twice if it propagates)
    assert len(warnings) == 1
