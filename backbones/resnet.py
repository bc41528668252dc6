"""ResNets from torchvision's own definitions, with an injectable norm layer and optional small-input stem."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet50


def small_input_stem(model: ResNet) -> ResNet:
    """3x3 stride-1 stem and no max-pool (CIFAR-style), for 16-64 px inputs; keeps torchvision's init."""
    conv = nn.Conv2d(3, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    model.conv1 = conv
    model.maxpool = nn.Identity()
    return model


def build_resnet18(num_classes: int, norm_layer: Callable, small_input: bool = False,
                   zero_init_residual: bool = False, **_) -> ResNet:
    model = resnet18(num_classes=num_classes, norm_layer=norm_layer, zero_init_residual=zero_init_residual)
    return small_input_stem(model) if small_input else model


def build_resnet50(num_classes: int, norm_layer: Callable, small_input: bool = False,
                   zero_init_residual: bool = False, **_) -> ResNet:
    model = resnet50(num_classes=num_classes, norm_layer=norm_layer, zero_init_residual=zero_init_residual)
    return small_input_stem(model) if small_input else model


def torchvision_resnet_init(model: nn.Module) -> None:
    """torchvision ResNet's init: Kaiming-normal (fan-out) convs, BN weight 1 and bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


class TinyResNet(nn.Module):
    """ResNet-8 for 16-64 px data: 3x3 stem, three stages of one torchvision BasicBlock (w, 2w, 4w).

    Small enough that a CPU trains it in seconds, deep enough (downsampling, residual shortcuts with
    1x1 downsample convs, BN everywhere) to exercise every switchable layer kind.
    """

    def __init__(self, num_classes: int, norm_layer: Callable, width: int = 16, zero_init_residual: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        stages, in_ch = [], width
        for i, out_ch in enumerate((width, 2 * width, 4 * width)):
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or in_ch != out_ch:
                downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), norm_layer(out_ch))
            stages.append(BasicBlock(in_ch, out_ch, stride=stride, downsample=downsample, norm_layer=norm_layer))
            in_ch = out_ch
        self.layers = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        torchvision_resnet_init(self)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return self.fc(self.avgpool(x).flatten(1))


def build_resnet_tiny(num_classes: int, norm_layer: Callable, width: int = 16, zero_init_residual: bool = False,
                      **_) -> TinyResNet:
    return TinyResNet(num_classes, norm_layer, width=width, zero_init_residual=zero_init_residual)


__all__ = ["build_resnet18", "build_resnet50", "build_resnet_tiny", "TinyResNet", "Bottleneck", "BasicBlock"]
