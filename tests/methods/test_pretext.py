"""Pretext tasks as methods: rotation, relative location, jigsaw and context encoder, each checked
against a naive reference or a property the paper relies on (their targets: tests/transforms/,
their heads: tests/heads/, the reconstruction loss: tests/losses/)."""

import pytest
import torch
from torch import nn

from selfsup.backbones import build_backbone
from selfsup.data import DatasetInfo
from selfsup.errors import ConfigError
from selfsup.methods import DataSpec, build_method
from selfsup.methods.context_encoder import ContextEncoder
from selfsup.methods.jigsaw import Jigsaw
from selfsup.methods.relative_location import RelativeLocation, whole_image_features
from selfsup.methods.rotation import Rotation
from selfsup.transforms.pretext import greedy_permutation_set


# Tiny tensors: a second intra-op thread only adds synchronisation (conftest.single_thread).
pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_backbone(in_channels: int = 1) -> nn.Module:
    return build_backbone("resnet18", in_channels=in_channels, small_stem=True, width=0.125)


def info(channels: int = 1, size: int = 16) -> DataSpec:
    return DataSpec(DatasetInfo("toy", channels, 3, size, (0.5,) * channels, (0.25,) * channels), num_samples=8)


# --------------------------------------------------------------------------- rotation
def test_rotation_loss_is_cross_entropy_over_the_four_copies():
    torch.manual_seed(0)
    method = Rotation(tiny_backbone(), Rotation.Config(classifier_hidden_dim=16)).eval()
    views = torch.randn(3, 1, 16, 16)
    loss = method([views]).loss
    expected = []
    for k in range(4):  # naive: one rotation at a time, one image at a time
        for i in range(3):
            logits = method.classifier(method.backbone(torch.rot90(views[i:i + 1], k, dims=(2, 3))))
            expected.append(-torch.log_softmax(logits, dim=1)[0, k])
    assert torch.allclose(loss, torch.stack(expected).mean(), atol=1e-5)


# --------------------------------------------------------------------------- relative location
def test_relative_location_guards_and_grid_defaults():
    with pytest.raises(ConfigError, match="unknown chromatic_guard 'blur'; valid choices: drop, project, none"):
        RelativeLocation.Config(chromatic_guard="blur")
    # The paper's 96:48:7 ratio on a 398 px canvas is the paper's grid; a 56 px canvas still fits.
    assert RelativeLocation.Config().grid(398) == (96, 48, 7)
    patch, gap, jitter = RelativeLocation.Config().grid(56)
    assert 3 * patch + 2 * gap + 2 * jitter <= 56 and patch >= 12


# --------------------------------------------------------------------------- jigsaw
def test_jigsaw_keeps_its_permutation_set_in_the_state_dict():
    method = Jigsaw(tiny_backbone(), Jigsaw.Config(num_permutations=10, tile_dim=8, classifier_hidden_dim=16))
    assert torch.equal(method.state_dict()["permutations"], greedy_permutation_set(10, 9, seed=0)[0])
    other = Jigsaw(tiny_backbone(), Jigsaw.Config(num_permutations=10, permutation_seed=5, tile_dim=8,
                                                  classifier_hidden_dim=16))
    assert not torch.equal(other.permutations, method.permutations)
    other.load_state_dict(method.state_dict())
    assert torch.equal(other.permutations, method.permutations)


