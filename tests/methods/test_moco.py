"""MoCo v1/v2/v3: momentum encoders, queue timing, shuffling BN (the losses: tests/losses/test_infonce.py)."""

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from selfsup.backbones import build_backbone
from selfsup.errors import ConfigError
from selfsup.losses.infonce import in_batch_infonce
from selfsup.methods import METHODS, Progress, build_method
from selfsup.methods.moco import MoCo, MoCoV2, distributed_shuffled_forward, grouped_shuffled_forward
from selfsup.methods.moco3 import MoCoV3


def tiny_resnet() -> nn.Module:
    return build_backbone("resnet18", in_channels=1, small_stem=True, width=0.125)


def tiny_vit() -> nn.Module:
    return build_backbone("vit-tiny", in_channels=1, patch_size=4, image_size=16, depth=2)


def small_moco(**overrides) -> MoCo:
    torch.manual_seed(0)
    config = dict(queue_size=32, projection_dim=16, shuffle_groups=2)
    config.update(overrides)
    return MoCo(tiny_resnet(), MoCo.Config(**config))


def small_moco3(backbone=None, **overrides) -> MoCoV3:
    torch.manual_seed(0)
    config = dict(projection_hidden_dim=32, projection_dim=16, predictor_hidden_dim=32)
    config.update(overrides)
    return MoCoV3(backbone if backbone is not None else tiny_resnet(), MoCoV3.Config(**config))


def views(batch: int = 8, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 1, 16, 16, generator=g) for _ in range(2)]


# --------------------------------------------------------------------------- MoCo v1 / v2

def test_moco_enqueues_its_keys_in_on_step_end_not_in_forward():
    method = small_moco()
    before = method.queue.keys().clone()
    out = method(views())
    assert torch.equal(method.queue.keys(), before) and int(method.queue.ptr) == 0
    keys = out.extras["keys"]
    assert keys.shape == (8, 16) and not keys.requires_grad
    torch.testing.assert_close(keys.norm(dim=1), torch.ones(8))
    method.on_step_end(out, Progress(1, 10))
    assert torch.equal(method.queue.keys()[-8:], keys)  # newest last
    assert torch.equal(method.queue.keys()[:-8], before[8:])  # the 8 oldest were dropped
    assert int(method.queue.ptr) == 8


def test_moco_uses_the_queue_as_negatives():
    method = small_moco().eval()
    x = views()
    first = method(x).loss.item()
    method.queue.stored.copy_(nn.functional.normalize(torch.randn_like(method.queue.stored), dim=1))
    assert method(x).loss.item() != pytest.approx(first)


def test_no_gradient_reaches_the_key_encoder():
    method = small_moco()
    out = method(views())
    out.loss.backward()
    assert all(not p.requires_grad and p.grad is None for p in method.key_encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.backbone.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.projector.parameters())
    trainable = {id(p) for p in method.parameters() if p.requires_grad}
    assert not trainable & {id(p) for p in method.key_encoder.parameters()}


def test_momentum_update_follows_eq_2():
    method = small_moco(momentum=0.9)
    out = method(views())
    with torch.no_grad():  # stand-in for an optimizer step on the query encoder
        for p in method.query_encoder().parameters():
            p.add_(torch.randn_like(p))
    query = [p.detach().clone() for p in method.query_encoder().parameters()]
    key = [p.detach().clone() for p in method.key_encoder.parameters()]
    method.on_step_end(out, Progress(1, 10))
    for p_k, old_k, p_q in zip(method.key_encoder.parameters(), key, query):
        torch.testing.assert_close(p_k, 0.9 * old_k + 0.1 * p_q)


def test_key_encoder_starts_as_a_copy_of_the_query_encoder():
    method = small_moco()
    for p_k, p_q in zip(method.key_encoder.parameters(), method.query_encoder().parameters()):
        assert torch.equal(p_k, p_q)


