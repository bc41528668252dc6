"""MobileNetV2 from torchvision's definition, with an injectable norm layer and optional small-input stem."""
from __future__ import annotations

from typing import Callable

from torchvision.models.mobilenetv2 import MobileNetV2


def build_mobilenet_v2(num_classes: int, norm_layer: Callable, small_input: bool = False, width_mult: float = 1.0,
                       dropout: float = 0.0, **_) -> MobileNetV2:
    """``width_mult`` scales every layer's channels as torchvision does (the last conv stays 1280 below 1.0).

    ``dropout`` defaults to 0, not torchvision's 0.2: neither paper's reference MobileNetV2 (d-li14/SAN,
    yikaiw/RS-Nets) has dropout, and the papers' numbers come from those. The classifier keeps its
    (Dropout, Linear) layout either way, so state dicts stay torchvision's.
    """
    model = MobileNetV2(num_classes=num_classes, width_mult=width_mult, norm_layer=norm_layer, dropout=dropout)
    if small_input:
        # Stride-1 stem: keeps four more pixels of detail per side at 32-64 px; same weights shape.
        model.features[0][0].stride = (1, 1)
    return model
