"""GAP feature activations on validation images under the training and the test pre-processing
(RS-Nets Fig. 3 right): per training resolution, the quantiles of every output component of the
global average pooling, from which the figure's CDF curves are drawn.

The GAP output is taken as the input of the net's last ``nn.Linear`` (the classifier), which holds for
every backbone here (torchvision's MobileNetV2 pools functionally, so there is no pooling module to
hook). Quantiles keep the artifact small whatever the dataset: 201 levels per curve.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from backbones.preprocess import normalize_on_device
from jobspec import JobConfig
from orchestrator.data.loaders import build_loader, build_val_dataset

LEVELS = np.linspace(0.0, 1.0, 201)
COLUMNS = ["row", "preprocessing", "level", "value"]


def _classifier(net: nn.Module) -> nn.Linear:
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the net has no nn.Linear classifier whose input is the GAP output")
    return linears[-1]


@torch.no_grad()
def gap_activations(net, loader, device: torch.device, max_batches: int | None = None) -> dict[int, np.ndarray]:
    """Training resolution -> every GAP output component of every image seen at that resolution
    through that resolution's slot (``loader`` yields tuples over ``dict.fromkeys(net.resolutions)``)."""
    rows = list(dict.fromkeys(net.resolutions))
    captured: list[torch.Tensor] = []
    hook = _classifier(net).register_forward_pre_hook(lambda module, args: captured.append(args[0].detach()))
    values: dict[int, list[np.ndarray]] = {r: [] for r in rows}
    was_training = net.training
    net.eval()
    try:
        for i, (xs, _) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            for r, x in zip(rows, xs):
                captured.clear()
                with net.at_resolution(r, slot=net.resolutions.index(r)):
                    net(normalize_on_device(x, device))
                values[r].append(captured[-1].float().flatten().cpu().numpy())
    finally:
        hook.remove()
        net.train(was_training)
    return {r: np.concatenate(v) if v else np.empty(0, np.float32) for r, v in values.items()}


def gap_quantiles(net, cfg: JobConfig, device: torch.device) -> pd.DataFrame:
    """Rows (training resolution, 'train' | 'test', level, value): the quantile curves of the GAP
    activations on the validation images under each pre-processing. The training crops are drawn
    from a fixed seed, without touching the caller's random state."""
    rows = list(dict.fromkeys(net.resolutions))
    records = []
    for preprocessing in ("train", "test"):
        images = build_val_dataset(cfg.data, rows, preprocessing=preprocessing)
        loader = build_loader(images, cfg.eval.batch_size, shuffle=False, seed=cfg.train.seed, workers=0,
                              drop_last=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)
            activations = gap_activations(net, loader, device, cfg.eval.max_batches)
        for r, values in activations.items():
            quantiles = np.quantile(values, LEVELS) if values.size else np.full(len(LEVELS), np.nan)
            records += [(r, preprocessing, float(q), float(v)) for q, v in zip(LEVELS, quantiles)]
    return pd.DataFrame.from_records(records, columns=COLUMNS)
