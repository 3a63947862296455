"""CPC: patch grid, causal context network (no leak from rows below), the method (InfoNCE: tests/losses/test_cpc.py)."""


import pytest
import torch
from torch import nn

from selfsup.backbones import build_backbone
from selfsup.data import DatasetInfo
from selfsup.errors import ConfigError
from selfsup.heads.cpc_context import CPCContextNetwork, RowCausalConv2d, RowPredictors
from selfsup.methods import DataSpec, build_method
from selfsup.methods.cpc import CPC, PatchGridEncoder, patch_grid_shape


def tiny_backbone() -> nn.Module:
    return build_backbone("resnet18", in_channels=1, small_stem=True, width=0.125)


def tiny_cpc(**overrides) -> CPC:
    args = dict(patch_size=8, patch_stride=4, prediction_steps=3, context_blocks=2)
    args.update(overrides)
    return build_method("cpc", tiny_backbone(), args)


# ----------------------------------------------------------------------------- patch grid
def test_patch_grid_shape_and_content():
    assert patch_grid_shape(28, 28, 8, 4) == (6, 6)
    assert patch_grid_shape(28, 28, 7, 7) == (4, 4)
    assert patch_grid_shape(32, 32, 8, 4) == (7, 7)  # the paper's 7x7 geometry, scaled
    images = torch.randn(2, 1, 28, 28)
    encoder = PatchGridEncoder(tiny_backbone(), patch_size=8, patch_stride=4)
    patches = encoder.patches(images)
    assert patches.shape == (2, 6, 6, 1, 8, 8)
    for r, c in [(0, 0), (2, 5), (5, 1)]:
        assert torch.equal(patches[:, r, c], images[:, :, 4 * r:4 * r + 8, 4 * c:4 * c + 8])


def test_encoder_embeds_every_patch_and_mean_pools():
    torch.manual_seed(0)
    method = tiny_cpc().eval()
    images = torch.randn(3, 1, 28, 28)
    encoder = method.encoder()
    assert isinstance(encoder, PatchGridEncoder) and encoder.backbone is method.backbone
    assert encoder.feature_dim == method.backbone.feature_dim
    with torch.no_grad():
        grid = encoder.encode_patches(images)
        features = encoder(images)
        one_patch = method.backbone(images[:, :, 8:16, 12:20])  # row 2, column 3
    assert grid.shape == (3, 6, 6, encoder.feature_dim)
    assert features.shape == (3, encoder.feature_dim)
    torch.testing.assert_close(features, grid.mean(dim=(1, 2)))
    torch.testing.assert_close(grid[:, 2, 3], one_patch, rtol=1e-4, atol=1e-5)
    # The wrapper owns nothing but the backbone: its state dict is the backbone's.
    assert set(encoder.state_dict()) == {f"backbone.{k}" for k in method.backbone.state_dict()}


def test_patch_flip_mirrors_only_the_chosen_patches():
    torch.manual_seed(0)
    encoder = PatchGridEncoder(tiny_backbone().eval(), patch_size=8, patch_stride=4)
    images = torch.randn(1, 1, 16, 16)  # a 3x3 grid
    flip = torch.zeros(1, 3, 3, dtype=torch.bool)
    flip[0, 1, 2] = True
    with torch.no_grad():
        plain, flipped = encoder.encode_patches(images), encoder.encode_patches(images, flip)
        expected = encoder.backbone(images[:, :, 4:12, 8:16].flip(-1))
    torch.testing.assert_close(flipped[0, 1, 2], expected[0], rtol=1e-4, atol=1e-5)
    keep = ~flip[0]
    torch.testing.assert_close(flipped[0][keep], plain[0][keep])


# ----------------------------------------------------------------------------- causality
def test_row_causal_conv_sees_rows_above_only():
    conv = RowCausalConv2d(2, 3, kernel_size=3)
    x = torch.randn(1, 2, 5, 4, requires_grad=True)
    y = conv(x)
    assert y.shape == (1, 3, 5, 4)
    y[:, :, 2].sum().backward()
    rows_with_grad = (x.grad.abs().sum(dim=(0, 1, 3)) > 0).tolist()
    assert rows_with_grad == [True, True, True, False, False]


@pytest.mark.parametrize("row", [0, 2, 4])
def test_context_at_row_r_ignores_the_rows_below(row):
    torch.manual_seed(0)
    net = CPCContextNetwork(input_dim=6, context_dim=8, num_blocks=3, kernel_size=3)
    z = torch.randn(2, 6, 5, 6)
    changed = z.clone()
    changed[:, row + 1:] = torch.randn_like(changed[:, row + 1:]) * 10
    c, c_changed = net(z), net(changed)
    assert c.shape == (2, 6, 5, 8)
    torch.testing.assert_close(c[:, :row + 1], c_changed[:, :row + 1], rtol=0, atol=0)
    if row + 1 < 6:  # the test can fail: the rows below do change
        assert not torch.allclose(c[:, row + 1:], c_changed[:, row + 1:])


