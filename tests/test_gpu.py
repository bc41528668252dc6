"""Mixed precision and the CUDA data path, through the loop's own functions.

Tests marked ``gpu`` run only where torch sees a CUDA device (tests/conftest.py skips them elsewhere);
``bench/gpu_check.py`` covers the rest by hand on a GPU machine: every method at ResNet-50 size, the
matrix, the Ray suites on whole and fractional GPUs (too slow for a test) and the MFU. The CPU tests
here check what ``train.precision`` does on CPU.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from backbones.preprocess import IMAGENET_MEAN, IMAGENET_STD, normalize_on_device
from backbones.switchable import SwitchableBatchNorm2d
from methods import build_method
from orchestrator.data.loaders import build_loader, build_train_dataset
from orchestrator.engine.loop import (LocalRuntime, TrainState, autocast_for, build_grad_scaler, build_optimizer,
                               build_scheduler, to_device, train_step)


def trainer_state(cfg, device: str) -> tuple[TrainState, LocalRuntime]:
    """Model, SGD, schedule and grad scaler as ``orchestrator.engine.loop.train`` sets them up."""
    runtime = LocalRuntime(device=device, log=lambda _: None)
    method = build_method(cfg.method, cfg.model, cfg.data.resolutions)
    net = method.build(cfg.data.num_classes).to(runtime.device)
    if cfg.train.channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, method, net)
    return TrainState(net=net, model=runtime.wrap(net), method=method, optimizer=optimizer,
                      scheduler=build_scheduler(optimizer, cfg, steps_per_epoch=2),
                      scaler=build_grad_scaler(cfg, runtime.device)), runtime


def loader_batch(cfg, batch: int = 4):
    """A batch shaped as the loaders give it: uint8 images, one tensor per training resolution; labels."""
    g = torch.Generator().manual_seed(0)
    xs = tuple(torch.randint(0, 256, (batch, 3, r, r), dtype=torch.uint8, generator=g) for r in cfg.data.resolutions)
    return xs, torch.randint(0, cfg.data.num_classes, (batch,), generator=g)


def record_conv_dtypes(net: nn.Module) -> tuple[list[torch.dtype], list]:
    """Output dtypes of every nn.Conv2d call, and the hook handles to remove."""
    dtypes: list[torch.dtype] = []
    handles = [m.register_forward_hook(lambda module, inputs, out: dtypes.append(out.dtype))
               for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert handles, "the backbone has no nn.Conv2d"
    return dtypes, handles


def cpu_float_path(x: torch.Tensor) -> torch.Tensor:
    """The normalisation the loaders did on the CPU before: float32, / 255, then (x - mean) / std."""
    shape = (1, 3, 1, 1) if x.dim() == 4 else (3, 1, 1)
    mean, std = torch.tensor(IMAGENET_MEAN).view(shape), torch.tensor(IMAGENET_STD).view(shape)
    return (x.float() / 255 - mean) / std


def step_recording_conv_dtypes(state, cfg, runtime):
    """One train_step on a loader batch: its LossOutput and the dtype of every conv output it made."""
    xs, labels = to_device(*loader_batch(cfg), cfg, runtime.device)
    dtypes, handles = record_conv_dtypes(state.net)
    try:
        return train_step(state, xs, labels, cfg, runtime, epoch=0, step=0), dtypes
    finally:
        for h in handles:
            h.remove()


# ---------------------------------------------------------------- train.precision on CPU


@pytest.mark.parametrize("precision, activations", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_precision_on_cpu_sets_the_conv_dtype_and_keeps_float32_weights(tiny_job, precision, activations):
    cfg = tiny_job(**{"method.name": "rsnet", "train.precision": precision, "data.resolutions": [24, 16]})
    state, runtime = trainer_state(cfg, "cpu")
    before = {n: p.detach().clone() for n, p in state.net.named_parameters()}
    out, dtypes = step_recording_conv_dtypes(state, cfg, runtime)
    assert dtypes and set(dtypes) == {activations}  # every conv of every resolution ran in that dtype
    assert math.isfinite(out.total.item())
    params = dict(state.net.named_parameters())
    assert {p.dtype for p in params.values()} == {torch.float32}  # autocast casts copies, never the weights
    assert {p.grad.dtype for p in params.values() if p.grad is not None} == {torch.float32}
    assert any(not torch.equal(before[n], p) for n, p in params.items())  # the step did update them


def test_bf16_autocast_is_the_loops_context_on_cpu(tiny_job):
    """autocast_for is what train_step enters: outside it the same conv runs in float32."""
    cfg = tiny_job(**{"train.precision": "bf16"})
    conv = nn.Conv2d(3, 8, 3)
    x = torch.randn(2, 3, 8, 8)
    with autocast_for(cfg, torch.device("cpu")):
        assert conv(x).dtype == torch.bfloat16
    assert conv(x).dtype == torch.float32


# ---------------------------------------------------------------- CUDA


@pytest.mark.gpu
def test_rsnet_step_on_cuda_in_bf16_channels_last(tiny_job):
    cfg = tiny_job(**{"method.name": "rsnet", "train.precision": "bf16", "train.channels_last": True})
    state, runtime = trainer_state(cfg, "cuda")
    out, dtypes = step_recording_conv_dtypes(state, cfg, runtime)
    assert set(dtypes) == {torch.bfloat16}
    assert math.isfinite(out.total.item())
    for name, p in state.net.named_parameters():
        assert p.dtype == torch.float32 and p.device.type == "cuda", name
        assert p.grad is None or bool(torch.isfinite(p.grad).all()), name
        if p.dim() == 4:
            assert p.is_contiguous(memory_format=torch.channels_last), name
    bns = [m for m in state.net.modules() if isinstance(m, SwitchableBatchNorm2d)]
    assert bns and all(bool(m.weight.grad.abs().sum(dim=1).gt(0).all()) for m in bns)  # every slot trained


@pytest.mark.gpu
def test_one_resolution_on_cuda_reaches_only_its_bn_slot(tiny_job):
    """Private BN under bf16 + channels_last on CUDA: a forward at one training resolution gives
    gradients to that slot's gamma and beta and exactly zero to every other slot's."""
    cfg = tiny_job(**{"method.name": "rsnet", "train.precision": "bf16", "train.channels_last": True})
    state, runtime = trainer_state(cfg, "cuda")
    xs, labels = to_device(*loader_batch(cfg), cfg, runtime.device)
    slot = 1
    with autocast_for(cfg, runtime.device):
        logits = state.net(xs[slot], resolution=cfg.data.resolutions[slot])
    F.cross_entropy(logits.float(), labels).backward()
    bns = [m for m in state.net.modules() if isinstance(m, SwitchableBatchNorm2d)]
    assert bns
    for m in bns:
        for grad in (m.weight.grad, m.bias.grad):
            assert bool(torch.isfinite(grad).all())
            per_slot = grad.abs().sum(dim=1)
            assert per_slot[slot] > 0
            assert torch.count_nonzero(torch.cat([per_slot[:slot], per_slot[slot + 1:]])) == 0


@pytest.mark.gpu
def test_normalisation_on_cuda_equals_the_cpu_float_path():
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (4, 3, 17, 23), dtype=torch.uint8, generator=g).pin_memory()
    image = torch.randint(0, 256, (3, 9, 11), dtype=torch.uint8, generator=g)
    got = normalize_on_device(batch, "cuda", channels_last=True)
    assert got.device.type == "cuda" and got.dtype == torch.float32
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got.cpu(), cpu_float_path(batch), rtol=0, atol=1e-5)
    torch.testing.assert_close(normalize_on_device(image, "cuda").cpu(), cpu_float_path(image), rtol=0, atol=1e-5)


@pytest.mark.gpu
def test_loader_batches_reach_cuda_pinned_and_normalised(tiny_job):
    cfg = tiny_job(**{"train.channels_last": True})
    loader = build_loader(build_train_dataset(cfg.data), cfg.train.batch_size, shuffle=True, seed=0,
                          workers=0, drop_last=True)
    xs, labels = next(iter(loader))
    assert all(x.dtype == torch.uint8 and x.is_pinned() for x in xs)  # pinned: the copy can be non-blocking
    on_device, labels = to_device(xs, labels, cfg, torch.device("cuda"))
    assert labels.device.type == "cuda"
    for x, y in zip(xs, on_device):
        assert y.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(y.cpu(), cpu_float_path(x), rtol=0, atol=1e-5)
