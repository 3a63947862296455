"""NPID: the memory bank and the method's bookkeeping (the NCE and softmax losses: tests/losses/test_nce.py)."""

import math

import pytest
import torch
from torch import nn

from selfsup.backbones import build_backbone
from selfsup.data import DatasetInfo
from selfsup.errors import ConfigError
from selfsup.memory.bank import MemoryBank
from selfsup.methods import DataSpec, Progress, build_method
from selfsup.methods.npid import NPID

INFO = DatasetInfo("toy", 1, 3, 16, (0.5,), (0.25,))
NUM_SAMPLES = 20


def tiny_resnet() -> nn.Module:
    return build_backbone("resnet18", in_channels=1, small_stem=True, width=0.125)


def small_npid(**overrides) -> NPID:
    torch.manual_seed(0)
    config = dict(embedding_dim=8, num_negatives=16)
    config.update(overrides)
    return NPID(tiny_resnet(), NPID.Config(**config), DataSpec(INFO, NUM_SAMPLES))


def batch(size: int = 6, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(size, 1, 16, 16, generator=g)], torch.randperm(NUM_SAMPLES, generator=g)[:size]


def unit_rows(*shape, seed=0):
    return nn.functional.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


# --------------------------------------------------------------------------- memory bank

def test_bank_update_mixes_with_momentum_then_renormalises():
    bank = MemoryBank(6, 3, momentum=0.5)
    before = bank.vectors.clone()
    indices = torch.tensor([4, 1])
    features = unit_rows(2, 3, seed=3)
    bank.update(indices, features)
    for row, i in enumerate(indices.tolist()):
        mixed = 0.5 * before[i] + 0.5 * features[row]
        torch.testing.assert_close(bank.vectors[i], mixed / mixed.norm())
    untouched = [0, 2, 3, 5]
    assert torch.equal(bank.vectors[untouched], before[untouched])
    torch.testing.assert_close(bank.get(indices).norm(dim=1), torch.ones(2))


def test_bank_filled_on_first_visit_takes_the_feature_then_mixes():
    bank = MemoryBank(4, 3, momentum=0.5, fill_on_first_visit=True)
    stand_in = unit_rows(2, 3, seed=5)
    indices = torch.tensor([2, 0])
    # Not filled yet: get() hands out the stand-in, not the random start.
    torch.testing.assert_close(bank.get(indices, unfilled=stand_in), stand_in)
    first = unit_rows(2, 3, seed=6)
    bank.update(indices, first)
    torch.testing.assert_close(bank.vectors[indices], first)  # no mix with the random start
    torch.testing.assert_close(bank.get(indices, unfilled=stand_in), first)  # filled: the entry itself
    second = unit_rows(2, 3, seed=7)
    bank.update(indices, second)
    mixed = 0.5 * first + 0.5 * second
    torch.testing.assert_close(bank.vectors[indices], mixed / mixed.norm(dim=1, keepdim=True))
    assert bank.filled.tolist() == [True, False, True, False]
    # A bank starting random (the paper) counts every entry as filled.
    assert MemoryBank(3, 2).filled.all()


def test_bank_samples_valid_indices():
    bank = MemoryBank(5, 2)
    drawn = bank.sample(200, generator=torch.Generator().manual_seed(0))
    assert drawn.shape == (200,) and drawn.min() >= 0 and drawn.max() < 5 and len(drawn.unique()) == 5


# --------------------------------------------------------------------------- the method

def test_npid_updates_its_bank_in_on_step_end_only():
    method = small_npid()
    views, indices = batch()
    before = method.bank.vectors.clone()
    out = method(views, indices)
    assert torch.equal(method.bank.vectors, before)
    assert torch.isnan(method.log_normalizer)  # Z is not stored in forward either
    method.on_step_end(out, Progress(1, 10))
    features = out.extras["features"]
    mixed = 0.5 * before[indices] + 0.5 * features
    torch.testing.assert_close(method.bank.vectors[indices], nn.functional.normalize(mixed, dim=1))
    others = torch.ones(NUM_SAMPLES, dtype=torch.bool)
    others[indices] = False
    assert torch.equal(method.bank.vectors[others], before[others])


