"""iBOT (Zhou et al. 2022) and DINOv2 (Oquab et al. 2023) against their formulas: block masks,
the mask token and the methods' wiring (the masked-patch loss, KoLeo, Sinkhorn-Knopp: tests/losses/)."""


import pytest
import torch
import torch.nn.functional as F

from selfsup.backbones import build_backbone
from selfsup.errors import ConfigError
from selfsup.methods import Progress
from selfsup.methods.dinov2 import DINOv2
from selfsup.methods.ibot import IBOT
from selfsup.schedules import cosine
from selfsup.transforms.masking import block_mask, sample_masks

HEAD = dict(out_dim=24, patch_out_dim=20, head_hidden_dim=16, head_bottleneck_dim=8)


def tiny_vit():
    return build_backbone("vit-tiny", in_channels=1, patch_size=4, image_size=16, depth=2)


def multicrop(batch=4, locals_=2):
    return [torch.randn(batch, 1, 16, 16) for _ in range(2)] + [torch.randn(batch, 1, 8, 8) for _ in range(locals_)]


# --------------------------------------------------------------------------- masks
def test_masks_have_the_requested_ratio_and_fraction_of_images():
    masks = sample_masks(64, (7, 7), ratio_range=(0.1, 0.5), mask_probability=0.5,
                         generator=torch.Generator().manual_seed(0))
    assert masks.shape == (64, 49) and masks.dtype == torch.bool
    counts = masks.sum(1)
    assert int((counts > 0).sum()) == 32  # exactly half of the images
    masked = counts[counts > 0]
    assert masked.min() >= round(0.1 * 49) and masked.max() <= round(0.5 * 49)
    assert masked.float().std() > 0  # the ratio is drawn per image
    fixed = sample_masks(10, (4, 4), ratio_range=(0.25, 0.25), mask_probability=1.0)
    assert torch.equal(fixed.sum(1), torch.full((10,), 4))
    again = sample_masks(64, (7, 7), generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, masks)


@pytest.mark.parametrize("num_masked", [0, 1, 5, 20, 49])
def test_block_mask_masks_exactly_the_requested_count(num_masked):
    import random

    mask = block_mask((7, 7), num_masked, random.Random(num_masked))
    assert mask.shape == (7, 7) and int(mask.sum()) == num_masked


def test_block_masks_are_blocky():
    import random

    rng = random.Random(0)
    neighbours = []
    for _ in range(50):
        mask = block_mask((14, 14), 40, rng).float()
        padded = F.pad(mask, (1, 1, 1, 1))
        around = padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
        neighbours.append(float((around * mask).sum() / mask.sum()))
    # Uniformly random patches at this ratio have ~0.8 masked neighbours on average; blocks ~2.5+.
    assert sum(neighbours) / len(neighbours) > 2.0


def test_mask_token_replaces_exactly_the_masked_patches():
    torch.manual_seed(0)
    vit = tiny_vit()
    x = torch.randn(2, 1, 16, 16)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, [1, 5, 6]] = True
    mask[1, 15] = True
    entering = []
    vit.blocks[0].register_forward_pre_hook(lambda module, args: entering.append(args[0].clone()))
    with torch.no_grad():
        vit.mask_token.fill_(0.0)
        out_a = vit.forward_tokens(x, mask)
        vit.mask_token.fill_(3.0)
        out_b = vit.forward_tokens(x, mask)
    changed = (entering[0] - entering[1]).abs().sum(-1) > 0  # (B, 1 + N) tokens entering the blocks
    assert torch.equal(changed[:, 1:], mask) and not changed[:, 0].any()  # CLS untouched
    assert not torch.allclose(out_a.cls, out_b.cls)


