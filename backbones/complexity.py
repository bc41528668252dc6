"""Parameter and multiply-add counts, as the papers report them.

Params: every parameter counted once, so private BN counts gamma/beta once per resolution (RS-Nets
Table 2 "Total Params"); the papers give them in units of 2^20. MAdds: multiply-adds of conv and
linear layers at one resolution, counted by ``torch.utils.flop_counter`` (FLOPs / 2).
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from .net import MultiResolutionNet


def count_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@torch.no_grad()
def count_madds(net: MultiResolutionNet, resolution: int) -> int:
    was_training = net.training
    net.eval()
    x = torch.zeros(1, 3, resolution, resolution, device=next(net.parameters()).device)
    counter = FlopCounterMode(display=False)
    with counter:
        net(x, resolution=resolution)
    net.train(was_training)
    return counter.get_total_flops() // 2


def training_madds(net: MultiResolutionNet, resolutions) -> int:
    """Multiply-adds of one training image over the training resolutions (each listed copy counts: a
    net trained on three copies of 224 px passes every image three times), forward pass only."""
    per = {r: count_madds(net, r) for r in set(resolutions)}
    return sum(per[r] for r in resolutions)