# --------------------------------------------------------------------------- context encoder
def test_context_encoder_fills_the_hole_and_scores_only_the_region():
    torch.manual_seed(0)
    method = ContextEncoder(tiny_backbone(), ContextEncoder.Config(decoder_width=32, overlap_fraction=1 / 16),
                            info(size=16))
    seen, predicted = {}, {}
    method.backbone.register_forward_hook(lambda m, args, out: seen.update(x=args[0]))

    def keep_grad(module, args, out):
        out.retain_grad()
        predicted.update(y=out)
    method.decoder.register_forward_hook(keep_grad)
    views = torch.randn(4, 1, 16, 16) + 3
    out = method([views])
    region, hole = method.masks(views)
    assert hole.sum() == 4 * 6 * 6 and region.sum() == 4 * 8 * 8  # centre 8×8, hole shrunk by 1 px
    assert (seen["x"][hole.expand_as(views)] == 0).all()  # the hole is filled with the mean (0)
    assert torch.equal(seen["x"][~hole.expand_as(views)], views[~hole.expand_as(views)])
    out.loss.backward()
    grad = predicted["y"].grad
    assert grad[~region.expand_as(grad)].abs().sum() == 0 and grad[hole.expand_as(grad)].abs().sum() > 0
    # d/dp of Σ w (p - x)² / Σ w: the overlap band weighs 10×, the hole 1×.
    band, hole = (region & ~hole).expand_as(grad), hole.expand_as(grad)
    diff, norm = (predicted["y"] - views).detach(), float(hole.sum() + 10 * band.sum())
    assert torch.allclose(grad[band], 2 * 10 * diff[band] / norm, rtol=1e-4, atol=1e-7)
    assert torch.allclose(grad[hole], 2 * diff[hole] / norm, rtol=1e-4, atol=1e-7)


def test_context_encoder_random_mask_and_bad_mask_name():
    torch.manual_seed(0)
    method = ContextEncoder(tiny_backbone(), ContextEncoder.Config(mask="random", decoder_width=32), info(size=16))
    region, hole = method.masks(torch.zeros(8, 1, 16, 16))
    assert (region.float().mean(dim=(1, 2, 3)) <= 0.25).all() and not torch.equal(region[0], region[1])
    with pytest.raises(ConfigError, match="unknown mask 'ring'; valid choices: center, random"):
        ContextEncoder.Config(mask="ring")


def test_adversarial_term_trains_the_generator_but_never_the_discriminator():
    torch.manual_seed(0)
    method = ContextEncoder(tiny_backbone(), ContextEncoder.Config(decoder_width=32, adversarial_weight=0.001,
                                                                   discriminator_width=8), info(size=16))
    assert method.discriminator is not None
    images = torch.randn(4, 1, 16, 16)
    region, _ = method.masks(images)
    disc_params = list(method.discriminator.parameters())

    prediction = torch.randn(4, 1, 16, 16, requires_grad=True)
    adv_loss, disc_loss = method.adversarial_losses(images, prediction, region)
    adv_loss.backward()
    assert all(p.grad is None for p in disc_params)  # generator term: no gradient into D
    assert prediction.grad[region.expand_as(prediction)].abs().sum() > 0
    assert prediction.grad[~region.expand_as(prediction)].abs().sum() == 0  # only the pasted region is fake

    prediction.grad = None
    disc_loss.backward()
    assert prediction.grad is None  # D learns from detached fakes: no gradient into the generator
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in disc_params[:1])

    # The joint loss trains all three networks; with weight 0 there is no discriminator at all.
    method.zero_grad()
    out = method([images])
    out.loss.backward()
    assert {"rec_loss", "adv_loss", "disc_loss"} <= set(out.logs)
    for module in (method.backbone, method.decoder, method.discriminator):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    assert ContextEncoder(tiny_backbone(), ContextEncoder.Config(decoder_width=32), info(size=16)).discriminator is None


# --------------------------------------------------------------------------- all four methods
def small_config(name):
    return {
        "rotation": {"classifier_hidden_dim": 32},
        "relative-location": {"patch_dim": 32, "classifier_hidden_dim": 32, "canvas_size": 24,
                              "patch_size": 6, "gap": 2, "jitter": 1},
        "jigsaw": {"num_permutations": 10, "tile_dim": 16, "classifier_hidden_dim": 32, "canvas_size": 24},
        "context-encoder": {"decoder_width": 32},
    }[name]


NAMES = ["rotation", "relative-location", "jigsaw", "context-encoder"]