def test_ibot_student_uses_the_mask_token_only_when_masking():
    torch.manual_seed(0)
    views = multicrop()

    def features_with_token(method, value):
        with torch.no_grad():
            method.backbone.mask_token.fill_(value)
        torch.manual_seed(1)  # same masks
        return method(views).features  # the student's [CLS] of the first (masked) global view

    masking = IBOT(tiny_vit(), IBOT.Config(**HEAD, mask_probability=1.0))
    assert not torch.allclose(features_with_token(masking, 0.0), features_with_token(masking, 2.0))
    never = IBOT(tiny_vit(), IBOT.Config(**HEAD, mask_probability=0.0))
    assert torch.equal(features_with_token(never, 0.0), features_with_token(never, 2.0))


# --------------------------------------------------------------------------- the methods
def test_ibot_losses_teacher_and_patch_centre():
    torch.manual_seed(0)
    method = IBOT(tiny_vit(), IBOT.Config(**HEAD))
    assert method.patch_head is None  # shared head, as in iBOT
    views = multicrop()
    out = method(views)
    assert out.loss.item() == pytest.approx((out.logs["cls_loss"] + out.logs["patch_loss"]).item(), rel=1e-6)
    out.loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in method.teacher_backbone.parameters())
    assert method.backbone.mask_token.grad is not None and method.backbone.mask_token.grad.abs().sum() > 0
    # The patch centre follows the mean teacher output over every patch of both global views.
    with torch.no_grad():
        tokens = method.teacher_backbone.forward_tokens(torch.cat(views[:2]))
        patch_mean = method.teacher_head(tokens.patches).mean(dim=(0, 1))
    before = method.patch_centering.center.clone()
    method.on_step_end(out, Progress(step=1, total_steps=10))
    assert torch.allclose(method.patch_centering.center, 0.9 * before + 0.1 * patch_mean, atol=1e-5)


def test_dinov2_separate_heads_sinkhorn_and_koleo():
    torch.manual_seed(0)
    method = DINOv2(tiny_vit(), DINOv2.Config(**HEAD))
    assert method.patch_head is not method.head and method.patch_head.last_layer.direction.shape[0] == 20
    assert method.config.centering == "sinkhorn" and method.config.koleo_weight == 0.1
    out = method(multicrop())
    assert set(out.logs) >= {"cls_loss", "patch_loss", "koleo_loss"}
    total = out.logs["cls_loss"] + out.logs["patch_loss"] + out.logs["koleo_loss"]
    assert out.loss.item() == pytest.approx(total.item(), rel=1e-6)
    assert out.extras == {}  # Sinkhorn-Knopp keeps no centre
    out.loss.backward()
    assert method.patch_head.mlp[0].weight.grad is not None
    assert all(p.grad is None for p in method.teacher_patch_head.parameters())
    # Both heads' prototypes are frozen in the first epoch; both teachers follow by EMA.
    method.on_before_optimizer_step(Progress(step=1, total_steps=10, epoch=0))
    assert method.head.last_layer.direction.grad is None and method.patch_head.last_layer.direction.grad is None
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.grad is not None], lr=0.5)
    before = [p.clone() for p in method.teacher_patch_head.parameters()]
    optimizer.step()
    method.on_step_end(out, Progress(step=1, total_steps=10))
    m = cosine(0.992, 1.0, 0.1)
    for old, new, student in zip(before, method.teacher_patch_head.parameters(), method.patch_head.parameters()):
        assert torch.allclose(new, m * old + (1 - m) * student, atol=1e-6)


def test_ibot_needs_a_vit_and_valid_options():
    with pytest.raises(ConfigError, match="needs a ViT backbone"):
        IBOT(build_backbone("resnet18", in_channels=1, small_stem=True, width=0.125), IBOT.Config(**HEAD))
    with pytest.raises(ConfigError, match="unknown centering 'mean'"):
        IBOT(tiny_vit(), IBOT.Config(**HEAD, centering="mean"))
    with pytest.raises(ConfigError, match="mask_ratio_min=0.6"):
        IBOT(tiny_vit(), IBOT.Config(**HEAD, mask_ratio_min=0.6, mask_ratio_max=0.5))
