"""E-SSL (Dangovski et al. 2022): SimCLR's loss on two views plus λ × the four-fold rotation
cross-entropy on a third, small view, checked against a naive one-image-at-a-time reference,
its gradients, its views and its refusals."""

import pytest
import torch
from torch import nn

from selfsup.backbones import build_backbone
from selfsup.errors import ConfigError
from selfsup.methods import build_method
from selfsup.methods.essl import ESSL
from selfsup.methods.simclr import SimCLR
from tests.losses.test_ntxent import naive_ntxent

pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_backbone() -> nn.Module:
    return build_backbone("resnet18", in_channels=1, small_stem=True, width=0.125)


def make(**args) -> ESSL:
    torch.manual_seed(0)
    return build_method("essl", tiny_backbone(), {"projection_hidden_dim": 32, "projection_dim": 16,
                                                  "rotation_hidden_dim": 16, **args})


def views(batch: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 1, 16, 16, generator=g), torch.randn(batch, 1, 16, 16, generator=g),
            torch.randn(batch, 1, 8, 8, generator=g)]


@torch.no_grad()
def test_loss_is_ntxent_plus_weighted_rotation_cross_entropy_of_the_small_view():
    # eval(): BatchNorm uses running statistics, so each image's features do not depend on the
    # batch it shares and the naive reference may go one image at a time.
    method = make(rotation_weight=0.7, temperature=0.3).eval()
    v = views()
    out = method(v)
    h_a, h_b = method.backbone(v[0]), method.backbone(v[1])
    contrastive = naive_ntxent(method.projector(h_a).double(), method.projector(h_b).double(), 0.3)
    terms = []
    for k in range(4):
        for image in v[2]:
            logits = method.rotation_head(method.backbone(torch.rot90(image[None], k, dims=(2, 3))))
            terms.append(-torch.log_softmax(logits, dim=1)[0, k])
    rotation = torch.stack(terms).mean().item()
    assert out.loss.item() == pytest.approx(contrastive + 0.7 * rotation, abs=1e-4)
    assert out.logs["rotation_loss"].item() == pytest.approx(rotation, abs=1e-5)
    assert torch.allclose(out.features, h_a, atol=1e-5)


def test_without_rotation_weight_it_is_simclr_and_the_rotation_head_learns_nothing():
    method = make(rotation_weight=0.0, temperature=0.2)
    v = views(6)
    method(v).loss.backward()
    assert all(p.grad is not None and not p.grad.any() for p in method.rotation_head.parameters())
    assert any(p.grad.abs().sum() > 0 for p in method.backbone.parameters())
    simclr = SimCLR(method.backbone, SimCLR.Config(temperature=0.2, projection_hidden_dim=32, projection_dim=16))
    simclr.projector.load_state_dict(method.projector.state_dict())
    method.eval(), simclr.eval()
    assert method(v).loss.item() == pytest.approx(simclr(v[:2]).loss.item(), abs=1e-5)


def gradients(weight: float) -> ESSL:
    method = make(rotation_weight=weight)
    method(views(seed=1)).loss.backward()
    return method


def test_rotation_gradient_reaches_the_backbone_and_not_the_projector():
    without, with_rotation = gradients(0.0), gradients(1.0)
    assert all(p.grad.abs().sum() > 0 for p in with_rotation.rotation_head.parameters())
    assert not torch.allclose(with_rotation.backbone.conv1.weight.grad, without.backbone.conv1.weight.grad)
    for p, q in zip(with_rotation.projector.parameters(), without.projector.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)  # the rotation term never reaches SimCLR's head


def test_backbone_sees_two_global_views_then_four_rotations_of_the_small_one():
    method = make()
    seen = []
    method.backbone.register_forward_hook(lambda module, inputs, output: seen.append(tuple(inputs[0].shape)))
    method(views(5))
    assert seen == [(10, 1, 16, 16), (20, 1, 8, 8)]


def test_default_views_add_one_small_unblurred_crop():
    preset = ESSL.default_views()
    assert (preset.num_global_views, preset.num_local_views, preset.local_crop_scale) == (2, 1, (0.2, 1.0))
    assert preset.local_blur_prob == 0.0 and ESSL.default_views(local_size=14).local_size == 14


@pytest.mark.parametrize("args, message", [
    ({"rotation_weight": -0.4}, "rotation_weight=-0.4 must be >= 0"),
    ({"rotation_layers": 0}, "rotation_layers=0"),
])
def test_bad_settings_are_refused(args, message):
    with pytest.raises(ConfigError, match=message):
        make(**args)


def test_missing_or_non_square_small_view_is_refused():
    with pytest.raises(ConfigError, match="essl needs a third, small view to rotate, got 2 views; set views.num_local_views=1"):
        make()(views()[:2])
    with pytest.raises(ConfigError, match="square"):
        make()([*views()[:2], torch.randn(4, 1, 8, 6)])
