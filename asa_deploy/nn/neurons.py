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
  None makes chip discretization round small weights to zero; see docs/speck-hardware.md section 3). Its surrogate is
  2.0 wide (|v - 1| < 1): without a leak the membrane wanders far from threshold, and with width 1.0
  ``nmnist-speck`` reached 0.485 best validation accuracy in 6 epochs on N-MNIST against 0.92 with
  2.0 (MultiSpike with 1.0: 0.405); ``bash benchmarks/iaf_surrogate.sh``.

Training memory: sinabs's LIF builds an autograd graph per time step, which keeps 8 bytes per neuron
and step (a copy of the membrane and the reset mask as float32), and whose backward fills a zero
tensor of the whole [B, T, ...] input for every step. ``LIF`` here runs the same arithmetic over all
T steps as one autograd node that keeps 1 byte (the surrogate window and the reset mask as two bits;
``reset_grad``: the float32 membrane, from which the window follows, against sinabs's 12 bytes) and
writes each step's gradient in place: its neurons train about eight times faster than sinabs's, with
spikes and gradients equal to sinabs's bit for bit (tests/test_training_memory.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import sinabs.activation as sa
import sinabs.layers as sl
import torch
from torch.autograd.function import once_differentiable


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


class _LifSteps(torch.autograd.Function):
    """sinabs's LIF loop with ``SingleSpike``, a ``Rectangular`` surrogate and a reset to a value
    (or ``SpikeGradReset``): per step u = alpha * v + I, s = (u - threshold >= 0), v = u * (s == 0)
    + reset (``reset_grad``: v = u * (1 - s)). Inputs current [B, T, ...] and the start state v;
    outputs the spikes [B, T, ...] (float32, as sinabs's) and the end state. The backward makes
    autograd's operations on sinabs's graph, in its order: the gradients are equal bit for bit."""

    @staticmethod
    def forward(ctx, current, v, alpha, threshold, width, reset_value, reset_grad):
        ctx.set_materialize_grads(False)
        spikes = torch.empty(current.shape, dtype=torch.float32, device=current.device)
        # what the backward needs: the membrane u (reset_grad; the window follows from it), else
        # one byte per value holding the surrogate window (bit 0) and the reset mask (bit 1)
        kept = torch.empty_like(current) if reset_grad else \
            torch.empty(current.shape, dtype=torch.uint8, device=current.device)
        for t in range(current.shape[1]):
            u = alpha * v + current[:, t]
            s = (u - threshold >= 0).float()
            spikes[:, t] = s
            if reset_grad:
                kept[:, t] = u
                v = u * (1 - s)
            else:
                silent = s == 0
                keep = silent.float()
                torch.add(_window(u, threshold, width).to(torch.uint8), silent.to(torch.uint8),
                          alpha=2, out=kept[:, t])
                v = u * keep + reset_value
        ctx.save_for_backward(kept, alpha, threshold)
        ctx.width, ctx.reset_grad = width, reset_grad
        return spikes, v

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_spikes, grad_v):
        kept, alpha, threshold = ctx.saved_tensors
        # autograd adds every step's gradient to zeros of the whole input: the same sums, in place
        grad_current = torch.zeros_like(kept, dtype=torch.float32)
        for t in reversed(range(kept.shape[1])):
            grad_s = None if grad_spikes is None else grad_spikes[:, t]
            if ctx.reset_grad:
                u = kept[:, t]
                window = _window(u, threshold, ctx.width)
                keep = 1 - (u - threshold >= 0).float()
                if grad_v is not None:  # the reset v = u * (1 - s) sends -grad_v * u to the spike
                    through_reset = -(grad_v * u)
                    grad_s = through_reset if grad_s is None else grad_s + through_reset
            else:
                window = kept[:, t] & 1
                keep = (kept[:, t] >> 1).float()
            grad_u = None if grad_s is None else grad_s * (window.float() / ctx.width)
            if grad_v is not None:
                grad_u = grad_v * keep if grad_u is None else grad_u + grad_v * keep
            if grad_u is None:
                continue
            grad_current[:, t] += grad_u
            grad_v = grad_u * alpha
        return grad_current, grad_v, None, None, None, None, None


def _window(u: torch.Tensor, threshold: torch.Tensor, width: float) -> torch.Tensor:
    """Where the rectangular surrogate is non-zero: |u - threshold| < width / 2 (bool)."""
    return (u - threshold).abs() < width / 2


class LIF(sl.LIF):
    """sinabs's ``LIF``; with autograd on, the neurons of ``make_neuron`` run their T steps as one
    node (``_LifSteps``), any other configuration sinabs's own loop."""

    def forward(self, input_data: torch.Tensor) -> torch.Tensor:
        if not self._steps_apply(input_data):
            return super().forward(input_data)
        batch_size, _, *trailing = input_data.shape
        shape = (batch_size, *trailing)
        # sinabs's state handling (sl.LIF.forward)
        if not self.is_state_initialised() or not self.has_trailing_dimension(trailing):
            self.init_state_with_shape(shape)
        elif not self.state_has_shape(shape):
            self.handle_state_batch_size_mismatch(batch_size)
        spikes, self.v_mem = _LifSteps.apply(
            input_data, self.v_mem, self.alpha_mem_calculated, self.spike_threshold,
            float(self.surrogate_grad_fn.width), float(getattr(self.reset_fn, "reset_value", 0.0)),
            type(self.reset_fn) is SpikeGradReset)
        self.i_syn, self.recordings = None, {}
        self.firing_rate = spikes.mean()
        return spikes

    def _steps_apply(self, x: torch.Tensor) -> bool:
        """Autograd records this forward, and the neuron is one ``_LifSteps`` reproduces."""
        return (torch.is_grad_enabled() and x.dtype == torch.float32 and x.dim() >= 2
                and x.shape[1] > 0 and self.spike_fn is sa.SingleSpike
                and type(self.surrogate_grad_fn) is Rectangular
                and type(self.reset_fn) in (sa.MembraneReset, SpikeGradReset)
                and not self.train_alphas and self.tau_syn is None and not self.norm_input
                and self.min_v_mem is None and not self.record_states
                and not self.tau_mem.requires_grad and self.spike_threshold is not None
                and not self.spike_threshold.requires_grad)


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
        neuron = LIF(
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
