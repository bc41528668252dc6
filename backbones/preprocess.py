"""Normalisation on the device: the loaders hand over uint8 images; the model sees float, normalised.

Why here and not in the loader: a multi-resolution sample holds 2.8x the pixels of one 224 crop.
Converting and normalising them to float32 on the CPU was most of the loader's cost, and float32 moves
4x the bytes of uint8 to the device. This is the fix FFCV, DALI and timm's prefetcher use: copy uint8,
normalise once per batch on the device. It lives in ``backbones`` (the lowest layer) so that both
``analysis`` (evaluation) and ``orchestrator`` (training, calibration) can use it.

Unlike the papers' reference code, which fed unnormalised [0, 1] tensors, inputs are normalised with
the ImageNet mean/std.
"""
from __future__ import annotations

import functools

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@functools.lru_cache(maxsize=8)
def _scale_shift(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_uint8 * scale + shift) == (x / 255 - mean) / std, folded into one multiply-add per pixel."""
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64)
    scale = (1.0 / (255.0 * std)).to(torch.float32).view(1, 3, 1, 1)
    shift = (-mean / std).to(torch.float32).view(1, 3, 1, 1)
    return scale.to(device), shift.to(device)


def normalize_on_device(x: torch.Tensor, device: torch.device | str | None = None, *,
                        channels_last: bool = False) -> torch.Tensor:
    """A batch [B, 3, H, W] (or one image [3, H, W]) on ``device`` as the model's input.

    uint8 images (the loaders' output) are copied as uint8 (non-blocking: the loaders pin memory on
    CUDA), then converted to float32 and normalised there. Float tensors are taken as already
    normalised and only moved (benchmarks and tests feed random floats). ``channels_last`` gives the
    NHWC memory format the step runs in on GPUs.
    """
    if device is not None:
        x = x.to(device, non_blocking=True)
    if x.dtype == torch.uint8:
        scale, shift = _scale_shift(x.device)
        if x.dim() == 3:
            scale, shift = scale[0], shift[0]
        x = torch.addcmul(shift, x.to(torch.float32), scale)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x
