"""Spiking neurons, built from sinabs layers.

- ``lif``: the paper's neuron (Yao et al. 2023): u = 0.3 * v + I, spike when u >= 0.3, hard reset to 0,
  rectangular surrogate gradient. sinabs's ``LIF`` with ``norm_input=False`` computes exactly
  u = alpha * v + I, so only the surrogate is ours. Its default width is 1.0 (height 1 for
  |u - 0.3| < 0.5), not the paper's 0.5: with our short CPU budgets (a few hundred steps instead of
  200 epochs) the paper's window left the output layer silent on N-MNIST (train accuracy 0.32 after
  150 steps, against 0.55 with width 1.0). ``neuron_options: {surrogate_width: 0.5}`` restores it.
  Its reset is sinabs's ``v * (s == 0)``, whose gradient does not reach the spike (the reset is cut
  from the graph); ``reset_grad: true`` resets as ``v * (1 - s)``, so the gradient flows through
  the spike as in the paper's code (``--recipe paper`` sets both).
- ``iaf``: the chip's neuron: no leak, subtract reset, a finite ``min_v_mem`` (sinabs's default of
  None makes chip discretization round small weights to zero; see ecosystem.md). Its surrogate is
  2.0 wide (|v - 1| < 1): without a leak the membrane wanders far from threshold, and with width 1.0
  ``nmnist-speck`` reached 0.485 best validation accuracy in 6 epochs on N-MNIST against 0.92 with
  2.0 (MultiSpike with 1.0: 0.405); ``bash benchmarks/iaf_surrogate.sh``.
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


@dataclass
class SpikeGradReset(sa.MembraneReset):
    """Hard reset to 0 written as v * (1 - s): the gradient reaches the spike (the paper's reset).
    A ``MembraneReset`` to 0 in the forward pass, so the chip lowering treats it as one."""

    def __call__(self, spikes: torch.Tensor, state: dict, spike_threshold: torch.Tensor) -> dict:
        return {**state, "v_mem": state["v_mem"] * (1 - spikes)}


NEURON_DEFAULTS = {
    "lif": {"decay": 0.3, "threshold": 0.3, "surrogate_width": 1.0, "reset_grad": False},
    "iaf": {"threshold": 1.0, "min_v_mem": -1.0, "multi_spike": False, "surrogate_width": 2.0},
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
        neuron = sl.LIF(
            tau_mem=-1.0 / math.log(opts["decay"]),
            spike_threshold=torch.tensor(float(opts["threshold"])),
            spike_fn=sa.SingleSpike,
            reset_fn=SpikeGradReset() if opts["reset_grad"] else sa.MembraneReset(),
            surrogate_grad_fn=surrogate,
            norm_input=False,
        )
        neuron.tau_mem.requires_grad_(False)  # the paper's decay is fixed, not learned
        return neuron
    return sl.IAF(
        spike_threshold=torch.tensor(float(opts["threshold"])),
        spike_fn=sa.MultiSpike if opts["multi_spike"] else sa.SingleSpike,
        reset_fn=sa.MembraneSubtract(),
        surrogate_grad_fn=surrogate,
        min_v_mem=float(opts["min_v_mem"]),
    )