def test_shuffled_bn_keeps_the_original_order():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten())
    x = torch.randn(12, 1, 6, 6)
    # In eval mode BN is per-image: shuffling and grouping must change nothing.
    encoder.eval()
    torch.testing.assert_close(grouped_shuffled_forward(encoder, x, 3), encoder(x))
    # In train mode the only difference from a plain pass is which images share BN statistics.
    encoder.train()
    got = grouped_shuffled_forward(encoder, x, 3, generator=torch.Generator().manual_seed(5))
    order = torch.randperm(12, generator=torch.Generator().manual_seed(5))
    expected = torch.empty_like(got)
    for chunk in order.tensor_split(3):
        expected[chunk] = encoder(x[chunk])
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, encoder(x), atol=1e-4)


def test_shuffled_bn_keeps_at_least_two_images_per_group():
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.BatchNorm1d(3)).train()
    out = grouped_shuffled_forward(encoder, torch.randn(4, 1, 2, 2), groups=8)  # would fail with 1 per group
    assert out.shape == (4, 3)


def test_moco_keys_come_from_the_key_encoder():
    method = small_moco().eval()
    x = views()[1]
    expected = nn.functional.normalize(method.key_encoder(x), dim=1)
    torch.testing.assert_close(method.encode_keys(x), expected)


def test_moco_state_dict_keeps_queue_and_key_encoder():
    method = small_moco()
    out = method(views())
    with torch.no_grad():
        for p in method.query_encoder().parameters():
            p.add_(0.1)
    method.on_step_end(out, Progress(1, 10))
    torch.manual_seed(123)
    restored = MoCo(tiny_resnet(), method.config)
    restored.load_state_dict(method.state_dict())
    assert torch.equal(restored.queue.keys(), method.queue.keys()) and int(restored.queue.ptr) == 8
    for a, b in zip(restored.key_encoder.state_dict().values(), method.key_encoder.state_dict().values()):
        assert torch.equal(a, b)


def test_moco_config_errors():
    with pytest.raises(ConfigError, match="queue_size=0"):
        build_method("moco", tiny_resnet(), {"queue_size": 0})
    with pytest.raises(ConfigError, match="temperature=-1"):
        build_method("moco2", tiny_resnet(), {"temperature": -1})


