"""DDP on the CPU: two gloo processes with batch B each = one process with batch 2B."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from selfsup.methods import SimCLR


class FlatEncoder(nn.Module):
    """BatchNorm-free encoder: per-process BN statistics would differ by design (SyncBN aside)."""

    feature_dim = 12

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 12), nn.ReLU(), nn.Linear(12, 12))

    def forward(self, x):
        return self.net(x)


def make_method() -> SimCLR:
    torch.manual_seed(0)
    return SimCLR(FlatEncoder(), SimCLR.Config(temperature=0.3, projection_hidden_dim=16, projection_dim=8,
                                               projection_batch_norm=False)).double()


def make_views(total: int):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(total, 3, 8, 8, generator=g, dtype=torch.float64) for _ in range(2)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, batch: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        model = DistributedDataParallel(make_method())
        views = [v[rank * batch:(rank + 1) * batch] for v in make_views(world * batch)]
        loss = model(views).loss
        loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in model.module.named_parameters()}
        torch.save({"loss": loss.detach(), "grads": grads}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_match_one_process_with_double_batch(tmp_path):
    batch, world = 4, 2
    mp.spawn(_worker, args=(world, _free_port(), batch, str(tmp_path)), nprocs=world, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]

    single = make_method()
    loss = single(make_views(world * batch)).loss
    loss.backward()

    # Each process's loss is the mean over its own anchors: their mean is the global loss.
    assert torch.stack([r["loss"] for r in results]).mean().item() == pytest.approx(loss.item(), rel=1e-10)
    # The gradient differs per process only in the loss value: DDP's average equals the global one.
    for name, param in single.named_parameters():
        for r in results:
            torch.testing.assert_close(r["grads"][name], param.grad, rtol=1e-9, atol=1e-12)


def test_gathered_negatives_matter():
    """Sanity check that the test above can fail: without gathering, the losses differ."""
    method = make_method()
    views = make_views(8)
    full = method(views).loss.item()
    halves = [method([v[i:i + 4] for v in views]).loss.item() for i in (0, 4)]
    assert abs(sum(halves) / 2 - full) > 1e-3
