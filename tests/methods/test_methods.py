"""The method contract, parametrised over the registry, and SimCLR specifics."""

import pytest
import torch
from torch import nn

from selfsup.backbones import build_backbone
from selfsup.data import DatasetInfo
from selfsup.errors import ConfigError
from selfsup.methods import METHODS, DataSpec, MethodOutput, Progress, SimCLR, build_backbone_for, build_method
from selfsup.transforms import BatchedMultiViewTransform


def tiny_backbone(in_channels: int = 1) -> nn.Module:
    return build_backbone("resnet18", in_channels=in_channels, small_stem=True, width=0.125)


# Colour images suit every method (colorization needs them); video colorization trains on pairs
# of frames stacked along the channels.
SMOKE_CHANNELS = {"video-colorization": 6}


def smoke_setup(name: str, size: int = 16, batch: int = 4):
    """The method ``name`` on a tiny backbone of the kind it needs, with views made by the
    engine's own batched pipeline from the method's preset, as in training."""
    cls = METHODS.get(name)
    channels = SMOKE_CHANNELS.get(name, 3)
    info = DatasetInfo("smoke", channels, 3, size, (0.5,) * channels, (0.25,) * channels)
    if cls.backbone_kind == "vit":
        backbone, backbone_args = "vit-tiny", {"patch_size": 4, "image_size": size}
    else:
        backbone, backbone_args = "resnet18", {"small_stem": True, "width": 0.125}
    net = build_backbone_for(name, backbone, backbone_args, channels)
    method = build_method(name, net, data=DataSpec(info, num_samples=2 * batch))
    images = torch.randint(0, 256, (batch, channels, size, size), dtype=torch.uint8)
    views = BatchedMultiViewTransform(cls.default_views(), info)(images, generator=torch.Generator().manual_seed(0))
    return method, views


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_runs_a_step_and_learns(name):
    torch.manual_seed(0)
    method, views = smoke_setup(name)
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.05)
    indices = torch.arange(views[0].shape[0])
    out = method(views, indices)
    assert isinstance(out, MethodOutput)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert out.features.shape == (4, method.encoder().feature_dim) and not out.features.requires_grad
    assert all(v.dim() == 0 and not v.requires_grad for v in out.logs.values())
    out.loss.backward()
    grads = [p.grad for p in method.backbone.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    method.on_before_optimizer_step(Progress(step=1, total_steps=10))
    optimizer.step()
    method.on_step_end(out, Progress(step=1, total_steps=10))
    single = views[0][:, :3]  # one image (for video colorization: the first frame of each pair)
    assert method.encoder()(single).shape == (4, method.encoder().feature_dim)


def test_simclr_loss_decreases_on_fixed_views():
    torch.manual_seed(0)
    method = SimCLR(tiny_backbone(), SimCLR.Config(projection_hidden_dim=32, projection_dim=16))
    views = [torch.randn(8, 1, 16, 16) for _ in range(2)]
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        out = method(views)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0] - 0.1


def test_simclr_gradients_flow_through_both_views():
    method = SimCLR(tiny_backbone(), SimCLR.Config(projection_hidden_dim=32, projection_dim=16))
    method.eval()  # BatchNorm couples the views through batch statistics in train mode
    a = torch.randn(4, 1, 16, 16, requires_grad=True)
    b = torch.randn(4, 1, 16, 16, requires_grad=True)
    method([a, b]).loss.backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


def test_simclr_uses_the_configured_head():
    method = SimCLR(tiny_backbone(), SimCLR.Config(projection_layers=3, projection_dim=24, projection_hidden_dim=40))
    linears = [m for m in method.projector.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 3 and linears[-1].out_features == 24


def test_unknown_method_and_option_errors():
    with pytest.raises(ConfigError, match="unknown method 'nope'; valid choices: .*simclr"):
        build_method("nope", tiny_backbone())
    with pytest.raises(ConfigError, match="unknown option\\(s\\) temp .*valid: .*temperature"):
        build_method("simclr", tiny_backbone(), {"temp": 0.1})
