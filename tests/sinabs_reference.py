"""sinabs's own chip backend as an independent reference, for tests only.

``sinabs.backend.dynapcnn`` imports samna at module level, and samna cannot be installed here
(docs/speck-hardware.md section 0a). Its discretization, memory formulas and mapping are pure torch /
Python, so the tests load it with a stand-in ``samna`` in ``sys.modules``: nothing here pretends to
talk to a chip, and the product never uses this trick.
"""

from __future__ import annotations

import sys
import types
from unittest import mock

import numpy as np
import sinabs.activation as sa
import sinabs.layers as sl
import torch
from torch import nn

_STAND_IN = ["samna", "samnagui", "samna.speck2f", "samna.speck2f.configuration", "samna.speck2e",
             "samna.speck2e.configuration", "samna.specksim", "samna.specksim.nodes",
             "samna.graph", "samna.device"]


class _StandIn(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return mock.MagicMock(name=f"{self.__name__}.{name}")


def load_dynapcnn():
    """``(DynapcnnNetwork, speck2f constraints)`` with samna replaced by a stand-in."""
    saved = {name: sys.modules.get(name) for name in _STAND_IN}
    try:
        for name in _STAND_IN:
            sys.modules[name] = _StandIn(name)
        from sinabs.backend.dynapcnn import DynapcnnNetwork
        from sinabs.backend.dynapcnn.chips.speck2f import Speck2FConfigBuilder
        return DynapcnnNetwork, Speck2FConfigBuilder.get_constraints()
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def iaf(batch_size: int, threshold: float, return_to_zero: bool = False) -> sl.IAFSqueeze:
    return sl.IAFSqueeze(batch_size=batch_size, spike_threshold=threshold, min_v_mem=-threshold,
                         spike_fn=sa.MultiSpike,
                         reset_fn=sa.MembraneReset() if return_to_zero else sa.MembraneSubtract())


def random_network(seed: int, batch_size: int) -> tuple[nn.Sequential, tuple[int, int, int]]:
    """A random chip-valid sinabs network: 1-3 convs (kernel 1-5, stride 1-2, padding, optional
    bias, sum or average pooling of spikes), then 1-2 Linear layers; random thresholds and resets."""
    rng = np.random.default_rng(seed)
    while True:  # redraw until the Linear's kernel (the last map) fits the chip's 16x16
        net, shape, last = _draw(rng, batch_size)
        if last <= 12:
            break
    generator = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            bound = 6.0 / module.weight[0].numel() ** 0.5
            module.weight.data = (torch.rand(module.weight.shape, generator=generator) * 2 - 1) * bound
            if module.bias is not None:
                module.bias.data = (torch.rand(module.bias.shape, generator=generator) - 0.5) * 0.2
    return net, shape


def _draw(rng: np.random.Generator, batch_size: int):
    size = int(rng.choice([16, 20, 24, 32]))
    shape = (2, size, size)
    channels, h = 2, size
    layers: list[nn.Module] = []
    for _ in range(int(rng.integers(1, 4))):
        k = int(rng.choice([1, 3, 5]))
        stride = int(rng.choice([1, 2])) if h >= 8 else 1
        padding = int(rng.integers(0, k // 2 + 1))
        out = int(rng.choice([4, 8, 16]))
        layers.append(nn.Conv2d(channels, out, k, stride, padding, bias=bool(rng.random() < 0.3)))
        layers.append(iaf(batch_size, float(rng.uniform(0.3, 1.0)), bool(rng.random() < 0.3)))
        channels, h = out, (h + 2 * padding - k) // stride + 1
        if h >= 8 and rng.random() < 0.5:
            layers.append(nn.AvgPool2d(2) if rng.random() < 0.5 else sl.SumPool2d(2))
            h //= 2
    layers.append(nn.Flatten())
    features = channels * h * h
    for i in range(int(rng.integers(1, 3))):
        out = 10 if i else int(rng.choice([10, 16]))
        layers.append(nn.Linear(features, out, bias=False))
        layers.append(iaf(batch_size, float(rng.uniform(0.3, 1.0))))
        features = out
    return nn.Sequential(*layers), shape, h
