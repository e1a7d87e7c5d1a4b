"""Plain helpers shared by several test modules."""

import numpy as np
import sinabs.layers as sl
import torch
import torch.nn as nn

from asa_deploy.data.events import EVENT_DTYPE


def random_events(n: int, *, width: int = 34, seed: int = 0) -> np.ndarray:
    """n valid events on a width x width sensor over 300 ms, sorted by time."""
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, dtype=EVENT_DTYPE)
    ev["x"] = rng.integers(0, width, n)
    ev["y"] = rng.integers(0, width, n)
    ev["t"] = np.sort(rng.integers(0, 300_000, n))
    ev["p"] = rng.integers(0, 2, n)
    return ev


def two_core_net() -> nn.Sequential:
    """A 2x32x32 -> 3 class IAF network of two cores with non-negative weights, so it spikes readily."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), sl.IAFSqueeze(batch_size=1, min_v_mem=-1.0),
                        sl.SumPool2d(4), nn.Flatten(), nn.Linear(4 * 8 * 8, 3, bias=False),
                        sl.IAFSqueeze(batch_size=1, min_v_mem=-1.0))
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.weight.data = module.weight.data.abs()
    return net
