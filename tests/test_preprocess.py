"""Normalisation on the device equals torchvision's float path on the CPU, and leaves float input alone."""
import torch
from torchvision.transforms.v2 import functional as F

from backbones.preprocess import IMAGENET_MEAN, IMAGENET_STD, normalize_on_device


def test_uint8_batch_normalised_on_the_device_equals_the_float_path():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (4, 3, 9, 7), dtype=torch.uint8)
    reference = F.normalize(F.to_dtype(x, torch.float32, scale=True), IMAGENET_MEAN, IMAGENET_STD)
    got = normalize_on_device(x, "cpu")
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, reference, rtol=1e-6, atol=1e-6)
    # Hand check of one pixel: 255 in the red channel -> (1 - 0.485) / 0.229.
    x[0, 0, 0, 0] = 255
    assert abs(float(normalize_on_device(x, "cpu")[0, 0, 0, 0]) - (1 - 0.485) / 0.229) < 1e-5


def test_float_input_is_taken_as_normalised_and_channels_last_is_honoured():
    x = torch.randn(2, 3, 5, 5)
    assert torch.equal(normalize_on_device(x, "cpu"), x)
    y = normalize_on_device(torch.zeros(2, 3, 5, 5, dtype=torch.uint8), "cpu", channels_last=True)
    assert y.is_contiguous(memory_format=torch.channels_last)
