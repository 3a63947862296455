"""BYOL, SimSiam, VICReg and Barlow Twins: losses against the papers' formulas written out as
loops, gradients where they must (and must not) flow, the EMA target and its schedule.
DDP equivalence is in test_noncontrastive_ddp.py (light imports keep its 2 processes fast)."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from selfsup.backbones import build_backbone
from selfsup.config import make_config
from selfsup.losses.barlow_twins import BarlowTwinsLoss, cross_correlation, standardize
from selfsup.losses.byol import BYOLLoss, normalized_mse
from selfsup.losses.negative_cosine import SymmetricNegativeCosineLoss
from selfsup.losses.vicreg import VICRegLoss, covariance_term, variance_term
from selfsup.methods import METHODS, Progress, build_method
from selfsup.methods.barlow_twins import BarlowTwins
from selfsup.methods.byol import BYOL
from selfsup.methods.simsiam import SimSiam
from selfsup.methods.vicreg import VICReg

RECIPES = Path(__file__).resolve().parents[1] / "src" / "selfsup" / "configs"
NAMES = ("byol", "simsiam", "vicreg", "barlow-twins")


def tiny_backbone() -> nn.Module:
    return build_backbone("resnet18", in_channels=1, small_stem=True, width=0.125)


def cosine(u: torch.Tensor, v: torch.Tensor) -> float:
    return float(torch.dot(u, v) / (u.norm() * v.norm()))


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ----------------------------------------------------------------------------- BYOL


def test_byol_loss_is_symmetrised_two_minus_two_cosine():
    q_a, q_b, t_a, t_b = (rand(5, 7, seed=s) for s in range(4))
    expected = sum(2 - 2 * cosine(q_a[i], t_b[i]) for i in range(5)) / 5
    expected += sum(2 - 2 * cosine(q_b[i], t_a[i]) for i in range(5)) / 5
    loss = BYOLLoss()(q_a, q_b, t_a, t_b)
    assert loss.dim() == 0 and loss.dtype == torch.float64
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    # ‖q/‖q‖ − z/‖z‖‖² is the same quantity (Eq. 2).
    direct = (q_a / q_a.norm(dim=1, keepdim=True) - t_b / t_b.norm(dim=1, keepdim=True)).pow(2).sum(1)
    torch.testing.assert_close(normalized_mse(q_a, t_b), direct)


def test_byol_loss_sends_no_gradient_to_targets():
    q_a, q_b = rand(4, 3, seed=0).requires_grad_(), rand(4, 3, seed=1).requires_grad_()
    t_a, t_b = rand(4, 3, seed=2).requires_grad_(), rand(4, 3, seed=3).requires_grad_()
    BYOLLoss()(q_a, q_b, t_a, t_b).backward()
    assert q_a.grad.abs().sum() > 0 and q_b.grad.abs().sum() > 0
    assert t_a.grad is None and t_b.grad is None


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


def test_simsiam_loss_matches_eq4():
    p_a, p_b, z_a, z_b = (rand(6, 5, seed=s) for s in range(4))
    expected = 0.5 * -sum(cosine(p_a[i], z_b[i]) for i in range(6)) / 6
    expected += 0.5 * -sum(cosine(p_b[i], z_a[i]) for i in range(6)) / 6
    assert SymmetricNegativeCosineLoss()(p_a, p_b, z_a, z_b).item() == pytest.approx(expected, rel=1e-12)
    assert SymmetricNegativeCosineLoss()(z_a, z_b, z_b, z_a).item() == pytest.approx(-1.0)


def test_simsiam_loss_stops_gradients_at_z():
    p_a, p_b = rand(4, 3, seed=0).requires_grad_(), rand(4, 3, seed=1).requires_grad_()
    z_a, z_b = rand(4, 3, seed=2).requires_grad_(), rand(4, 3, seed=3).requires_grad_()
    SymmetricNegativeCosineLoss()(p_a, p_b, z_a, z_b).backward()
    assert p_a.grad.abs().sum() > 0 and p_b.grad.abs().sum() > 0
    assert z_a.grad is None and z_b.grad is None


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


def naive_vicreg(z_a, z_b, lam=25.0, mu=25.0, nu=1.0, gamma=1.0, eps=1e-4, variance_reduction="sum"):
    """Eq. 6 written out; ``variance_reduction="mean"`` halves the two hinges' sum as the authors'
    released code does (``std_loss = mean(relu(1 - std_x)) / 2 + mean(relu(1 - std_y)) / 2``)."""
    n, d = z_a.shape

    def mean(z, j):
        return sum(float(z[i, j]) for i in range(n)) / n

    def cov(z, j, k):
        mj, mk = mean(z, j), mean(z, k)
        return sum((float(z[i, j]) - mj) * (float(z[i, k]) - mk) for i in range(n)) / (n - 1)

    def v(z):  # Eq. 1-2
        return sum(max(0.0, gamma - math.sqrt(cov(z, j, j) + eps)) for j in range(d)) / d

    def c(z):  # Eq. 3-4
        return sum(cov(z, j, k) ** 2 for j in range(d) for k in range(d) if j != k) / d

    s = sum(float(z_a[i, j] - z_b[i, j]) ** 2 for i in range(n) for j in range(d)) / (n * d)
    variance = v(z_a) + v(z_b)
    if variance_reduction == "mean":
        variance = v(z_a) / 2 + v(z_b) / 2
    return lam * s + mu * variance + nu * (c(z_a) + c(z_b)), s, variance, c(z_a) + c(z_b)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("scale", [0.3, 3.0])  # below and above γ = 1: hinge active / inactive
def test_vicreg_terms_match_the_paper(scale, reduction):
    z_a, z_b = rand(7, 5, seed=0) * scale, rand(7, 5, seed=1) * scale
    total, s, v, c = naive_vicreg(z_a, z_b, variance_reduction=reduction)
    terms = VICRegLoss(variance_reduction=reduction)(z_a, z_b)
    assert terms.loss.dim() == 0 and terms.loss.dtype == torch.float64
    assert terms.invariance.item() == pytest.approx(s, rel=1e-10)
    assert terms.variance.item() == pytest.approx(v, rel=1e-10, abs=1e-12)
    assert terms.covariance.item() == pytest.approx(c, rel=1e-10)
    assert terms.loss.item() == pytest.approx(total, rel=1e-10)
    weighted = VICRegLoss(2.0, 3.0, 0.5, variance_reduction=reduction)(z_a, z_b).loss.item()
    assert weighted == pytest.approx(naive_vicreg(z_a, z_b, 2.0, 3.0, 0.5, variance_reduction=reduction)[0], rel=1e-10)
    if scale > 1:
        assert v == 0.0


def test_vicreg_defaults_to_the_released_codes_variance_weight():
    """The default halves Eq. 6's variance sum (the code behind the paper's numbers); "sum" keeps
    Eq. 6 as printed; anything else is refused."""
    z_a, z_b = rand(7, 5, seed=0) * 0.3, rand(7, 5, seed=1) * 0.3
    mean, summed = VICRegLoss()(z_a, z_b), VICRegLoss(variance_reduction="sum")(z_a, z_b)
    assert mean.variance.item() > 0
    assert summed.variance.item() == pytest.approx(2 * mean.variance.item(), rel=1e-12)
    assert VICReg.Config().variance_reduction == "mean"
    with pytest.raises(ValueError, match="variance_reduction"):
        VICRegLoss(variance_reduction="median")


def test_vicreg_variance_and_covariance_vanish_for_whitened_embeddings():
    # Orthogonal columns with norm sqrt(n-1): unit variance, zero covariance.
    q, _ = torch.linalg.qr(rand(16, 4, seed=3) - rand(16, 4, seed=3).mean(0))
    z = q - q.mean(0)
    z = z / z.std(dim=0) * 1.5
    assert variance_term(z).item() == 0.0
    assert covariance_term(z).item() < 1e-12


# ----------------------------------------------------------------------------- Barlow Twins


def naive_barlow_twins(z_a, z_b, lam, eps=1e-5):
    """Eq. 1-2 with an explicit double loop over (i, j) of the cross-correlation matrix."""
    n, d = z_a.shape

    def standardised(z, b, i):
        m = sum(float(z[k, i]) for k in range(n)) / n
        var = sum((float(z[k, i]) - m) ** 2 for k in range(n)) / n  # BatchNorm: biased variance
        return (float(z[b, i]) - m) / math.sqrt(var + eps)

    loss = 0.0
    corr = [[0.0] * d for _ in range(d)]
    for i in range(d):
        for j in range(d):
            corr[i][j] = sum(standardised(z_a, b, i) * standardised(z_b, b, j) for b in range(n)) / n
            loss += (1 - corr[i][j]) ** 2 if i == j else lam * corr[i][j] ** 2
    return loss, corr


@pytest.mark.parametrize("lam", [5e-3, 0.5])
def test_barlow_twins_matches_the_double_loop(lam):
    z_a, z_b = rand(6, 4, seed=0) * 2 + 1, rand(6, 4, seed=1)
    expected, corr = naive_barlow_twins(z_a, z_b, lam)
    torch.testing.assert_close(cross_correlation(z_a, z_b), torch.tensor(corr, dtype=torch.float64))
    terms = BarlowTwinsLoss(lam)(z_a, z_b)
    assert terms.loss.dim() == 0 and terms.loss.dtype == torch.float64
    assert terms.loss.item() == pytest.approx(expected, rel=1e-10)


def test_barlow_twins_standardisation_is_affine_free_batchnorm():
    z = rand(8, 5, seed=4) * 3 + 2
    bn = nn.BatchNorm1d(5, affine=False).double().train()
    torch.testing.assert_close(standardize(z)[0], bn(z))
    # Identical views: C is the correlation matrix, diagonal 1 (up to ε), so on-diagonal ≈ 0.
    torch.testing.assert_close(cross_correlation(z, z, eps=0.0), torch.corrcoef(z.T))
    assert BarlowTwinsLoss()(z, z).on_diagonal.item() < 1e-8


def test_barlow_twins_and_vicreg_need_the_whole_batch():
    """Why the DDP test (test_noncontrastive_ddp.py) can fail: per-half statistics differ."""
    z_a, z_b = rand(8, 4, seed=5), rand(8, 4, seed=6)
    for loss in (lambda a, b: BarlowTwinsLoss()(a, b).loss, lambda a, b: VICRegLoss()(a, b).loss):
        halves = sum(loss(z_a[i:i + 4], z_b[i:i + 4]).item() for i in (0, 4)) / 2
        assert abs(halves - loss(z_a, z_b).item()) > 1e-3


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