@pytest.mark.parametrize("name", NAMES)
def test_loss_falls_on_a_fixed_batch(name):
    torch.manual_seed(0)
    method = build_method(name, tiny_backbone(3), small_config(name), info(channels=3, size=16))
    views = [torch.randn(8, 3, 16, 16)]
    optimizer = torch.optim.Adam(method.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        torch.manual_seed(1)  # the same puzzles every step: the task on a fixed batch can be memorised
        out = method(views)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("name", NAMES)
def test_encoder_embeds_whole_images_for_evaluation(name):
    method = build_method(name, tiny_backbone(), small_config(name), info())
    encoder = method.encoder()
    # The patch tasks' networks are evaluated on an image's grid of tiles (tests below); "whole"
    # gives the backbone itself.
    assert (encoder.backbone if name in ("jigsaw", "relative-location") else encoder) is method.backbone
    features = encoder(torch.randn(5, 1, 28, 28))
    assert features.shape == (5, encoder.feature_dim) and features.dtype == torch.float32
    assert type(method).default_views().num_global_views == method.num_views == 1


def test_probe_features_in_eval_mode_leave_batchnorm_statistics_and_modes_alone():
    backbone = tiny_backbone()
    backbone.train()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    features = whole_image_features(backbone, torch.randn(4, 1, 16, 16) * 5 + 2, update_running_stats=False)
    assert features.shape == (4, backbone.feature_dim) and not features.requires_grad
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    assert all(m.training for m in backbone.modules())


@pytest.mark.parametrize("name", ["relative-location", "jigsaw"])
def test_patch_methods_take_batchnorm_statistics_from_whole_images(name):
    torch.manual_seed(0)
    views = [torch.randn(6, 1, 16, 16) * 3 + 1]
    reference = tiny_backbone()
    expected = {k: v.clone() for k, v in reference.state_dict().items()}
    with torch.no_grad():
        reference.train()(views[0])  # one train-mode pass over the whole views, nothing else
    for whole_images in (True, False):
        whole_encoder = {"encoder": "whole"}  # the default encoders read grids of tiles
        method = build_method(name, copy_of(expected), {**small_config(name), **whole_encoder,
                                                        "bn_stats_from_whole_images": whole_images}, info())
        method.train()
        out = method(views)
        out.loss.backward()  # gradients still flow through the patch pass
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.backbone.parameters())
        same = all(torch.allclose(v, reference.state_dict()[k]) for k, v in method.backbone.state_dict().items()
                   if "running" in k)
        assert same == whole_images  # off: the running statistics describe patches instead


def copy_of(state):
    backbone = tiny_backbone()
    backbone.load_state_dict(state)
    return backbone


@pytest.mark.parametrize("data", ["fashion-mnist", "cifar10", "imagenet"])
@pytest.mark.parametrize("name", NAMES)
def test_recipes_load_with_valid_method_and_view_settings(name, data):
    from pathlib import Path

    from selfsup.config import make_config
    from selfsup.engine.trainer import resolve_views
    from selfsup.methods import METHODS

    recipe = Path(__file__).resolve().parents[2] / "src" / "selfsup" / "configs" / data / f"{name}.yaml"
    config = make_config(files=[recipe])
    assert config.method == name
    METHODS.get(name).make_config(config.method_args)  # unknown keys or bad values raise ConfigError
    assert resolve_views(config).num_global_views == 1


