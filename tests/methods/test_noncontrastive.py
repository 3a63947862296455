"""BYOL, SimSiam, VICReg and Barlow Twins as methods: gradients where they must (and must not) flow,
the EMA target and its schedule, heads and recipes (their losses: tests/losses/).
DDP equivalence is in test_noncontrastive_ddp.py (light imports keep its 2 processes fast)."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from selfsup.backbones import build_backbone
from selfsup.config import make_config
from selfsup.methods import METHODS, Progress, build_method
from selfsup.methods.barlow_twins import BarlowTwins
from selfsup.methods.byol import BYOL
from selfsup.methods.simsiam import SimSiam
from selfsup.methods.vicreg import VICReg

RECIPES = Path(__file__).resolve().parents[2] / "src" / "selfsup" / "configs"
NAMES = ("byol", "simsiam", "vicreg", "barlow-twins")


def tiny_backbone() -> nn.Module:
    return build_backbone("resnet18", in_channels=1, small_stem=True, width=0.125)


# ----------------------------------------------------------------------------- BYOL


def small_byol(**overrides) -> BYOL:
    torch.manual_seed(0)
    cfg = BYOL.Config(projection_hidden_dim=32, projection_dim=16, prediction_hidden_dim=32, **overrides)
    return BYOL(tiny_backbone(), cfg)


def test_byol_target_networks_never_receive_gradients():
    method = small_byol()
    targets = list(method.target_backbone.parameters()) + list(method.target_projector.parameters())
    assert targets and all(not p.requires_grad for p in targets)
    views = [torch.randn(6, 1, 16, 16) for _ in range(2)]
    method(views).loss.backward()
    assert all(p.grad is None for p in targets)
    online = [p.grad for p in method.backbone.parameters()] + [p.grad for p in method.predictor.parameters()]
    assert all(g is not None for g in online) and sum(g.abs().sum() for g in online) > 0
    # What the engine hands to the optimizer: no target parameter among them.
    trainable = {id(p) for p in method.parameters() if p.requires_grad}
    assert not trainable & {id(p) for p in targets}


def test_byol_ema_follows_the_formula_and_the_cosine_schedule():
    method = small_byol()
    with torch.no_grad():  # make online and target differ, as after an optimizer step
        for p in list(method.backbone.parameters()) + list(method.projector.parameters()):
            p.add_(torch.randn_like(p))
    pairs = [(method.target_backbone, method.backbone), (method.target_projector, method.projector)]
    before = [[t.clone() for t in target.parameters()] for target, _ in pairs]
    step, total = 3, 10
    method.on_step_end(None, Progress(step=step, total_steps=total))
    tau = 1 - (1 - 0.996) * (math.cos(math.pi * step / total) + 1) / 2  # Sec. 3.2
    assert method.momentum == pytest.approx(tau, abs=1e-15)
    for (target, online), old in zip(pairs, before):
        for xi, theta, xi_old in zip(target.parameters(), online.parameters(), old):
            torch.testing.assert_close(xi, tau * xi_old + (1 - tau) * theta)
        for t_buf, o_buf in zip(target.buffers(), online.buffers()):
            torch.testing.assert_close(t_buf, o_buf)


def test_byol_momentum_starts_at_base_and_ends_at_one():
    method = small_byol()
    taus = []
    for step in range(0, 11):
        method.on_step_end(None, Progress(step=step, total_steps=10))
        taus.append(method.momentum)
    assert taus[0] == pytest.approx(0.996, abs=1e-15) and taus[-1] == pytest.approx(1.0, abs=1e-15)
    assert all(a <= b for a, b in zip(taus, taus[1:]))
    # At τ = 1 the target no longer moves.
    frozen = [p.clone() for p in method.target_backbone.parameters()]
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(1.0)
    method.on_step_end(None, Progress(step=10, total_steps=10))
    assert all(torch.equal(a, b) for a, b in zip(frozen, method.target_backbone.parameters()))


def test_byol_forward_leaves_the_target_untouched_and_rejects_bad_momentum():
    method = small_byol()
    before = [p.clone() for p in method.target_backbone.parameters()]
    method([torch.randn(4, 1, 16, 16) for _ in range(2)])
    assert all(torch.equal(a, b) for a, b in zip(before, method.target_backbone.parameters()))
    with pytest.raises(ValueError, match="base_momentum"):
        build_method("byol", tiny_backbone(), {"base_momentum": 1.5})


# ----------------------------------------------------------------------------- SimSiam


def test_simsiam_encoder_gets_gradient_only_through_the_predictor():
    """With the predictor's output made independent of its input, only the stop-gradient
    branch still depends on the encoder: the encoder must then receive exactly zero gradient."""
    torch.manual_seed(0)
    method = SimSiam(tiny_backbone(), SimSiam.Config(projection_hidden_dim=32, projection_dim=16,
                                                     prediction_hidden_dim=8))
    views = [torch.randn(6, 1, 16, 16) for _ in range(2)]
    method(views).loss.backward()  # normally the encoder learns ...
    assert sum(p.grad.abs().sum() for p in method.backbone.parameters()) > 0
    method.zero_grad(set_to_none=True)
    with torch.no_grad():
        method.predictor.layers[-1].weight.zero_()
        method.predictor.layers[-1].bias.normal_()
    method(views).loss.backward()  # ... but never through the targets z
    grads = [p.grad for p in method.backbone.parameters() if p.grad is not None]
    assert all(g.abs().max() == 0 for g in grads)


def test_simsiam_heads_follow_the_paper():
    method = SimSiam(tiny_backbone())
    proj = [m for m in method.projector.modules() if isinstance(m, (nn.Linear, nn.BatchNorm1d))]
    assert [type(m).__name__ for m in proj] == ["Linear", "BatchNorm1d"] * 3  # BN on the output too
    assert proj[-2].out_features == 2048 and proj[-2].bias is None
    pred = [m for m in method.predictor.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in pred] == [(2048, 512), (512, 2048)]
    assert not isinstance(method.predictor.layers[-1], nn.BatchNorm1d)


# ----------------------------------------------------------------------------- VICReg
def test_vicreg_defaults_to_the_released_codes_variance_weight():
    """The method's default is the code behind the paper's numbers (tests/losses/test_vicreg.py)."""
    assert VICReg.Config().variance_reduction == "mean"


# ----------------------------------------------------------------------------- all four


def test_default_heads_are_the_papers():
    assert (BYOL.Config().projection_hidden_dim, BYOL.Config().projection_dim) == (4096, 256)
    assert (BYOL.Config().base_momentum, BYOL.Config().final_momentum) == (0.996, 1.0)
    assert (VICReg.Config().expander_hidden_dim, VICReg.Config().expander_dim) == (8192, 8192)
    assert (VICReg.Config().invariance_weight, VICReg.Config().variance_weight) == (25.0, 25.0)
    assert (BarlowTwins.Config().projection_dim, BarlowTwins.Config().off_diagonal_weight) == (8192, 5e-3)
    views = BYOL.default_views()
    assert views.blur_prob == (1.0, 0.1) and views.solarize_prob == (0.0, 0.2)
    assert SimSiam.default_views().crop_scale == (0.2, 1.0)


@pytest.mark.parametrize("name", NAMES)
def test_recipes_are_valid(name):
    cls = METHODS.get(name)
    for dataset in ("fashion-mnist", "cifar10", "imagenet"):
        config = make_config(files=[RECIPES / dataset / f"{name}.yaml"])
        assert config.method == name
        cls.make_config(config.method_args)  # every method_args key is a Config field
        cls.default_views(**config.views).validate()
