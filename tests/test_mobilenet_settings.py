"""MobileNetV2's model settings: torchvision's width multiplier, no dropout by default, and which
config hashes those settings enter."""
from __future__ import annotations

import pytest
import torch.nn as nn
from torchvision.models import MobileNetV2

from backbones import ModelConfig, build_net
from jobspec import ConfigError, JobConfig, MethodConfig, config_hash
from methods import build_method

WIDTHS = (1.0, 0.8, 0.65, 0.5, 0.35)  # RS-Nets Table 4's I-Nets-w


def channels(model: nn.Module) -> tuple[int, int, int]:
    """(first conv's outputs, last conv's outputs, classifier's inputs)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linear = next(m for m in model.modules() if isinstance(m, nn.Linear))
    return convs[0].out_channels, convs[-1].out_channels, linear.in_features


@pytest.mark.parametrize("width_mult", WIDTHS)
def test_width_multiplier_gives_torchvisions_channels(width_mult):
    reference = MobileNetV2(num_classes=10, width_mult=width_mult)
    net = build_net("mobilenet_v2", 10, [224], bn="shared", width_mult=width_mult)
    assert channels(net.backbone) == channels(reference)
    shapes = [tuple(m.weight.shape) for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert shapes == [tuple(m.weight.shape) for m in reference.modules() if isinstance(m, nn.Conv2d)]
    # and through a method, as a job builds it
    model = ModelConfig(backbone="mobilenet_v2", width_mult=width_mult)
    built = build_method(MethodConfig(name="individual"), model, [224]).build(10)
    assert channels(built.backbone) == channels(reference)


def test_width_multiplier_channels_by_hand():
    assert channels(build_net("mobilenet_v2", 10, [224], width_mult=0.35).backbone) == (16, 1280, 1280)
    assert channels(build_net("mobilenet_v2", 10, [224], width_mult=0.5).backbone) == (16, 1280, 1280)
    assert channels(build_net("mobilenet_v2", 10, [224], width_mult=1.0).backbone) == (32, 1280, 1280)


def dropouts(model: nn.Module) -> list[float]:
    return [m.p for m in model.modules() if isinstance(m, nn.Dropout)]


def test_no_dropout_by_default():
    """Neither paper's reference MobileNetV2 has dropout; torchvision's has 0.2."""
    assert dropouts(MobileNetV2()) == [0.2]
    net = build_net("mobilenet_v2", 10, [224, 160])
    assert all(p == 0.0 for p in dropouts(net))
    built = build_method(MethodConfig(name="rsnet"), ModelConfig(backbone="mobilenet_v2"), [224, 160]).build(10)
    assert all(p == 0.0 for p in dropouts(built))


def test_dropout_setting_restores_torchvisions_classifier():
    model = ModelConfig(backbone="mobilenet_v2", dropout=0.2)
    net = build_method(MethodConfig(name="parallel"), model, [224, 160]).build(10)
    reference = MobileNetV2(num_classes=10)
    assert dropouts(net) == dropouts(reference) == [0.2]
    assert [type(m) for m in net.backbone.classifier] == [type(m) for m in reference.classifier]


@pytest.mark.parametrize("bad", [{"dropout": 1.0}, {"dropout": -0.1}, {"width_mult": 0.0}, {"width_mult": -1.0}])
def test_bounds(bad):
    with pytest.raises(ConfigError):
        JobConfig.parse({"model": {"backbone": "mobilenet_v2", **bad}})


def job_hash(**model) -> str:
    return config_hash(JobConfig.parse({"model": model}))


def test_only_mobilenet_v2_hashes_its_settings():
    for backbone in ("resnet18", "resnet50", "resnet_tiny"):
        assert job_hash(backbone=backbone) == job_hash(backbone=backbone, width_mult=0.5, dropout=0.2)
    assert job_hash(backbone="mobilenet_v2") != job_hash(backbone="mobilenet_v2", width_mult=0.5)
    assert job_hash(backbone="mobilenet_v2") != job_hash(backbone="mobilenet_v2", dropout=0.2)
    assert job_hash(backbone="mobilenet_v2", width_mult=1) == job_hash(backbone="mobilenet_v2", width_mult=1.0)
    # tiny's width is not MobileNetV2's: it stays out of MobileNetV2's hash
    assert job_hash(backbone="mobilenet_v2") == job_hash(backbone="mobilenet_v2", width=8)
