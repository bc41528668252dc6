"""MobileNetV2 from torchvision's definition, with an injectable norm layer and optional small-input stem."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn
from torchvision.models.mobilenetv2 import MobileNetV2


def build_mobilenet_v2(num_classes: int, norm_layer: Callable, small_input: bool = False, **_) -> MobileNetV2:
    model = MobileNetV2(num_classes=num_classes, norm_layer=norm_layer)
    if small_input:
        # Stride-1 stem: keeps four more pixels of detail per side at 32-64 px; same weights shape.
        model.features[0][0].stride = (1, 1)
    return model