def test_jigsaw_tile_encoder_averages_the_centred_normalised_tiles():
    from selfsup.transforms.pretext import centred_tiles, normalize_tiles

    method = build_method("jigsaw", tiny_backbone(), small_config("jigsaw"), info()).eval()
    images = torch.randn(3, 1, 28, 28)
    got = method.encoder()(images)
    # Written out: canvas 24 → cells of 8 px, tiles of 8·64//75 = 6 px centred in their cell (offset 1).
    canvas = torch.nn.functional.interpolate(images, size=(24, 24), mode="bilinear", align_corners=False)
    tiles = torch.stack([canvas[:, :, 8 * r + 1:8 * r + 7, 8 * c + 1:8 * c + 7] for r in range(3) for c in range(3)], 1)
    torch.testing.assert_close(centred_tiles(canvas, 3, 6), tiles)
    expected = method.backbone(normalize_tiles(tiles).flatten(0, 1)).view(3, 9, -1).mean(1)
    torch.testing.assert_close(got, expected)
    assert got.shape == (3, method.encoder().feature_dim)
    # The encoder's state is the backbone's, so evaluation can rebuild it around any backbone.
    assert set(method.encoder().state_dict()) == {f"backbone.{k}" for k in method.backbone.state_dict()}
    whole = build_method("jigsaw", tiny_backbone(), {**small_config("jigsaw"), "encoder": "whole"}, info())
    assert whole.encoder() is whole.backbone
    with pytest.raises(ConfigError, match="unknown jigsaw encoder 'patches'; valid: tiles, whole"):
        build_method("jigsaw", tiny_backbone(), {**small_config("jigsaw"), "encoder": "patches"}, info())


def test_relative_location_patch_encoder_averages_the_grid_patches():
    method = build_method("relative-location", tiny_backbone(), {**small_config("relative-location"), "encoder": "patches"},
                          info()).eval()
    images = torch.randn(2, 1, 28, 28)
    # Canvas 24, cells of 8 px holding the 6 px patches (gap 2) centred: patch origins 1, 9, 17.
    canvas = torch.nn.functional.interpolate(images, size=(24, 24), mode="bilinear", align_corners=False)
    patches = torch.stack([canvas[:, :, 8 * r + 1:8 * r + 7, 8 * c + 1:8 * c + 7] for r in range(3) for c in range(3)], 1)
    expected = method.backbone(patches.flatten(0, 1)).view(2, 9, -1).mean(1)  # no per-patch normalisation
    torch.testing.assert_close(method.encoder()(images), expected)
    with pytest.raises(ConfigError, match="unknown relative-location encoder 'tiles'; valid: patches, whole"):
        build_method("relative-location", tiny_backbone(), {**small_config("relative-location"), "encoder": "tiles"}, info())


def test_jigsaw_tile_encoder_takes_batchnorm_statistics_from_tiles():
    torch.manual_seed(0)
    images = [torch.randn(4, 1, 28, 28) * 3 + 1]
    method = build_method("jigsaw", tiny_backbone(), small_config("jigsaw"), info()).train()
    bn = method.backbone.bn1
    before = bn.running_mean.clone()
    with torch.no_grad():
        from_whole = (1 - bn.momentum) * before + bn.momentum * method.backbone.conv1(images[0]).mean(dim=(0, 2, 3))
        method(images)
    # The tiles moved the statistics (evaluation feeds tiles), not a whole-image pass.
    assert not torch.equal(bn.running_mean, before)
    assert not torch.allclose(bn.running_mean, from_whole, atol=1e-3)


@pytest.mark.parametrize("name, args", [("jigsaw", {"encoder": "tiles"}), ("relative-location", {"encoder": "patches"})])
def test_grid_encoders_are_rebuilt_for_the_floor_and_from_exported_files(tmp_path, name, args):
    from selfsup.evaluation import export_encoder, load_encoder
    from selfsup.methods.relative_location import TileGridEncoder

    data = info()
    spec = {"name": name, "args": {**small_config(name), **args}, "dataset_info": data.info.__dict__, "num_samples": 0}
    loaded = load_encoder("random", "resnet18", {"small_stem": True, "width": 0.125}, 1, method=spec)
    assert isinstance(loaded.encoder, TileGridEncoder)
    again = load_encoder(str(export_encoder(loaded, tmp_path / "enc.pt"))).encoder.eval()
    images = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(again(images), loaded.encoder.eval()(images))
    # The floor's cache name follows the method's args: a whole-image floor is another encoder.
    whole = {**spec, "args": {**spec["args"], "encoder": "whole"}}
    assert load_encoder("random", "resnet18", {"small_stem": True, "width": 0.125}, 1, method=whole).source != loaded.source
