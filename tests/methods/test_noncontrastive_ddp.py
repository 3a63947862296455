"""Barlow Twins and VICReg under DDP on the CPU: two gloo processes with batch B each = one
process with batch 2B (global batch statistics, summed cross-correlation, gathered embeddings).

Only light modules are imported at the top: each spawned process re-imports this file, and
importing every registered method would dominate the test's time on a loaded machine.
"""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from selfsup.heads.projection import ProjectionHead
from selfsup.losses.barlow_twins import BarlowTwinsLoss
from selfsup.losses.vicreg import VICRegLoss

NAMES = ("barlow-twins", "vicreg")


class FlatEncoder(nn.Module):
    """BatchNorm-free encoder: hidden BNs are global only under SyncBatchNorm (the trainer's job)."""

    feature_dim = 12

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 12), nn.ReLU(), nn.Linear(12, 12))

    def forward(self, x):
        return self.net(x)


class Siamese(nn.Module):
    """What ``BarlowTwins.forward`` / ``VICReg.forward`` compute: one encoder and head for both
    views, then the loss on the paired embeddings (``test_stand_in_matches_the_methods``)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.backbone = FlatEncoder()
        self.head = ProjectionHead(12, 16, 10, num_layers=3, batch_norm=False)
        self.criterion = BarlowTwinsLoss() if name == "barlow-twins" else VICRegLoss()

    def forward(self, views):
        batch = views[0].shape[0]
        z = self.head(self.backbone(torch.cat(views)))
        return self.criterion(z[:batch], z[batch:]).loss


def make_model(name: str) -> Siamese:
    torch.manual_seed(0)
    return Siamese(name).double()


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
        results = {}
        for name in NAMES:
            model = DistributedDataParallel(make_model(name))
            views = [v[rank * batch:(rank + 1) * batch] for v in make_views(world * batch)]
            loss = model(views)
            loss.backward()
            grads = {n: p.grad.detach().clone() for n, p in model.module.named_parameters()}
            results[name] = {"loss": loss.detach(), "grads": grads}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_match_one_process_with_double_batch(tmp_path):
    batch, world = 4, 2
    mp.spawn(_worker, args=(world, _free_port(), batch, str(tmp_path)), nprocs=world, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    for name in NAMES:
        single = make_model(name)
        loss = single(make_views(world * batch))
        loss.backward()
        losses = torch.stack([r[name]["loss"] for r in results])
        if name == "barlow-twins":
            # The summed correlation matrix makes every process hold the global loss.
            torch.testing.assert_close(losses, torch.full_like(losses, loss.item()), rtol=1e-10, atol=0)
        # VICReg: global variance/covariance + local invariance, whose process mean is global.
        assert losses.mean().item() == pytest.approx(loss.item(), rel=1e-10)
        for param_name, param in single.named_parameters():
            for r in results:
                torch.testing.assert_close(r[name]["grads"][param_name], param.grad, rtol=1e-9, atol=1e-12)


def test_stand_in_matches_the_methods():
    from selfsup.methods.barlow_twins import BarlowTwins
    from selfsup.methods.vicreg import VICReg

    views = make_views(6)
    for name, cls, head in (("barlow-twins", BarlowTwins, "projector"), ("vicreg", VICReg, "expander")):
        stand_in = make_model(name)
        method = cls(stand_in.backbone).double()
        setattr(method, head, stand_in.head)
        assert method(views).loss.item() == pytest.approx(stand_in(views).item(), rel=1e-12)
