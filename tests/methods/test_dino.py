"""DINO (Caron et al. 2021) against its formulas: EMA teacher, frozen prototypes layer, head and
views (the multi-crop cross-entropy, centering and sharpening schedule: tests/losses/test_dino.py)."""


import pytest
import torch
import torch.nn.functional as F

from selfsup.backbones import build_backbone
from selfsup.data import DatasetInfo
from selfsup.errors import ConfigError
from selfsup.heads.dino import DINOHead
from selfsup.config import RECIPES, make_config
from selfsup.engine import resolve_views
from selfsup.methods import METHODS, Progress, build_method
from selfsup.methods.dino import DINO, fit_to_patches
from selfsup.schedules import cosine
from selfsup.transforms import BatchedMultiViewTransform, ViewConfig


def tiny_resnet():
    return build_backbone("resnet18", in_channels=1, small_stem=True, width=0.125)


def small_dino(**overrides) -> DINO:
    args = dict(out_dim=32, head_hidden_dim=16, head_bottleneck_dim=8)
    args.update(overrides)
    return DINO(tiny_resnet(), DINO.Config(**args))


def multicrop(batch=4, locals_=2, size=16, local=8):
    return [torch.randn(batch, 1, size, size) for _ in range(2)] + [torch.randn(batch, 1, local, local)
                                                                    for _ in range(locals_)]


def test_dino_head_shapes_and_normalised_prototypes():
    head = DINOHead(12, output_dim=20, hidden_dim=16, bottleneck_dim=8)
    assert head(torch.randn(5, 12)).shape == (5, 20)
    assert head(torch.randn(2, 7, 12)).shape == (2, 7, 20)  # patch tokens
    assert torch.allclose(head.last_layer.weight().norm(dim=1), torch.ones(20), atol=1e-6)
    assert head(torch.randn(5, 12)).abs().max() <= 1.0 + 1e-6  # cosine similarities
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [16, 16, 8]
    z = F.normalize(head.mlp(torch.randn(3, 12)), dim=-1)
    assert torch.allclose(head.last_layer(z), z @ head.last_layer.weight().t(), atol=1e-6)
    free = DINOHead(12, output_dim=20, hidden_dim=16, bottleneck_dim=8, norm_last_layer=False)
    assert free.last_layer.norm is not None and free.last_layer.norm.requires_grad
    assert head.last_layer.norm is None


def test_teacher_receives_no_gradient_and_follows_the_ema_formula():
    torch.manual_seed(0)
    method = small_dino()
    views = multicrop()
    out = method(views)
    out.loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in method.teacher_backbone.parameters())
    assert all(p.grad is None for p in method.teacher_head.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.backbone.parameters())
    teacher_before = [p.clone() for p in method.teacher_head.parameters()]
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    progress = Progress(step=3, total_steps=10, epoch=1, total_epochs=2)
    method.on_before_optimizer_step(progress)
    optimizer.step()
    center_before = method.centering.center.clone()
    method.on_step_end(out, progress)
    m = cosine(0.996, 1.0, 0.3)
    for old, new, student in zip(teacher_before, method.teacher_head.parameters(), method.head.parameters()):
        assert torch.allclose(new, m * old + (1 - m) * student, atol=1e-6)
    # The teacher keeps the BatchNorm statistics of its own (global-view) batches.
    assert not torch.equal(method.teacher_backbone.bn1.running_mean, method.backbone.bn1.running_mean)
    batch_mean = out.extras["teacher_logits"].mean(0)
    assert torch.allclose(method.centering.center, 0.9 * center_before + 0.1 * batch_mean, atol=1e-6)
    # τ_t for the next step: 0.3 of 2 epochs = 0.6 epochs into the 30-epoch warm-up.
    assert method.teacher_temperature.item() == pytest.approx(0.04 + 0.03 * 0.6 / 30)


def test_teacher_sees_only_global_views():
    torch.manual_seed(0)
    method = small_dino()
    seen = []
    method.teacher_backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    method(multicrop(batch=3, locals_=4))
    assert seen == [torch.Size([6, 1, 16, 16])]


def test_last_layer_gets_no_update_in_the_first_epoch():
    torch.manual_seed(0)
    method = small_dino(freeze_last_layer_epochs=1)
    optimizer = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=0.01, weight_decay=0.04)

    def step(epoch):
        out = method(multicrop())
        optimizer.zero_grad()
        out.loss.backward()
        method.on_before_optimizer_step(Progress(step=epoch, total_steps=4, epoch=epoch, total_epochs=2))
        optimizer.step()

    last = method.head.last_layer.direction.clone()
    first_mlp = method.head.mlp[0].weight.clone()
    step(epoch=0)
    assert torch.equal(method.head.last_layer.direction, last)  # not even weight decay
    assert not torch.equal(method.head.mlp[0].weight, first_mlp)
    step(epoch=1)
    assert not torch.equal(method.head.last_layer.direction, last)


def test_resnet_tiny_takes_dino_local_crops_of_fashion_mnist():
    info = DatasetInfo("fm", 1, 10, 28, (0.5,), (0.25,))
    views = BatchedMultiViewTransform(ViewConfig.dino(), info)(
        torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8), generator=torch.Generator().manual_seed(0))
    assert [v.shape[-1] for v in views] == [28, 28] + [12] * 8  # round(28 * 96 / 224) = 12
    backbone = build_backbone("resnet18-tiny", in_channels=1)
    method = build_method("dino", backbone, {"out_dim": 64, "head_hidden_dim": 32, "head_bottleneck_dim": 16})
    out = method(views)
    assert torch.isfinite(out.loss) and out.features.shape == (4, 128)


def test_encoder_is_the_teacher_unless_asked_and_teacher_modes():
    method = small_dino()
    assert method.encoder() is method.teacher_backbone
    student_only = small_dino(evaluate_teacher=False)
    assert student_only.encoder() is student_only.backbone
    method.train()
    # BatchNorm keeps batch statistics in the teacher (DINO's ResNet runs); nothing else trains.
    assert method.teacher_backbone.bn1.training and not method.teacher_head.training
    vit = DINO(build_backbone("vit-tiny", in_channels=1, patch_size=4, image_size=16, depth=1,
                              drop_path_rate=0.1), DINO.Config(out_dim=16, head_hidden_dim=8, head_bottleneck_dim=4))
    vit.train()
    assert vit.backbone.training and not any(m.training for m in vit.teacher_backbone.modules())


def test_vit_views_are_fitted_to_the_patch_grid():
    images = torch.randn(2, 1, 7, 7)
    vit = build_backbone("vit-tiny", in_channels=1, patch_size=4, image_size=16, depth=1)
    assert fit_to_patches(images, vit).shape == (2, 1, 8, 8)
    assert fit_to_patches(torch.randn(2, 1, 12, 12), vit).shape == (2, 1, 12, 12)
    assert fit_to_patches(images, tiny_resnet()) is images


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*/dino*.yaml")) + sorted(RECIPES.glob("*/ibot.yaml")),
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipes_are_valid(path):
    config = make_config(files=[path])
    METHODS.get(config.method).make_config(config.method_args)
    resolve_views(config).validate()


def test_bad_dino_options_raise_one_line_errors():
    with pytest.raises(ConfigError, match="student_temp=0"):
        small_dino(student_temp=0)
    with pytest.raises(ConfigError, match="teacher_momentum=1.1"):
        small_dino(teacher_momentum=1.1, final_teacher_momentum=1.0)
    with pytest.raises(ConfigError, match="unknown option"):
        build_method("dino", tiny_resnet(), {"temperature": 0.1})
