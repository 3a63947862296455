"""One MLP builder for the heads: same modules, same keys, same initial weights as before.

The ``old_*`` functions are the hand-written stacks the heads had before issue 17 gave them
:func:`selfsup.heads.mlp.mlp_layers` (copied verbatim): under one seed the new heads must have
exactly their state-dict keys (old checkpoints load) and their initial values (same random draws).
"""

from __future__ import annotations

from typing import List

import pytest
import torch
from torch import nn

from selfsup.heads import ConvDecoder, DINOHead, PatchSetClassifier, ProjectionHead
from selfsup.heads.mlp import hidden_block, mlp_layers


def old_projection_layers(input_dim, hidden_dim, output_dim, num_layers, batch_norm, last_batch_norm):
    layers: List[nn.Module] = []
    dim = input_dim
    for _ in range(num_layers - 1):
        layers.append(nn.Linear(dim, hidden_dim, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.ReLU(inplace=True))
        dim = hidden_dim
    layers.append(nn.Linear(dim, output_dim, bias=not last_batch_norm))
    if last_batch_norm:
        layers.append(nn.BatchNorm1d(output_dim, affine=False))
    return nn.Sequential(*layers)


def old_dino_mlp(input_dim, hidden_dim, bottleneck_dim, num_layers, batch_norm):
    layers: List[nn.Module] = []
    dim = input_dim
    for _ in range(num_layers - 1):
        layers.append(nn.Linear(dim, hidden_dim))
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.GELU())
        dim = hidden_dim
    layers.append(nn.Linear(dim, bottleneck_dim))
    return nn.Sequential(*layers)


def assert_same_state(new: nn.Module, old: nn.Module) -> None:
    new_state, old_state = new.state_dict(), old.state_dict()
    assert list(new_state) == list(old_state)
    for key in old_state:
        assert torch.equal(new_state[key], old_state[key]), key
    assert [type(m) for m in new.modules()][1:] == [type(m) for m in old.modules()][1:]


@pytest.mark.parametrize("num_layers,batch_norm,last_batch_norm", [(1, True, False), (2, True, False), (3, True, True),
                                                                   (2, False, False), (3, False, True)])
def test_projection_head_is_the_old_stack(num_layers, batch_norm, last_batch_norm):
    torch.manual_seed(0)
    head = ProjectionHead(12, 20, 8, num_layers=num_layers, batch_norm=batch_norm, last_batch_norm=last_batch_norm)
    torch.manual_seed(0)
    old = old_projection_layers(12, 20, 8, num_layers, batch_norm, last_batch_norm)
    assert_same_state(head.layers, old)
    assert list(head.state_dict()) == [f"layers.{k}" for k in old.state_dict()]


@pytest.mark.parametrize("num_layers,batch_norm", [(1, False), (3, False), (3, True)])
def test_dino_head_mlp_is_the_old_stack(num_layers, batch_norm):
    torch.manual_seed(0)
    head = DINOHead(12, output_dim=16, hidden_dim=20, bottleneck_dim=6, num_layers=num_layers, batch_norm=batch_norm)
    torch.manual_seed(0)
    old = old_dino_mlp(12, 20, 6, num_layers, batch_norm)
    for module in old.modules():
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
    assert_same_state(head.mlp, old)
    assert sorted(head.state_dict()) == sorted([f"mlp.{k}" for k in old.state_dict()] + ["last_layer.direction"])


def test_patch_classifier_and_decoder_blocks_are_the_old_ones():
    torch.manual_seed(0)
    classifier = PatchSetClassifier(feature_dim=10, num_patches=3, patch_dim=7, hidden_dim=9, num_classes=5)
    torch.manual_seed(0)
    old_per_patch = nn.Sequential(nn.Linear(10, 7, bias=False), nn.BatchNorm1d(7), nn.ReLU(inplace=True))
    old_fused = old_projection_layers(21, 9, 5, 2, True, False)
    assert_same_state(classifier.per_patch, old_per_patch)
    assert_same_state(classifier.fused.layers, old_fused)

    torch.manual_seed(0)
    decoder = ConvDecoder(input_dim=10, out_channels=3, image_size=16, width=8)
    torch.manual_seed(0)
    side = decoder.start * decoder.start * 8
    old_project = nn.Sequential(nn.Linear(10, side, bias=False), nn.BatchNorm1d(side), nn.ReLU(inplace=True))
    assert_same_state(decoder.project, old_project)


def test_builder_shapes_and_refusals():
    layers = mlp_layers(4, 8, 2, num_layers=3, batch_norm=False, activation=nn.GELU)
    assert [type(m) for m in layers] == [nn.Linear, nn.GELU, nn.Linear, nn.GELU, nn.Linear]
    assert nn.Sequential(*layers)(torch.randn(5, 4)).shape == (5, 2)
    assert [type(m) for m in hidden_block(4, 8)] == [nn.Linear, nn.BatchNorm1d, nn.ReLU]
    assert hidden_block(4, 8)[0].bias is None and hidden_block(4, 8, batch_norm=False)[0].bias is not None
    with pytest.raises(ValueError, match="num_layers must be >= 1, got 0"):
        mlp_layers(4, 8, 2, num_layers=0)
