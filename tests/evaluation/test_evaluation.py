"""kNN against a naive re-derivation, the linear probe on toy problems, features and their cache."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from selfsup.evaluation import (FeatureCache, LinearProbeResult, extract_features, knn_accuracy, knn_predict,
                                linear_probe)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def clusters(n: int, num_classes: int, dim: int = 16, noise: float = 0.1, seed: int = 0):
    """Gaussian clusters around fixed centres (the same for every seed): features (n, dim), labels (n,)."""
    centres = torch.randn(num_classes, dim, generator=gen(1234)) * 3
    g = gen(seed)
    labels = torch.randint(num_classes, (n,), generator=g)
    return centres[labels] + noise * torch.randn(n, dim, generator=g), labels


# ---------------------------------------------------------------- kNN
def naive_knn(train_x, train_y, query_x, num_classes, k, temperature):
    """Wu et al. 2018, one query at a time: cosine similarities, sort, vote exp(s/τ) for each neighbour's class."""
    scores = torch.zeros(len(query_x), num_classes, dtype=torch.float64)
    for q in range(len(query_x)):
        sims = []
        for i in range(len(train_x)):
            a, b = query_x[q].double(), train_x[i].double()
            sims.append((float(a @ b / (a.norm() * b.norm())), int(train_y[i])))
        sims.sort(key=lambda pair: pair[0], reverse=True)
        for s, label in sims[:k]:
            scores[q, label] += math.exp(s / temperature)
    return scores


@pytest.mark.parametrize("k, temperature", [(1, 0.1), (7, 0.07), (30, 0.5)])
def test_knn_matches_naive_reference(k, temperature):
    g = gen(k)
    train_x, train_y = torch.randn(40, 8, generator=g) * 3, torch.randint(5, (40,), generator=g)
    query_x = torch.randn(9, 8, generator=g)
    expected = naive_knn(train_x, train_y, query_x, 5, k, temperature)
    actual = knn_predict(train_x, train_y, query_x, num_classes=5, k=k, temperature=temperature)
    assert actual.shape == (9, 5)
    torch.testing.assert_close(actual.double(), expected, rtol=1e-4, atol=1e-5)


def test_knn_k_larger_than_bank_uses_every_sample():
    train_x, train_y = clusters(10, 3)
    expected = naive_knn(train_x, train_y, train_x[:4], 3, 10, 0.1)
    torch.testing.assert_close(knn_predict(train_x, train_y, train_x[:4], 3, k=200).double(), expected,
                               rtol=1e-4, atol=1e-5)


def test_knn_chunking_gives_identical_scores():
    train_x, train_y = clusters(300, 10, dim=32, noise=2.0)
    query_x, _ = clusters(101, 10, dim=32, noise=2.0, seed=1)
    whole = knn_predict(train_x, train_y, query_x, 10, k=20, chunk_size=1024)
    for chunk in (1, 7, 100):
        chunked = knn_predict(train_x, train_y, query_x, 10, k=20, chunk_size=chunk)
        # BLAS may round a (1, D)·(D, N) product differently from a (101, D)·(D, N) one: float32
        # rounding only (exp(s/τ) scales it by 1/τ), and the predictions are exactly the same.
        torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
        assert torch.equal(chunked.argmax(1), whole.argmax(1))


def test_knn_separable_problem_is_solved():
    train_x, train_y = clusters(500, 10)
    test_x, test_y = clusters(200, 10, seed=1)
    result = knn_accuracy(train_x, train_y, test_x, test_y, num_classes=10, k=20)
    assert set(result) == {"knn_top1", "knn_top5"}
    assert result["knn_top1"] > 0.99 and result["knn_top5"] > 0.99


def test_knn_random_labels_are_near_chance():
    g = gen(3)
    train_x, test_x = torch.randn(2000, 32, generator=g), torch.randn(1000, 32, generator=g)
    train_y, test_y = torch.randint(10, (2000,), generator=g), torch.randint(10, (1000,), generator=g)
    result = knn_accuracy(train_x, train_y, test_x, test_y, num_classes=10, k=50)
    assert 0.05 < result["knn_top1"] < 0.16
    assert 0.40 < result["knn_top5"] < 0.60


def test_knn_is_scale_invariant():
    train_x, train_y = clusters(100, 4, noise=1.0)
    query_x, _ = clusters(20, 4, noise=1.0, seed=2)
    torch.testing.assert_close(knn_predict(train_x * 7, train_y, query_x * 0.1, 4, k=10),
                               knn_predict(train_x, train_y, query_x, 4, k=10))


# ---------------------------------------------------------------- linear probe
def test_linear_probe_solves_a_separable_problem():
    train_x, train_y = clusters(1000, 10, dim=32, noise=0.5)
    test_x, test_y = clusters(300, 10, dim=32, noise=0.5, seed=1)
    result = linear_probe(train_x, train_y, test_x, test_y, num_classes=10, epochs=10, batch_size=128)
    assert isinstance(result, LinearProbeResult)
    assert result.top1 > 0.99 and result.top5 > 0.99 and result.train_top1 > 0.99
    assert result.epochs == 10 and result.lr == 0.1


def test_linear_probe_random_labels_are_near_chance():
    g = gen(4)
    train_x, test_x = torch.randn(2000, 32, generator=g), torch.randn(1000, 32, generator=g)
    train_y, test_y = torch.randint(10, (2000,), generator=g), torch.randint(10, (1000,), generator=g)
    result = linear_probe(train_x, train_y, test_x, test_y, num_classes=10, epochs=10, batch_size=256)
    assert 0.05 < result.top1 < 0.16


