"""RS-Nets Fig. 3 (right): GAP activations on validation images under train vs test pre-processing."""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn

from backbones.preprocess import normalize_on_device
from methods import build_method
from orchestrator.data.loaders import build_loader, build_val_dataset
from orchestrator.engine.gap_features import LEVELS, gap_activations, gap_quantiles


def tiny_net(cfg):
    torch.manual_seed(0)
    return build_method(cfg.method, cfg.model, cfg.data.resolutions).build(10).eval()


def test_activations_are_the_gap_output_of_each_slot(tiny_job):
    cfg = tiny_job(**{"method.name": "parallel", "eval.max_batches": 2})
    net = tiny_net(cfg)
    loader = build_loader(build_val_dataset(cfg.data, [32, 24, 16]), 8, shuffle=False, seed=0, workers=0,
                          drop_last=False)
    got = gap_activations(net, loader, torch.device("cpu"), max_batches=2)
    # Independently: the same net with its classifier replaced by the identity outputs the GAP features.
    features = copy.deepcopy(net)
    features.backbone.fc = nn.Identity()
    for slot, r in enumerate([32, 24, 16]):
        expected = []
        for i, (xs, _) in enumerate(loader):
            if i >= 2:
                break
            with torch.no_grad(), features.at_resolution(r, slot=slot):
                expected.append(features(normalize_on_device(xs[slot], 'cpu')).flatten().numpy())
        np.testing.assert_allclose(got[r], np.concatenate(expected), rtol=1e-6)
        assert got[r].size == 16 * net.backbone.fc.in_features and (got[r] >= 0).all()  # ReLU before the GAP


def test_quantile_curves_per_resolution_and_preprocessing_repeat_exactly(tiny_job):
    cfg = tiny_job(**{"method.name": "parallel", "eval.max_batches": 2})
    net = tiny_net(cfg)
    frame = gap_quantiles(net, cfg, torch.device("cpu"))
    assert len(frame) == 3 * 2 * len(LEVELS)
    train = frame[(frame["row"] == 24) & (frame["preprocessing"] == "train")]["value"].to_numpy()
    test = frame[(frame["row"] == 24) & (frame["preprocessing"] == "test")]["value"].to_numpy()
    assert (np.diff(train) >= 0).all() and (np.diff(test) >= 0).all()  # quantile curves rise
    assert not np.allclose(train, test)  # random crops and centre crops see different content
    state = torch.get_rng_state()
    again = gap_quantiles(net, cfg, torch.device("cpu"))
    assert again.equals(frame)  # the training crops come from a fixed seed
    assert torch.equal(state, torch.get_rng_state())  # and leave the caller's random state alone
