"""Refactors must not move a single number: the same seeds give the same losses and weights.

A few methods train three optimizer steps on tiny sizes through their own plain loop (views from
the engine's batched pipeline, the engine's optimizer and warm-up + cosine schedule, the methods'
``on_step_end`` momentum/queue updates), and the losses, a weight checksum and the state-dict
keys (old checkpoints must load) are compared with values recorded before the house-keeping of
issue 17 (applications moved to ``selfsup.apps``, one schedule module, one MLP builder).

The recorded values were produced by ``PYTHONPATH=src python tests/methods/test_numerics_unchanged.py``
on commit 6ac9df5 (before the refactor), torch 2.14.1 CPU, one thread. The tolerance is 1e-6
relative because BLAS kernels can differ across machines; on that machine the values were equal
to the last digit.
"""

from __future__ import annotations

import hashlib
import math

import pytest
import torch

from selfsup.config import OptimConfig
from selfsup.data import DatasetInfo
from selfsup.engine.optim import build_optimizer, build_scheduler
from selfsup.methods import METHODS, DataSpec, Progress, build_backbone_for, build_method
from selfsup.transforms import BatchedMultiViewTransform

STEPS = 3


def train_three_steps(name: str):
    """(losses, weight checksum, sha1 of the sorted state-dict keys) of ``name`` after 3 steps."""
    torch.manual_seed(0)
    cls = METHODS.get(name)
    size, batch, channels = 16, 8, 3
    info = DatasetInfo("numerics", channels, 3, size, (0.5,) * channels, (0.25,) * channels)
    if cls.backbone_kind == "vit":
        backbone, backbone_args = "vit-tiny", {"patch_size": 4, "image_size": size, "depth": 2}
    else:
        backbone, backbone_args = "resnet18", {"small_stem": True, "width": 0.125}
    net = build_backbone_for(name, backbone, backbone_args, channels)
    method = build_method(name, net, data=DataSpec(info, num_samples=4 * batch))
    cfg = OptimConfig(name="sgd", lr=0.1, warmup_epochs=1, min_lr=0.001)
    optimizer = build_optimizer(cfg, [{"params": [p for p in method.parameters() if p.requires_grad]}], batch)
    scheduler = build_scheduler(optimizer, cfg, total_steps=STEPS + 1, steps_per_epoch=1)
    transform = BatchedMultiViewTransform(cls.default_views(), info)
    images = torch.randint(0, 256, (4 * batch, channels, size, size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    losses = []
    for step in range(STEPS):
        indices = torch.arange(step * batch, (step + 1) * batch)
        views = transform(images[indices], generator=torch.Generator().manual_seed(step))
        out = method(views, indices)
        optimizer.zero_grad()
        out.loss.backward()
        progress = Progress(step=step, total_steps=STEPS)
        method.on_before_optimizer_step(progress)
        optimizer.step()
        scheduler.step()
        method.on_step_end(out, progress)
        losses.append(out.loss.item())
    state = method.state_dict()
    # Position-weighted so that swapped or permuted weights change the checksum too.
    checksum = sum(float((v.double().flatten() * torch.linspace(1, 2, v.numel(), dtype=torch.float64)).sum())
                   for v in state.values() if v.is_floating_point())
    keys = hashlib.sha1("\n".join(sorted(state)).encode()).hexdigest()
    return losses, checksum, keys


# Recorded on commit 6ac9df5 (before the refactor), torch 2.14.1 CPU; see the module docstring.
RECORDED = {
    'simclr': ([2.6629953384399414, 2.5783276557922363, 2.8311209678649902], 7159.563888534454, '3f4c1b8327519e855e9b6da19f60b13440810d41'),
    'byol': ([4.063995361328125, 3.8901000022888184, 3.3869972229003906], 35802.594267278575, '91d67d133eadac68bf2c5f52ed59b0855792d255'),
    'dino': ([10.76594352722168, 10.797532081604004, 10.830830574035645], 2934.1333436257273, 'e3b3c4668cf7c5fbf5d6e2c65cb00bb1dce27388'),
    'vicreg': ([64.47834777832031, 55.96156692504883, 50.45568084716797], 41257.341210062106, '64369880152bb6f45835dabe4d6235644bf1a168'),
    'moco2': ([6.9996137619018555, 6.9442033767700195, 6.889596462249756], 3581.314026616769, '1a0a0a3d9428122d33d0075a89853427d3646d84'),
    'simsiam': ([-9.074097033590078e-05, -0.005395440384745598, -0.007143139839172363], 16303.35007712703, '602924ba3fca800638cdab08a12db274ed66b2e5'),
    'barlow-twins': ([57874.4765625, 62974.5703125, 67270.671875], 25848139.38300438, 'fc3076a012268f6d90d5fb381b432d5fd5ad3619'),
    'moco3': ([8.411991119384766, 8.304252624511719, 8.342058181762695], 33764.42340815242, '6e19873cadd93bb44462babf76791ffd71e3ba90'),
    'ibot': ([13.486949920654297, 13.487665176391602, 13.320993423461914], 27195.650890690737, '77bcd526286de47e0dc7e857ace87ec191b73825'),
}


# The recorded values came from one thread: with two, oneDNN/BLAS split their sums differently
# and the values move by ~1e-6 relative (measured: barlow-twins, simsiam, vicreg).
@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("name", sorted(RECORDED))
def test_three_steps_give_the_recorded_losses_and_weights(name):
    losses, checksum, keys = train_three_steps(name)
    want_losses, want_checksum, want_keys = RECORDED[name]
    assert keys == want_keys, "state-dict keys changed: old checkpoints would no longer load"
    for got, want in zip(losses, want_losses):
        assert math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9), (losses, want_losses)
    assert math.isclose(checksum, want_checksum, rel_tol=1e-6), (checksum, want_checksum)


if __name__ == "__main__":
    torch.set_num_threads(1)
    for method_name in ("simclr", "byol", "dino", "vicreg", "moco2", "simsiam", "barlow-twins", "moco3", "ibot"):
        print(f"    {method_name!r}: {train_three_steps(method_name)!r},")
