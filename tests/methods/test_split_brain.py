"""Split-brain autoencoders (Zhang et al. 2017): the two halves, their targets and their features."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from selfsup.backbones import build_backbone
from selfsup.data import DatasetInfo
from selfsup.errors import ConfigError
from selfsup.methods import DataSpec, Progress, build_backbone_for, build_method
from selfsup.methods.split_brain import SplitBrain, with_input_channels
from selfsup.transforms.color import lab_to_rgb, lightness_bin_centers, quantize_lightness

from methods.test_colorization import colour_batch


# Tiny tensors: a second intra-op thread only adds synchronisation (conftest.single_thread).
pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_split_brain(**config) -> SplitBrain:
    backbone = build_backbone("resnet18", in_channels=1, small_stem=True, width=0.125)
    return SplitBrain(backbone, SplitBrain.Config(head_hidden_dim=32, **config))


def test_lightness_bins_match_a_naive_quantiser():
    values = torch.tensor([0.0, 1.99, 2.0, 49.9, 50.0, 99.99, 100.0, -3.0, 104.0]).view(1, 1, 3, 3)
    expected = [min(49, max(0, int(v // 2))) for v in values.flatten().tolist()]
    assert quantize_lightness(values, 50).flatten().tolist() == expected
    centers = lightness_bin_centers(50)
    assert centers.shape == (50, 1) and centers[0, 0] == 1.0 and centers[-1, 0] == 99.0


def test_ab_half_is_an_independent_copy_with_two_input_channels():
    backbone = build_backbone("resnet18", in_channels=1, small_stem=True, width=0.125)
    twin = with_input_channels(backbone, 2)
    assert backbone.conv1.in_channels == 1 and twin.conv1.in_channels == 2
    assert twin.conv1.weight.shape[0] == backbone.conv1.weight.shape[0]
    pairs = list(zip(backbone.parameters(), twin.parameters()))
    assert all(a.data_ptr() != b.data_ptr() for a, b in pairs)  # nothing shared
    assert twin(torch.randn(2, 2, 16, 16)).shape == (2, backbone.feature_dim)
    vit = build_backbone("vit-tiny", in_channels=1, patch_size=4, image_size=16, depth=2)
    assert with_input_channels(vit, 2)(torch.randn(2, 2, 16, 16)).shape == (2, vit.feature_dim)
    with pytest.raises(ConfigError, match="convolutional input layer"):
        with_input_channels(nn.Linear(3, 3), 2)


def test_each_loss_trains_only_its_own_half():
    """F1 (L -> ab) and F2 (ab -> L) are disjoint: each half gets gradient from its own loss only."""
    torch.manual_seed(0)
    method = tiny_split_brain()
    images = colour_batch(4)
    out = method([images])
    assert torch.isclose(out.loss, out.logs["ab_loss"] + out.logs["lightness_loss"])
    method.zero_grad()
    out.loss.backward()
    assert method.backbone.conv1.weight.grad.abs().sum() > 0 and method.ab_backbone.conv1.weight.grad.abs().sum() > 0
    # Zero the ab half's head: the L half's gradient must not change (no path between the halves).
    grads = method.backbone.conv1.weight.grad.clone()
    method.zero_grad()
    nn.init.zeros_(method.lightness_head.refine[-1].weight)
    method([images]).loss.backward()
    assert torch.allclose(method.backbone.conv1.weight.grad, grads, atol=1e-6)
    assert method.ab_backbone.conv1.weight.grad.abs().sum() == 0


def test_encoder_concatenates_halves_that_see_their_own_channels():
    torch.manual_seed(0)
    info = DatasetInfo("colour", 3, 2, 16, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    backbone = build_backbone_for("split-brain", "resnet18", {"small_stem": True, "width": 0.125}, 3)
    method = build_method("split-brain", backbone, {"head_hidden_dim": 16}, DataSpec(info, 8)).eval()
    encoder = method.encoder()
    d = backbone.feature_dim
    assert encoder.feature_dim == 2 * d
    lab = torch.zeros(3, 3, 16, 16)
    lab[:, 0] = torch.linspace(40, 60, 16)
    lab[1, 1], lab[1, 2] = 10.0, -8.0  # image 1: same L as image 0, other ab
    lab[2, 0] += 10.0  # image 2: same ab as image 0, other L
    rgb = lab_to_rgb(lab.double()).float()
    mean, std = torch.tensor(info.mean).view(1, 3, 1, 1), torch.tensor(info.std).view(1, 3, 1, 1)
    features = encoder((rgb - mean) / std)
    assert features.shape == (3, 2 * d)
    assert torch.allclose(features[0, :d], features[1, :d], atol=1e-4)  # F1 sees L only
    assert not torch.allclose(features[0, d:], features[1, d:], atol=1e-4)
    assert torch.allclose(features[0, d:], features[2, d:], atol=1e-4)  # F2 sees ab only
    assert not torch.allclose(features[0, :d], features[2, :d], atol=1e-4)


def test_split_brain_learns_and_colourises():
    torch.manual_seed(0)
    method = tiny_split_brain(rebalance=True)
    images = colour_batch(8)
    optimizer = torch.optim.Adam(method.parameters(), lr=3e-3)
    losses = []
    for step in range(12):
        out = method([images])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        method.on_step_end(out, Progress(step, 12))
        losses.append(out.loss.item())
    assert losses[-1] < 0.7 * losses[0]
    assert method.rebalancing.counts.sum() == 12 * 8 * 4 * 4
    assert out.features.shape == (8, method.encoder().feature_dim)
    coloured = method.colorize(images)  # batch statistics, as in training
    assert coloured.shape == images.shape
    centre = coloured[:2, :, 8, 8]  # a red disc, a blue square
    assert centre[0, 0] > centre[0, 2] and centre[1, 2] > centre[1, 0]


def test_grayscale_data_is_a_clear_error():
    info = DatasetInfo("fashion-mnist", 1, 10, 28, (0.286,), (0.353,))
    backbone = build_backbone_for("split-brain", "resnet18", {"small_stem": True, "width": 0.125}, 1)
    with pytest.raises(ConfigError, match="split-brain needs colour images; fashion-mnist has 1 channel"):
        build_method("split-brain", backbone, {}, DataSpec(info, 10))
    with pytest.raises(ConfigError, match="lightness_bins"):
        build_method("split-brain", backbone, {"lightness_bins": 1})
