"""Every registered backbone honours the contract; ResNet and ViT specifics are checked too."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn

from selfsup.backbones import BACKBONES, Backbone, TokenFeatures, backbone_kwargs, build_backbone
from selfsup.errors import ConfigError

# Every registered backbone, and the prefix backbone timm:NAME through three small timm models
# (a ResNet, a ConvNeXt and a ViT: each family's code path).
TIMM_EXAMPLES = ["timm:resnet10t", "timm:convnext_atto", "timm:vit_tiny_patch16_224"]
NAMES = [n for n in BACKBONES.names() if not n.endswith(":NAME")] + TIMM_EXAMPLES
VITS = [n for n in NAMES if "patch_size" in backbone_kwargs(n)]
SIZE = 32  # small inputs keep the suite fast


def small_kwargs(name: str) -> dict:
    """Settings that make ``name`` cheap on 32×32 inputs."""
    valid = backbone_kwargs(name)
    if "patch_size" in valid:
        return {"image_size": SIZE, "patch_size": 8}
    if "small_stem" in valid:
        return {"small_stem": True}
    if name.startswith("timm:vit"):
        return {"image_size": SIZE}
    return {}


@functools.lru_cache(maxsize=None)
def cached(name: str, in_channels: int = 3) -> Backbone:
    """One model per (name, channels) for tests that don't modify it (build time dominates)."""
    torch.manual_seed(0)
    return build_backbone(name, in_channels=in_channels, **small_kwargs(name))