@pytest.mark.parametrize("batch_norm", [True, False])
def test_linear_probe_is_deterministic_under_seed(batch_norm):
    x, y = clusters(600, 5, noise=3.0)
    run = lambda seed: linear_probe(x[:500], y[:500], x[500:], y[500:], 5, epochs=3, batch_size=64,
                                    batch_norm=batch_norm, seed=seed)
    state = torch.random.get_rng_state()
    a, b, c = run(0), run(0), run(1)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is left alone
    for pa, pb in zip(a.classifier.parameters(), b.classifier.parameters()):
        assert torch.equal(pa, pb)
    assert (a.top1, a.train_top1) == (b.top1, b.train_top1)
    assert not torch.equal(a.classifier[1].weight, c.classifier[1].weight)  # another shuffle order


def test_linear_probe_normalisation_makes_feature_scale_irrelevant():
    x, y = clusters(600, 5, noise=2.0)
    base = linear_probe(x[:500], y[:500], x[500:], y[500:], 5, epochs=3, batch_size=64)
    scaled = linear_probe(x[:500] * 1e3 + 5, y[:500], x[500:] * 1e3 + 5, y[500:], 5, epochs=3, batch_size=64)
    assert abs(base.top1 - scaled.top1) <= 0.01


def test_linear_probe_classifier_reproduces_the_reported_accuracy():
    x, y = clusters(600, 5, noise=3.0)
    result = linear_probe(x[:500], y[:500], x[500:], y[500:], 5, epochs=5, batch_size=64)
    with torch.no_grad():
        predictions = result.classifier(x[500:]).argmax(1)
    assert (predictions == y[500:]).double().mean().item() == pytest.approx(result.top1)


def test_linear_probe_accepts_inference_mode_features():
    with torch.inference_mode():
        x, y = clusters(200, 3)
    assert linear_probe(x, y, x, y, 3, epochs=2, batch_size=64).top1 > 0.9


# ---------------------------------------------------------------- features
class TinyEncoder(nn.Module):
    """Conv + BatchNorm + Dropout: eval mode changes its output, so mode handling is visible."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PairDataset(Dataset):
    """Yields (image (1, 8, 8) float, label int) like the real datasets."""

    def __init__(self, n: int = 37) -> None:
        self.images = torch.randn(n, 1, 8, 8, generator=gen(6))
        self.labels = torch.arange(n) % 3

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


@pytest.mark.parametrize("channels_last", [False, True])
def test_extract_features_matches_a_direct_forward(channels_last):
    encoder, data = TinyEncoder(), PairDataset()
    encoder.net[1].running_mean.fill_(0.3)  # so eval-mode BN differs from train-mode BN
    features, labels = extract_features(encoder, data, batch_size=10, channels_last=channels_last)
    assert features.shape == (37, 4) and features.dtype == torch.float32 and features.device.type == "cpu"
    assert labels.shape == (37,) and labels.dtype == torch.int64
    assert torch.equal(labels, data.labels)
    with torch.no_grad():
        expected = encoder.eval()(data.images)
    torch.testing.assert_close(features, expected)
    assert not features.is_inference()


def test_extract_features_restores_each_module_mode():
    encoder = TinyEncoder().train()
    encoder.net[1].eval()  # e.g. a frozen BatchNorm inside a model being trained
    extract_features(encoder, PairDataset(), batch_size=16)
    assert encoder.training and encoder.net[3].training
    assert not encoder.net[1].training
    encoder.eval()
    extract_features(encoder, PairDataset(), batch_size=16)
    assert not any(m.training for m in encoder.modules())


def test_extract_features_accepts_tensor_datasets():
    data = TensorDataset(torch.randn(5, 1, 8, 8), torch.arange(5))
    features, labels = extract_features(TinyEncoder(), data)
    assert features.shape == (5, 4) and torch.equal(labels, torch.arange(5))


def test_feature_cache_computes_once_and_reloads(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return torch.randn(6, 3, generator=gen(len(calls))), torch.arange(6)

    first = FeatureCache(tmp_path / "cache").get_or_compute("ckpt.pt:123|fashion-mnist|test|28", compute)
    again = FeatureCache(tmp_path / "cache").get_or_compute("ckpt.pt:123|fashion-mnist|test|28", compute)
    assert len(calls) == 1
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    FeatureCache(tmp_path / "cache").get_or_compute("ckpt.pt:124|fashion-mnist|test|28", compute)
    assert len(calls) == 2  # another key (a newer checkpoint) → computed again
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(files) == 2 and all(f.endswith(".pt") and not f.startswith(".") for f in files)


def test_feature_cache_leaves_no_temp_file_when_compute_fails(tmp_path):
    cache = FeatureCache(tmp_path)

    def broken():
        raise RuntimeError("encoder crashed")

    with pytest.raises(RuntimeError):
        cache.get_or_compute("key", broken)
    with pytest.raises(Exception):  # a local function cannot be pickled: torch.save fails midway
        cache.get_or_compute("key", lambda: (lambda: None, torch.arange(2)))
    assert list(tmp_path.iterdir()) == []


def test_feature_cache_recomputes_a_corrupt_entry(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.path("key").write_bytes(b"not a torch file")
    features, labels = cache.get_or_compute("key", lambda: (torch.ones(2, 2), torch.zeros(2, dtype=torch.int64)))
    assert torch.equal(cache.get_or_compute("key", lambda: pytest.fail("recomputed"))[0], features)
