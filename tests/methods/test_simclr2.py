"""SimCLR v2: 3-layer head, fine-tuning trunk with the first head layer, momentum memory of negatives."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.backbones import build_backbone
from selfsup.errors import ConfigError
from selfsup.methods import Progress, build_method
from selfsup.methods.simclr2 import FineTuneTrunk, SimCLRv2


def tiny_backbone() -> nn.Module:
    return build_backbone("resnet18", in_channels=1, small_stem=True, width=0.125)


def tiny_simclr2(**overrides) -> SimCLRv2:
    args = dict(projection_hidden_dim=32, projection_dim=16)
    args.update(overrides)
    return build_method("simclr2", tiny_backbone(), args)


# ----------------------------------------------------------------------------- head and trunk
def test_default_head_has_three_layers():
    method = build_method("simclr2", tiny_backbone())
    linears = [m for m in method.projector.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 3
    assert [l.out_features for l in linears] == [2048, 2048, 128]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in method.projector.modules()) == 2


def test_finetune_trunk_is_backbone_plus_first_head_layer():
    torch.manual_seed(0)
    method = tiny_simclr2().eval()
    trunk = method.finetune_trunk()
    assert isinstance(trunk, FineTuneTrunk) and trunk.feature_dim == 32
    first = method.projector.layers
    assert trunk.backbone is method.backbone
    assert [type(m) for m in trunk.head_layers] == [nn.Linear, nn.BatchNorm1d, nn.ReLU]
    # Shared, not copied: fine-tuning starts from the pre-trained layer.
    assert trunk.head_layers[0] is first[0] and trunk.head_layers[1] is first[1]
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        expected = F.relu(first[1](first[0](method.backbone(x))))
        torch.testing.assert_close(trunk(x), expected)
    # 0 head layers: fine-tuning from the backbone output (the paper's choice with all labels).
    plain = method.finetune_trunk(0)
    assert len(plain.head_layers) == 0 and plain.feature_dim == method.backbone.feature_dim
    assert len(method.finetune_trunk(2).head_layers) == 6  # two hidden layers
    with pytest.raises(ConfigError, match="head_layers=3"):
        method.finetune_trunk(3)


def test_evaluation_encoder_is_the_plain_backbone():
    method = tiny_simclr2()
    assert method.encoder() is method.backbone


# ----------------------------------------------------------------------------- memory
def test_memory_is_read_in_forward_and_written_in_on_step_end():
    torch.manual_seed(0)
    method = tiny_simclr2(memory_size=12, momentum=0.9)
    assert method.key_network is not None and method.memory is not None
    views = [torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16)]
    before = method.memory.stored.clone()
    out = method(views)
    keys = out.extras["keys"]
    assert keys.shape == (8, 16) and not keys.requires_grad
    torch.testing.assert_close(keys.norm(dim=1), torch.ones(8))
    assert torch.equal(method.memory.stored, before) and int(method.memory.ptr) == 0  # forward writes nothing
    method.on_step_end(out, Progress(step=1, total_steps=10))
    assert int(method.memory.ptr) == 8
    torch.testing.assert_close(method.memory.keys()[-8:], keys)


def test_memory_negatives_enter_the_loss():
    torch.manual_seed(0)
    method = tiny_simclr2(memory_size=16).eval()  # eval: identical BN for both calls
    views = [torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16)]
    with torch.no_grad():
        with_memory = method(views).loss
        method.memory.stored.zero_()[:, 0] = 1.0  # one repeated key: a different set of negatives
        other_memory = method(views).loss
    assert not torch.isclose(with_memory, other_memory)


def test_key_network_gets_no_gradient_and_follows_by_ema():
    torch.manual_seed(0)
    method = tiny_simclr2(memory_size=8, momentum=0.5)
    key_params = list(method.key_network.parameters())
    assert all(not p.requires_grad for p in key_params)
    trainable = {id(p) for p in method.parameters() if p.requires_grad}
    assert not trainable & {id(p) for p in key_params}
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    out = method([torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16)])
    out.loss.backward()
    assert all(p.grad is None for p in key_params)
    old_key = key_params[0].clone()
    optimizer.step()
    online = method.backbone.conv1.weight.detach().clone()
    method.on_step_end(out, Progress(step=1, total_steps=10))
    # θ_k ← m·θ_k + (1 − m)·θ_q with m = 0.5, first parameter = backbone.conv1.weight
    torch.testing.assert_close(key_params[0], 0.5 * old_key + 0.5 * online)


def test_no_memory_by_default_and_bad_options():
    method = tiny_simclr2()
    assert method.memory is None and method.key_network is None
    out = method([torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16)])
    assert out.extras == {} and math.isfinite(out.loss.item())
    method.on_step_end(out, Progress(step=1, total_steps=2))  # nothing to update
    with pytest.raises(ConfigError, match="finetune_head_layers=3"):
        tiny_simclr2(finetune_head_layers=3)
    with pytest.raises(ConfigError, match="memory_size=-1"):
        tiny_simclr2(memory_size=-1)
    with pytest.raises(ConfigError, match="temperature=0"):
        tiny_simclr2(temperature=0)
