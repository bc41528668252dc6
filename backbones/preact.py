"""Pre-activation ResNets in the layout of LQ-Nets / the quantized RS-Nets (W2/A2 runs).

The reference (yikaiw/RS-Nets ``quantization/models/resnet.py``, mode "preact", block type B) quantizes
every conv's input while the identity shortcuts carry full-precision sums; that is why quantized
activations need a pre-activation net. Its layout, which these nets mirror:

- stem: a full-precision conv, BN, ReLU (and the max-pool of the ImageNet stem);
- a block: [BN, ReLU] → quantize → conv → BN → ReLU → quantize → conv → BN (bottleneck: three convs,
  stride on the 3x3), plus the shortcut: the identity of the raw input, or a 1x1 conv + BN;
- the first block of a stage that changes shape feeds its pre-activated, quantized input to both
  paths (the reference's "no_preact" after the previous stage's "bn-last + quant_last"); the first
  block of the first stage gets the stem's output, already activated, so it only quantizes it;
- after the last stage: BN, ReLU, global average pool, a full-precision FC.

Unlike He et al.'s v2 block, a BN closes every residual branch and every projection shortcut, as in
the reference. Quantization points are ``ActivationSite`` identities, made quantizers by surgery, so
at full precision these are ordinary nets. Init: torchvision's (kaiming normal fan_out, BN 1 / 0).
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from .quantized import ActivationSite
from .resnet import small_input_stem, torchvision_resnet_init


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


class PreActBlock(nn.Module):
    """Basic (two 3x3) or bottleneck (1x1, 3x3, 1x1 with 4x expansion) pre-activation block.

    preact: BN + ReLU on the input first (False for the first block of the first stage).
    """

    def __init__(self, in_ch: int, planes: int, stride: int, norm_layer: Callable, preact: bool, bottleneck: bool):
        super().__init__()
        out_ch = planes * (4 if bottleneck else 1)
        self.has_preact = preact
        self.preact = nn.Sequential(norm_layer(in_ch), nn.ReLU(inplace=True)) if preact else nn.Identity()
        self.quant_in = ActivationSite()
        if bottleneck:
            layers = [conv1x1(in_ch, planes), norm_layer(planes), nn.ReLU(inplace=True), ActivationSite(),
                      conv3x3(planes, planes, stride), norm_layer(planes), nn.ReLU(inplace=True), ActivationSite(),
                      conv1x1(planes, out_ch), norm_layer(out_ch)]
        else:
            layers = [conv3x3(in_ch, planes, stride), norm_layer(planes), nn.ReLU(inplace=True), ActivationSite(),
                      conv3x3(planes, out_ch), norm_layer(out_ch)]
        self.residual = nn.Sequential(*layers)
        self.shortcut = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(conv1x1(in_ch, out_ch, stride), norm_layer(out_ch))

    def forward(self, x):
        h = self.quant_in(self.preact(x))
        # The identity keeps the raw full-precision sum. A projection takes the activated, quantized input
        # in a stage's first block, but the stem's output unquantized in the very first block (ResNet-50's
        # 64 -> 256), as in the reference.
        if self.shortcut is None:
            shortcut = x
        else:
            shortcut = self.shortcut(h if self.has_preact else x)
        return self.residual(h) + shortcut


class PreActResNet(nn.Module):
    def __init__(self, layers: list[int], num_classes: int, norm_layer: Callable, bottleneck: bool = False,
                 widths: tuple[int, ...] = (64, 128, 256, 512), small_input: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        if small_input:
            small_input_stem(self)
        blocks, in_ch = [], widths[0]
        for stage, (count, planes) in enumerate(zip(layers, widths)):
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(PreActBlock(in_ch, planes, stride, norm_layer, preact=(stage, i) != (0, 0),
                                          bottleneck=bottleneck))
                in_ch = planes * (4 if bottleneck else 1)
        self.layers = nn.Sequential(*blocks)
        self.final = nn.Sequential(norm_layer(in_ch), nn.ReLU(inplace=True))  # the reference's last "bn-last"
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        torchvision_resnet_init(self)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.final(self.layers(x))
        return self.fc(self.avgpool(x).flatten(1))


def build_preact_resnet18(num_classes: int, norm_layer: Callable, small_input: bool = False, **_) -> PreActResNet:
    return PreActResNet([2, 2, 2, 2], num_classes, norm_layer, small_input=small_input)


def build_preact_resnet50(num_classes: int, norm_layer: Callable, small_input: bool = False, **_) -> PreActResNet:
    return PreActResNet([3, 4, 6, 3], num_classes, norm_layer, bottleneck=True, small_input=small_input)


def build_preact_resnet_tiny(num_classes: int, norm_layer: Callable, width: int = 16, **_) -> PreActResNet:
    """The pre-activation twin of ``TinyResNet``: 3x3 stem, no max-pool, one block per stage (w, 2w, 4w)."""
    return PreActResNet([1, 1, 1], num_classes, norm_layer, widths=(width, 2 * width, 4 * width), small_input=True)