def images(batch: int = 2, channels: int = 3, size: int = SIZE) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------- the contract, for every backbone
def test_registry_lists_the_documented_backbones():
    assert {"resnet18", "resnet34", "resnet50", "resnet18-tiny", "vit-tiny", "vit-small", "vit-base"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_and_gradient_flow(name):
    model = cached(name).train()
    x = images().requires_grad_()
    out = model(x)
    assert isinstance(model, Backbone)
    assert out.shape == (2, model.feature_dim)
    model.zero_grad(set_to_none=True)
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    unused = {"mask_token"}  # only used by forward_tokens(mask=...)
    missing = [n for n, p in model.named_parameters() if p.grad is None and n not in unused]
    assert not missing, f"no gradient reached {missing[:5]}"
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", NAMES)
def test_grayscale_input(name):
    model = cached(name, in_channels=1).eval()
    with torch.no_grad():
        assert model(images(channels=1)).shape == (2, model.feature_dim)


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_matches_contiguous(name):
    model = cached(name).eval()
    x = images()
    nhwc = copy.deepcopy(model).to(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = model(x)
        actual = nhwc(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_sync_batchnorm_conversion(name):
    model = copy.deepcopy(cached(name))
    had_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert not any(type(m) is nn.BatchNorm2d for m in model.modules())
    assert any(isinstance(m, nn.SyncBatchNorm) for m in model.modules()) == had_bn
    with torch.no_grad():  # without a process group SyncBatchNorm behaves like BatchNorm
        assert model.eval()(images()).shape == (2, model.feature_dim)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_kwarg_is_a_one_line_config_error(name):
    with pytest.raises(ConfigError) as info:
        build_backbone(name, not_a_kwarg=1)
    message = str(info.value)
    assert "not_a_kwarg" in message and name in message and "\n" not in message
    for valid in backbone_kwargs(name):
        assert valid in message


@pytest.mark.parametrize("name", NAMES)
def test_wrong_value_type_is_a_config_error(name):
    key = next(iter(backbone_kwargs(name)))
    with pytest.raises(ConfigError, match=key):
        build_backbone(name, **{key: "not-a-number"})


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ConfigError, match="resnet18-tiny"):
        build_backbone("resnet19")


# ---------------------------------------------------------------- ResNet
@pytest.mark.parametrize("name, width, planes, feature_dim", [
    ("resnet18", 0.25, [16, 32, 64, 128], 128),
    ("resnet18", 0.5, [32, 64, 128, 256], 256),
    ("resnet34", 1.0, [64, 128, 256, 512], 512),
    ("resnet50", 0.25, [16, 32, 64, 128], 512),  # Bottleneck: 4× expansion
])
def test_width_scales_every_stage_and_the_stem(name, width, planes, feature_dim):
    model = build_backbone(name, small_stem=True, width=width)
    stages = (model.layer1, model.layer2, model.layer3, model.layer4)
    assert model.feature_dim == feature_dim
    assert model.conv1.out_channels == model.bn1.num_features == round(64 * width)
    assert stages[0][0].conv1.in_channels == round(64 * width)  # the first stage reads the scaled stem
    assert [stage[0].conv1.out_channels for stage in stages] == planes
    with torch.no_grad():
        assert model.eval()(images(size=16)).shape == (2, feature_dim)


@pytest.mark.parametrize("kwargs, downsampling", [
    ({"small_stem": True}, 1),
    ({"small_stem": True, "stem_stride": 2}, 2),
    ({"small_stem": False}, 4),
])
def test_stem_downsampling(kwargs, downsampling):
    model = build_backbone("resnet18", width=0.25, **kwargs).eval()
    seen = {}
    model.layer1.register_forward_hook(lambda m, i, out: seen.update(shape=out.shape))  # returns None
    with torch.no_grad():
        model(images(size=32))
    assert seen["shape"][-1] == 32 // downsampling


def test_stem_stride_needs_small_stem():
    with pytest.raises(ConfigError, match="stem_stride"):
        build_backbone("resnet18", stem_stride=2)


def test_bad_width_is_a_config_error():
    with pytest.raises(ConfigError, match="width"):
        build_backbone("resnet18", width=0)


def test_zero_init_residual_zeroes_the_last_bn_of_each_branch():
    model = build_backbone("resnet18", width=0.25, zero_init_residual=True)
    assert all(block.bn2.weight.abs().sum() == 0 for layer in (model.layer1, model.layer4) for block in layer)
    assert build_backbone("resnet18", width=0.25).layer1[0].bn2.weight.abs().sum() > 0


def test_resnet_matches_torchvision_parameter_count():
    import torchvision

    reference = torchvision.models.resnet18()
    expected = sum(p.numel() for n, p in reference.named_parameters() if not n.startswith("fc."))
    assert sum(p.numel() for p in build_backbone("resnet18").parameters()) == expected


# ---------------------------------------------------------------- ViT
@pytest.mark.parametrize("name", VITS)
def test_forward_tokens_shapes_and_cls_equals_forward(name):
    model = cached(name).eval()
    x = images()
    with torch.no_grad():
        tokens = model.forward_tokens(x)
        pooled = model(x)
    assert isinstance(tokens, TokenFeatures)
    n = (SIZE // 8) ** 2
    assert tokens.cls.shape == (2, model.feature_dim) and tokens.patches.shape == (2, n, model.feature_dim)
    torch.testing.assert_close(tokens.cls, pooled)


@pytest.mark.parametrize("name", VITS)
def test_runs_at_another_image_size(name):
    model = cached(name).eval()
    with torch.no_grad():
        tokens = model.forward_tokens(images(size=2 * SIZE))
    assert tokens.patches.shape == (2, (2 * SIZE // 8) ** 2, model.feature_dim)


def _vit(patch_size: int = 4) -> nn.Module:
    torch.manual_seed(0)
    model = build_backbone("vit-tiny", image_size=SIZE, patch_size=patch_size).eval()
    with torch.no_grad():
        model.mask_token.normal_()  # zeros at init; any learned value must be used
    return model


def test_mask_token_changes_output_only_where_mask_is_true():
    model = _vit()
    x = images()
    n = (SIZE // 4) ** 2
    none = torch.zeros(2, n, dtype=torch.bool)
    some = none.clone()
    some[0, :5] = True
    with torch.no_grad():
        plain = model.forward_tokens(x)
        unmasked = model.forward_tokens(x, none)
        masked = model.forward_tokens(x, some)
        model.mask_token.add_(1.0)
        unmasked_other_token = model.forward_tokens(x, none)
        masked_other_token = model.forward_tokens(x, some)
    torch.testing.assert_close(unmasked.patches, plain.patches)
    torch.testing.assert_close(unmasked_other_token.patches, plain.patches)
    assert not torch.allclose(masked.patches[0], plain.patches[0])  # sample 0 has masked patches
    torch.testing.assert_close(masked.patches[1], plain.patches[1])  # sample 1 has none
    assert not torch.allclose(masked_other_token.patches[0], masked.patches[0])  # the token's value matters


def test_mask_token_is_placed_before_the_position_embedding():
    # With every patch masked, the tokens entering the blocks differ only by their position
    # embedding; had the mask replaced tokens after it, all patch outputs would be identical.
    model = _vit()
    with torch.no_grad():
        model.pos_embed.normal_()
        out = model.forward_tokens(images(), torch.ones(2, (SIZE // 4) ** 2, dtype=torch.bool)).patches
    assert (out[:, 1:] - out[:, :1]).abs().amax() > 1e-3
    torch.testing.assert_close(out[0], out[1])  # the images themselves no longer matter


def test_mask_of_wrong_shape_raises():
    with pytest.raises(ValueError, match="mask"):
        _vit().forward_tokens(images(), torch.zeros(2, 3, dtype=torch.bool))


def test_last_attention_is_the_attention_the_last_block_uses():
    model = _vit(patch_size=8)
    x = images()
    seen = {}
    model.blocks[-1].attn.register_forward_hook(lambda m, args, out: seen.update(input=args[0], output=out))
    with torch.no_grad():
        probs = model.get_last_attention(x)
        model(x)
    heads, t = model.blocks[-1].attn.num_heads, 1 + (SIZE // 8) ** 2
    assert probs.shape == (2, heads, t, t)
    assert probs.min() >= 0
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, heads, t))
    # Re-derive the block's attention output from these probabilities: softmax(qkᵀ/√d)·v, then proj.
    attn = model.blocks[-1].attn
    v = attn.qkv(seen["input"]).reshape(2, t, 3, heads, -1)[:, :, 2].transpose(1, 2)  # (B, heads, T, d)
    rederived = attn.proj((probs @ v).transpose(1, 2).reshape(2, t, -1))
    torch.testing.assert_close(rederived, seen["output"], rtol=1e-4, atol=1e-5)


def test_patch_size_must_divide_image_size():
    with pytest.raises(ConfigError, match="patch_size=5"):
        build_backbone("vit-tiny", image_size=32, patch_size=5)


def test_mask_token_is_excluded_from_weight_decay():
    assert "mask_token" in _vit().no_weight_decay()