def test_context_network_receptive_field_covers_all_rows_above():
    """Row r depends on every row above it once the blocks are deep enough (not only causal, useful)."""
    torch.manual_seed(0)
    net = CPCContextNetwork(input_dim=4, context_dim=8, num_blocks=3, kernel_size=3)
    z = torch.randn(1, 6, 3, 4, requires_grad=True)
    net(z)[:, 5].sum().backward()
    assert (z.grad.abs().sum(dim=(0, 2, 3)) > 0).all()


def test_whole_image_context_does_not_see_pixels_below_its_patches():
    torch.manual_seed(0)
    method = tiny_cpc().eval()  # eval: BatchNorm uses running statistics (train mode pools the batch)
    images = torch.randn(2, 1, 28, 28)
    row, p, s = 2, 8, 4
    first_unseen_pixel = row * s + p  # patches of rows <= 2 cover pixel rows < 16
    changed = images.clone()
    changed[:, :, first_unseen_pixel:] = torch.randn_like(changed[:, :, first_unseen_pixel:]) * 5
    with torch.no_grad():
        encoder = method.encoder()
        c = method.context(encoder.encode_patches(images))
        c_changed = method.context(encoder.encode_patches(changed))
        predictions = method.predictors(c)
        predictions_changed = method.predictors(c_changed)
    torch.testing.assert_close(c[:, :row + 1], c_changed[:, :row + 1], rtol=0, atol=0)
    assert not torch.allclose(c[:, row + 1:], c_changed[:, row + 1:])
    for k, (a, b) in enumerate(zip(predictions, predictions_changed), start=1):
        torch.testing.assert_close(a[:, :row + 1], b[:, :row + 1], rtol=0, atol=0)


def test_predictors_skip_offsets_past_the_grid():
    predictors = RowPredictors(context_dim=5, embedding_dim=3, max_steps=5)
    context = torch.randn(2, 3, 4, 5)
    outputs = predictors(context)  # 3 rows: only k = 1, 2 have targets
    assert [tuple(o.shape) for o in outputs] == [(2, 2, 4, 3), (2, 1, 4, 3)]
    # Offset k uses its own W_k on the context rows that have a target k rows below.
    torch.testing.assert_close(outputs[1], context[:, :1] @ predictors.weights[1].weight.T)


# ----------------------------------------------------------------------------- the method
def test_method_step_trains_backbone_context_and_predictors():
    torch.manual_seed(0)
    method = tiny_cpc()
    out = method([torch.randn(4, 1, 28, 28)])
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert out.features.shape == (4, method.backbone.feature_dim) and not out.features.requires_grad
    assert set(out.logs) == {"loss_k1", "loss_k2", "loss_k3"}
    out.loss.backward()
    for name, module in (("backbone", method.backbone), ("context", method.context), ("predictors", method.predictors)):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0, name


def test_loss_decreases_on_fixed_images():
    torch.manual_seed(0)
    method = tiny_cpc(patch_size=8, patch_stride=8, prediction_steps=1, context_blocks=1)
    images = torch.randn(8, 1, 16, 16)  # a 2x2 grid
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        out = method([images])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0] - 0.1


def test_random_floor_and_checkpoints_rebuild_the_patch_grid_encoder(tmp_path):
    """Evaluation rebuilds CPC's wrapped encoder (random floor, exported file) from the method spec."""
    from selfsup.evaluation import export_encoder, load_encoder

    info = DatasetInfo("smoke", 1, 3, 28, (0.5,), (0.25,))
    spec = {"name": "cpc", "args": {"patch_size": 7, "patch_stride": 7}, "dataset_info": info.__dict__, "num_samples": 0}
    loaded = load_encoder("random", "resnet18", {"small_stem": True, "width": 0.125}, 1, method=spec)
    assert isinstance(loaded.encoder, PatchGridEncoder) and loaded.encoder.patch_size == 7
    path = export_encoder(loaded, tmp_path / "cpc.pt")
    again = load_encoder(str(path)).encoder.eval()
    images = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(again(images), loaded.encoder.eval()(images))


def test_bad_configs_are_one_line_errors():
    with pytest.raises(ConfigError, match="context_kernel=4"):
        tiny_cpc(context_kernel=4)
    with pytest.raises(ConfigError, match="patch_size=0"):
        tiny_cpc(patch_size=0)
    method = tiny_cpc(patch_size=12, patch_stride=8)
    with pytest.raises(ConfigError, match="at least 2 rows"):
        method([torch.randn(2, 1, 16, 16)])  # (16 - 12) // 8 + 1 = 1 row
    with pytest.raises(ConfigError, match="patch_size=32 does not fit"):
        tiny_cpc(patch_size=32)([torch.randn(2, 1, 28, 28)])


def test_runs_under_the_method_contract_with_the_default_views():
    views = CPC.default_views()
    assert views.num_global_views == 1 and CPC.num_views == 1
    method = build_method("cpc", tiny_backbone(), data=DataSpec(DatasetInfo("s", 1, 2, 28, (0.5,), (0.25,)), 8))
    assert method.encoder()(torch.randn(2, 1, 28, 28)).shape == (2, method.encoder().feature_dim)
