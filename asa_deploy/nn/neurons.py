"""Spiking neurons, built from sinabs layers.

- ``lif``: the paper's neuron (Yao et al. 2023): u = 0.3 * v + I, spike when u >= 0.3, hard reset to 0,
  rectangular surrogate gradient of height 2 for |u - 0.3| < 0.25. sinabs's ``LIF`` with
  ``norm_input=False`` computes exactly u = alpha * v + I, so only the surrogate is ours.
- ``iaf``: the chip's neuron: no leak, subtract reset, a finite ``min_v_mem`` (sinabs's default of
  None makes chip discretization round small weights to zero; see ecosystem.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import sinabs.activation as sa
import sinabs.layers as sl
import torch


@dataclass
class Rectangular:
    """Rectangular surrogate gradient: 1/width inside |v - threshold| < width / 2, else 0."""

    width: float = 0.5

    def __call__(self, v_mem: torch.Tensor, spike_threshold: torch.Tensor) -> torch.Tensor:
        return ((v_mem - spike_threshold).abs() < self.width / 2).float() / self.width


NEURON_DEFAULTS = {
    "lif": {"decay": 0.3, "threshold": 0.3, "surrogate_width": 0.5},
    "iaf": {"threshold": 1.0, "min_v_mem": -1.0, "multi_spike": False, "surrogate_width": 1.0},
}


def make_neuron(kind: str, **options) -> sl.StatefulLayer:
    """A sinabs neuron layer taking and returning [B, T, ...]."""
    if kind not in NEURON_DEFAULTS:
        raise ValueError(f"unknown neuron {kind!r}; choose one of {sorted(NEURON_DEFAULTS)}")
    unknown = set(options) - set(NEURON_DEFAULTS[kind])
    if unknown:
        raise ValueError(f"neuron {kind!r} has no option(s) {sorted(unknown)}; "
                         f"known: {sorted(NEURON_DEFAULTS[kind])}")
    opts = {**NEURON_DEFAULTS[kind], **options}
    surrogate = Rectangular(width=float(opts["surrogate_width"]))
    if kind == "lif":
        return sl.LIF(
            tau_mem=-1.0 / math.log(opts["decay"]),
            spike_threshold=torch.tensor(float(opts["threshold"])),
            spike_fn=sa.SingleSpike,
            reset_fn=sa.MembraneReset(),
            surrogate_grad_fn=surrogate,
            norm_input=False,
        )
    return sl.IAF(
        spike_threshold=torch.tensor(float(opts["threshold"])),
        spike_fn=sa.MultiSpike if opts["multi_spike"] else sa.SingleSpike,
        reset_fn=sa.MembraneSubtract(),
        surrogate_grad_fn=surrogate,
        min_v_mem=float(opts["min_v_mem"]),
    )