def test_npid_fixes_the_normaliser_at_the_first_step():
    method = small_npid()
    views, indices = batch()
    first = method(views, indices)
    method.on_step_end(first, Progress(1, 10))
    log_z = method.log_normalizer.clone()
    torch.testing.assert_close(log_z, first.extras["log_normalizer"])
    second = method(views, indices)
    assert "log_normalizer" not in second.extras
    method.on_step_end(second, Progress(2, 10))
    assert torch.equal(method.log_normalizer, log_z)


def written_out_loss(method: NPID, views, indices, positives: torch.Tensor) -> torch.Tensor:
    """The loss from the paper's formulas, with ``positives (B, E)`` as the batch's bank rows."""
    torch.manual_seed(0)  # the same noise draw as the method's
    f = method.embed(views[0])
    if method.config.loss == "nce":
        noise = method.bank.vectors[method.bank.sample(method.config.num_negatives)]
        return method.nce(f, positives, noise, method.log_normalizer)
    bank = method.bank.vectors.clone()
    bank[indices] = positives
    return method.softmax(f, bank, indices)


def loss_of(method: NPID, views, indices) -> torch.Tensor:
    torch.manual_seed(0)
    return method(views, indices).loss


@pytest.mark.parametrize("loss", ["nce", "softmax"])
def test_npid_loss_uses_the_indices(loss):
    method = small_npid(loss=loss).eval()  # eval: the features do not depend on the batch
    views, indices = batch()
    method.log_normalizer.fill_(math.log(NUM_SAMPLES))
    got = loss_of(method, views, indices)
    # The positives are the bank entries at the batch's indices.
    torch.testing.assert_close(got, written_out_loss(method, views, indices, method.bank.vectors[indices]))
    assert loss_of(method, views, indices.roll(1)).item() != pytest.approx(got.item(), rel=1e-4)


@pytest.mark.parametrize("loss", ["nce", "softmax"])
def test_first_visit_fill_makes_the_own_feature_the_positive_for_either_loss(loss):
    method = small_npid(loss=loss, fill_on_first_visit=True).eval()
    views, indices = batch()
    method.log_normalizer.fill_(math.log(NUM_SAMPLES))
    got = loss_of(method, views, indices)
    # Nothing is filled yet: every positive is the image's own (detached) feature.
    torch.testing.assert_close(got, written_out_loss(method, views, indices, method.embed(views[0]).detach()))
    # Once filled, the stored entries are the positives again.
    method.bank.update(indices, unit_rows(6, 8, seed=3))
    torch.testing.assert_close(loss_of(method, views, indices),
                               written_out_loss(method, views, indices, method.bank.vectors[indices]))


def test_npid_gradients_reach_the_backbone_not_the_bank():
    method = small_npid()
    views, indices = batch()
    out = method(views, indices)
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.backbone.parameters())
    assert not method.bank.vectors.requires_grad
    assert out.features.shape == (6, method.backbone.feature_dim) and out.features.dtype == torch.float32


def test_npid_state_dict_keeps_the_bank_and_normaliser():
    method = small_npid()
    views, indices = batch()
    method.on_step_end(method(views, indices), Progress(1, 10))
    restored = small_npid()
    restored.load_state_dict(method.state_dict())
    assert torch.equal(restored.bank.vectors, method.bank.vectors)
    assert torch.equal(restored.log_normalizer, method.log_normalizer)


def test_npid_needs_num_samples_and_a_known_loss():
    with pytest.raises(ConfigError, match="npid needs the number of training images"):
        build_method("npid", tiny_resnet())
    with pytest.raises(ConfigError, match="data.num_samples.*got 0"):
        build_method("npid", tiny_resnet(), data=DataSpec(INFO, 0))
    with pytest.raises(ConfigError, match="unknown npid loss 'nca'; valid choices: nce, softmax"):
        build_method("npid", tiny_resnet(), {"loss": "nca"}, DataSpec(INFO, 10))
    with pytest.raises(ValueError, match="indices"):
        small_npid()(batch()[0])


def test_npid_is_single_view():
    assert NPID.num_views == 1
    views = NPID.default_views()
    views.validate()
    assert views.num_global_views == 1 and views.blur_prob == (0.0,)
