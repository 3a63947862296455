"""``timm:<name>`` backbones: any timm model, pooled features for every method, patch tokens and
masks for timm ViTs (iBOT, DINOv2), and one-line errors where a model cannot serve."""

from __future__ import annotations

import pytest
import torch

from selfsup.backbones import TimmBackbone, TimmVisionTransformerBackbone, build_backbone
from selfsup.cli import main
from selfsup.errors import ConfigError
from selfsup.methods import build_method
from selfsup.methods.ibot import IBOT
from selfsup.methods.simclr import SimCLR

HEAD = dict(out_dim=24, patch_out_dim=20, head_hidden_dim=16, head_bottleneck_dim=8)


def tiny_timm_vit(channels: int = 1) -> TimmVisionTransformerBackbone:
    torch.manual_seed(0)
    return build_backbone("timm:vit_tiny_patch16_224", in_channels=channels, image_size=16,
                          model_args={"patch_size": 4, "depth": 2})


@pytest.mark.parametrize("name, feature_dim", [("timm:resnet10t", 512), ("timm:convnext_atto", 320)])
def test_feature_dim_is_timms_num_features_and_channels_are_honoured(name, feature_dim):
    import timm

    model = build_backbone(name, in_channels=1)
    assert isinstance(model, TimmBackbone) and not hasattr(model, "forward_tokens")
    assert model.feature_dim == feature_dim == timm.create_model(name.split(":")[1], num_classes=0).num_features
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 1, 40, 40)).shape == (2, feature_dim)


def test_timm_vit_tokens_match_plain_timm_and_the_pooled_forward():
    import timm

    vit = tiny_timm_vit().eval()
    reference = timm.create_model("vit_tiny_patch16_224", num_classes=0, in_chans=1, img_size=16, patch_size=4,
                                  depth=2).eval()
    reference.load_state_dict(vit.model.state_dict())
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        tokens = vit.forward_tokens(x)
        torch.testing.assert_close(tokens.cls, vit(x))
        torch.testing.assert_close(tokens.cls, reference(x))
        features = reference.forward_features(x)  # (B, 1 + N, D) after the final norm
        torch.testing.assert_close(tokens.patches, features[:, 1:])
        assert vit.forward_tokens(torch.randn(2, 1, 24, 24)).patches.shape == (2, 36, 192)  # another size
        assert vit.get_last_attention(x).shape == (3, 3, 17, 17)
    assert vit.patch_embed.patch_size == (4, 4) and "mask_token" in vit.no_weight_decay()


def test_timm_vit_mask_token_replaces_only_masked_patches():
    vit = tiny_timm_vit().eval()
    x = torch.randn(2, 1, 16, 16)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, :3] = True
    with torch.no_grad():
        plain = vit.forward_tokens(x)
        vit.mask_token.normal_()
        masked = vit.forward_tokens(x, mask)
    assert not torch.allclose(masked.patches[0], plain.patches[0])
    torch.testing.assert_close(masked.patches[1], plain.patches[1])  # no mask in image 1
    with pytest.raises(ValueError, match="mask"):
        vit.forward_tokens(x, torch.zeros(2, 5, dtype=torch.bool))


@pytest.mark.parametrize("name, kwargs", [
    ("timm:resnet10t", {}), ("timm:convnext_atto", {}),
    ("timm:vit_tiny_patch16_224", {"image_size": 16, "model_args": {"patch_size": 4, "depth": 2}}),
])
def test_simclr_forward_and_backward_with_timm_backbones(name, kwargs):
    torch.manual_seed(0)
    method = SimCLR(build_backbone(name, in_channels=1, **kwargs), SimCLR.Config(projection_dim=16))
    views = [torch.randn(4, 1, 32, 32) for _ in range(2)]  # ConvNeXt downsamples 32×: at least 32 pixels
    out = method(views)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    trained = [n for n, p in method.backbone.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert any(n.startswith("model.") for n in trained)


def test_one_ibot_step_with_a_timm_vit():
    torch.manual_seed(0)
    method = IBOT(tiny_timm_vit(), IBOT.Config(**HEAD, mask_probability=1.0))
    views = [torch.randn(4, 1, 16, 16) for _ in range(2)] + [torch.randn(4, 1, 8, 8) for _ in range(2)]
    out = method(views)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert method.backbone.mask_token.grad is not None and method.backbone.mask_token.grad.abs().sum() > 0


@pytest.mark.parametrize("method", ["ibot", "dinov2"])
def test_masked_token_methods_refuse_a_timm_cnn_in_one_line(method):
    with pytest.raises(ConfigError) as info:
        build_method(method, build_backbone("timm:resnet10t", in_channels=1))
    assert "\n" not in str(info.value) and "timm:vit_small_patch16_224" in str(info.value)


@pytest.mark.parametrize("name, kwargs, match", [
    ("timm:resnet10", {}, "did you mean timm:resnet10t"),
    ("timm:", {}, "names no model"),
    ("timm:resnet10t", {"image_size": 32}, "drop image_size"),
    ("timm:resnet10t", {"model_args": {"pretrained": True}}, "model_args"),
    ("timm:vit_tiny_patch16_224", {"image_size": 0}, "image_size=0"),
])
def test_bad_timm_settings_are_one_line_config_errors(name, kwargs, match):
    with pytest.raises(ConfigError, match=match) as info:
        build_backbone(name, **kwargs)
    assert "\n" not in str(info.value)


def test_backbones_command_lists_the_timm_prefix(capsys):
    assert main(["backbones"]) == 0
    out = capsys.readouterr().out
    assert "timm:NAME" in out and "any timm model" in out.lower()