def test_moco2_is_moco_with_an_mlp_head_warmer_temperature_and_blur():
    assert METHODS.get("moco2") is MoCoV2 and issubclass(MoCoV2, MoCo)
    method = build_method("moco2", tiny_resnet())
    linears = [m for m in method.projector.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 2 and linears[0].out_features == 2048 and linears[-1].out_features == 128
    assert method.criterion.temperature == 0.2
    assert MoCoV2.default_views().blur_prob == (0.5, 0.5) and MoCo.default_views().blur_prob == (0.0, 0.0)
    v1 = build_method("moco", tiny_resnet())
    assert [type(m) for m in v1.projector.layers] == [nn.Linear] and v1.criterion.temperature == 0.07


def _ddp_shuffle_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(rank)  # the permutation must come from rank 0 whatever the local seeds
        x = torch.arange(world * 4 * 3, dtype=torch.float32).view(world * 4, 3)[rank * 4:(rank + 1) * 4]
        seen = []

        def encoder(images):
            seen.append(images.clone())
            return images * 10

        out = distributed_shuffled_forward(encoder, x)
        torch.save({"x": x, "out": out, "seen": seen[0]}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_distributed_shuffling_restores_each_process_rows(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: the workers need no fresh interpreter (nothing here is CUDA), which saves seconds of imports.
    mp.start_processes(_ddp_shuffle_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for r in results:
        torch.testing.assert_close(r["out"], r["x"] * 10)  # each process gets its own rows back, in order
    encoded = torch.cat([r["seen"] for r in results])
    originals = torch.cat([r["x"] for r in results])
    # Every image is encoded exactly once, and the processes' sub-batches are mixed.
    assert sorted(encoded[:, 0].tolist()) == sorted(originals[:, 0].tolist())
    assert not torch.equal(encoded, originals)


# --------------------------------------------------------------------------- MoCo v3

def test_moco3_momentum_follows_a_cosine_to_one():
    method = small_moco3(momentum=0.99)
    assert method.momentum_at(Progress(0, 100)) == pytest.approx(0.99)
    assert method.momentum_at(Progress(50, 100)) == pytest.approx(1 - 0.01 * 0.5)
    assert method.momentum_at(Progress(25, 100)) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2)
    assert method.momentum_at(Progress(100, 100)) == pytest.approx(1.0)


def test_moco3_on_step_end_uses_the_scheduled_momentum():
    method = small_moco3(momentum=0.9)
    out = method(views())
    with torch.no_grad():
        for p in method.base_encoder().parameters():
            p.add_(1.0)
    query = [p.detach().clone() for p in method.base_encoder().parameters()]
    key = [p.detach().clone() for p in method.momentum_encoder.parameters()]
    progress = Progress(30, 100)
    m = 1 - 0.1 * (math.cos(math.pi * 0.3) + 1) / 2
    method.on_step_end(out, progress)
    for p_k, old_k, p_q in zip(method.momentum_encoder.parameters(), key, query):
        torch.testing.assert_close(p_k, m * old_k + (1 - m) * p_q)


def test_moco3_predictor_only_on_the_query_branch_and_no_gradient_to_keys():
    method = small_moco3()
    assert len(method.momentum_encoder) == 2  # backbone + projector, no predictor
    out = method(views())
    out.loss.backward()
    assert all(p.grad is None for p in method.momentum_encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.predictor.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.backbone.parameters())
    assert out.features.shape == (8, method.backbone.feature_dim) and not out.features.requires_grad


def test_moco3_loss_is_the_symmetric_loss_of_its_branches():
    method = small_moco3().eval()
    x = views()
    q1, q2 = (method.predictor(method.projector(method.backbone(v))) for v in x)
    k1, k2 = (method.momentum_encoder(v) for v in x)
    expected = in_batch_infonce(q1, k2, 1.0) + in_batch_infonce(q2, k1, 1.0)
    torch.testing.assert_close(method(x).loss, expected)


def test_moco3_resnet_and_vit_defaults():
    resnet = small_moco3()
    assert resnet.temperature == 1.0 and sum(isinstance(m, nn.Linear) for m in resnet.projector.modules()) == 2
    assert all(p.requires_grad for p in resnet.backbone.parameters())
    vit = small_moco3(tiny_vit())
    assert vit.temperature == 0.2 and sum(isinstance(m, nn.Linear) for m in vit.projector.modules()) == 3
    # The ViT's patch projection is random and frozen (Sec. 4.2); the blocks still learn.
    assert not any(p.requires_grad for p in vit.backbone.patch_embed.parameters())
    vit(views()).loss.backward()
    assert vit.backbone.patch_embed.proj.weight.grad is None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in vit.backbone.blocks.parameters())
    trainable = small_moco3(tiny_vit(), freeze_patch_embed=False)
    assert all(p.requires_grad for p in trainable.backbone.patch_embed.parameters())


def test_moco3_freezing_needs_a_vit():
    with pytest.raises(ConfigError, match="freeze_patch_embed=true needs a ViT"):
        small_moco3(freeze_patch_embed=True)


def test_moco3_state_dict_round_trip_keeps_the_momentum_encoder():
    method = small_moco3()
    out = method(views())
    with torch.no_grad():
        for p in method.base_encoder().parameters():
            p.add_(0.5)
    method.on_step_end(out, Progress(3, 10))
    restored = small_moco3()
    restored.load_state_dict(method.state_dict())
    for a, b in zip(restored.momentum_encoder.state_dict().values(), method.momentum_encoder.state_dict().values()):
        assert torch.equal(a, b)
