"""A differentiable synaptic-operation cost: each layer's spikes weighted by their fan-out on the chip.

One spike at position (y, x) of a layer updates, in the next core, ``C_out x`` the kernel offsets
that land on an integral position inside that core's neuron map (zero weights included, as the chip
reads them all). The per-position fan-out here is computed from the torch modules the way
``asa_deploy.chip.lower`` maps them to cores, and mirrors ``asa_deploy.chip.sim.fast.fanout_map``
(train may not import chip):

- a conv block (conv -> BN -> pool p -> neuron) is one core whose kernel is ``k + (p-1)*s`` and
  stride ``s*p`` (pooling of currents folded into the conv), same padding;
- an fc block is a core whose kernel covers its whole input map: every position reaches ``out``;
- a ``pool`` block after a neuron is that layer's destination sum pooling (positions pooled beyond
  the next map are dropped and cost nothing); before the first neuron, the DVS input pooling.

For a forward pass the cost is ``sum over spiking layers of sum(spikes x fan-out)``: network-driven
synops, differentiable through the spikes (surrogate gradients). The last layer feeds the readout
and costs nothing. Input events x the first core's fan-out (input-driven synops) are reported but
carry no gradient: no weight changes them. Summed over a window of T steps, the two equal the fast
simulator's ``synops - input_synops`` and ``input_synops`` for the same spikes and input frames; the
float network's own spikes differ from the chip's only by quantization and LIF -> IAF.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from asa_deploy.errors import ModelSpecError


def fanout_map(input_shape: tuple[int, int, int], c_out: int, kernel: tuple[int, int],
               stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """float64 [H, W]: neurons one input spike at (y, x) updates; chip/sim/fast.py's fanout_map."""
    _, h, w = input_shape

    def per_axis(size: int, k: int, s: int, pad: int) -> torch.Tensor:
        size_out = (size + 2 * pad - k) // s + 1
        pos = torch.arange(size)[:, None] + pad - torch.arange(k)[None, :]
        valid = (pos >= 0) & (pos % s == 0) & (pos // s < size_out)
        return valid.sum(dim=1).to(torch.float64)

    return c_out * torch.outer(per_axis(h, kernel[0], stride[0], padding[0]),
                               per_axis(w, kernel[1], stride[1], padding[1]))


def _reached(fan: torch.Tensor, shape: tuple[int, int], pool: int) -> torch.Tensor:
    """[H, W] at the source's resolution: the fan-out its position reaches through sum pooling."""
    ty, tx = torch.arange(shape[0]) // pool, torch.arange(shape[1]) // pool
    out = torch.zeros(shape, dtype=torch.float64)
    keep_y, keep_x = ty < fan.shape[0], tx < fan.shape[1]
    out[torch.nonzero(keep_y)[:, 0][:, None], torch.nonzero(keep_x)[:, 0][None, :]] = \
        fan[ty[keep_y]][:, tx[keep_x]]
    return out


@dataclass
class Fanouts:
    """Per-position synops of one event: of the input (``input``) and of each spiking layer."""

    input: torch.Tensor             # [H, W] at the network's input resolution
    layers: list[torch.Tensor]      # [H_i, W_i] per spiking layer, ([1, 1] for fc); last: zeros
    channels: list[int]             # neurons per position of each spiking layer

    def full_activity(self, T: int) -> float:
        """Network-driven synops per window if every neuron spiked once per step (normalisation)."""
        return max(1.0, T * sum(c * float(m.sum()) for c, m in zip(self.channels, self.layers,
                                                                     strict=True)))


def network_fanouts(model: nn.Module) -> Fanouts:
    """The fan-out maps of a ``SpikingNetwork``, as the lowering would put it on cores."""
    shape = (int(model.spec.input["channels"]), int(model.spec.input["height"]),
             int(model.spec.input["width"]))
    input_pool, flattened_from = 1, None
    cores: list[dict] = []  # per spiking layer: input shape, fan-out map, neuron shape, pool
    for i, block in enumerate(model.blocks):
        where = f"{model.spec.name}: block {i} ({block.kind})"
        if block.kind == "flatten":
            flattened_from = shape
            shape = (shape[0] * shape[1] * shape[2],)
        elif block.kind == "pool":
            k = _pool_kernel(block.synapse)
            if cores:
                cores[-1]["pool"] *= k
            else:
                input_pool *= k
            shape = (shape[0], shape[1] // k, shape[2] // k)
        elif block.kind == "fc":
            linear = block.synapse
            c, h, w = flattened_from or (shape[0], 1, 1)
            cores.append({"input": (c, h, w), "c_out": linear.out_features, "kernel": (h, w),
                          "stride": (1, 1), "padding": (0, 0), "pool": 1})
            shape, flattened_from = (linear.out_features,), None
        elif block.kind == "conv":
            conv, pool = block.synapse[0], 1
            for module in list(block.synapse)[1:]:
                if isinstance(module, (nn.AvgPool2d, nn.MaxPool2d)):
                    pool *= _pool_kernel(module)
            ky, kx = conv.kernel_size
            sy, sx = conv.stride
            kernel = (ky + (pool - 1) * sy, kx + (pool - 1) * sx)
            stride = (sy * pool, sx * pool)
            core = {"input": shape, "c_out": conv.out_channels, "kernel": kernel,
                    "stride": stride, "padding": tuple(conv.padding), "pool": 1}
            cores.append(core)
            shape = _neurons(core)
        else:
            raise ModelSpecError(f"{where}: no synops cost known for this block type")
    if not cores:
        raise ModelSpecError(f"{model.spec.name}: no spiking layer, so no synops to count")
    return core_fanouts(cores, input_pool)


def _neurons(core: dict) -> tuple[int, int, int]:
    _, h, w = core["input"]
    (ky, kx), (sy, sx), (py, px) = core["kernel"], core["stride"], core["padding"]
    return core["c_out"], (h + 2 * py - ky) // sy + 1, (w + 2 * px - kx) // sx + 1


def core_fanouts(cores: list[dict], input_pool: int = 1,
                 input_mask: torch.Tensor | None = None,
                 sources: list[list[int]] | None = None) -> Fanouts:
    """Fan-out maps of cores, each ``{input: (C, H, W), c_out, kernel, stride, padding, pool}``
    (pool: its destination sum pooling); ``input_pool``: the DVS layer's pooling; ``input_mask``:
    bool [H, W] at the entry cores' input, False where input pixels are killed; ``sources[i]``: the
    cores feeding core i (``[]``: the input; None: a chain). A core feeding two others (fan-out 2)
    costs the sum of both; a merge's sources land on their consumer's input map at the same
    positions (channel offsets change no fan-out)."""
    if sources is None:
        sources = [[]] + [[i] for i in range(len(cores) - 1)]
    fans = [fanout_map(c["input"], c["c_out"], c["kernel"], c["stride"], c["padding"])
            for c in cores]
    entries = [i for i, s in enumerate(sources) if not s]
    first = cores[entries[0]]
    size = (first["input"][1] * input_pool, first["input"][2] * input_pool)
    input_map = torch.zeros(size, dtype=torch.float64)
    for i in entries:
        entry = fans[i] if input_mask is None else fans[i] * input_mask.to(torch.float64)
        input_map += _reached(entry, size, input_pool)
    layers = []
    for j, core in enumerate(cores):
        shape = _neurons(core)[1:]
        fed = torch.zeros(shape, dtype=torch.float64)
        for i, srcs in enumerate(sources):
            if j in srcs:
                fed += _reached(fans[i], shape, core["pool"])
        layers.append(fed)
    return Fanouts(input_map, layers, [c["c_out"] for c in cores])


def _pool_kernel(module: nn.Module) -> int:
    k = module.kernel_size
    k = k[0] if isinstance(k, tuple | list) else k
    return int(k)


def synops_from_spikes(fanouts: Fanouts, frames: torch.Tensor,
                       spikes: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(network-driven [B], input-driven [B]) synops per window from the input frames
    [B, T, C, H, W] and each spiking layer's spikes ([B, T, C, H, W] or [B, T, F]); the first is
    differentiable through ``spikes``, the second is detached."""
    return synops_from_counts(fanouts, frames, [spikes_per_position(s) for s in spikes])


def spikes_per_position(spikes: torch.Tensor) -> torch.Tensor:
    """A layer's spikes [B, T, C, H, W] or [B, T, F] summed over time and channels: [B, H, W]
    ([B, 1, 1]), all the cost needs of them."""
    return spikes.sum(dim=(1, 2)) if spikes.dim() == 5 else spikes.sum(dim=1)[..., None, None]


def synops_from_counts(fanouts: Fanouts, frames: torch.Tensor,
                       counts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``synops_from_spikes`` from each layer's ``spikes_per_position``."""
    if len(counts) != len(fanouts.layers):
        raise ModelSpecError(f"{len(counts)} spike tensors for {len(fanouts.layers)} spiking layers")
    network = frames.new_zeros(frames.shape[0], dtype=torch.float32)
    for c, fan in zip(counts, fanouts.layers, strict=True):
        network = network + (c * fan.to(c.device, c.dtype)).flatten(1).sum(1)
    events = frames.detach().sum(dim=(1, 2)).to(torch.float64)
    h, w = fanouts.input.shape
    inputs = (events[:, :h, :w] * fanouts.input.to(frames.device)).flatten(1).sum(1)
    return network, inputs.float()


class CostMeter:
    """Forward hooks on a network's spiking layers that keep, for ``synops``, their spikes summed
    per position (``spikes_per_position``; the spikes themselves would stay in memory until
    ``synops``), in forward passes that autograd records: a training step's, not evaluation's.
    ``fanouts``: given for networks other than a ``SpikingNetwork`` (fold's chip-aware twin)."""

    def __init__(self, model: nn.Module, fanouts: Fanouts | None = None):
        self.fanouts = fanouts if fanouts is not None else network_fanouts(model)
        self.norm = 1.0
        self._spikes: list[torch.Tensor | None] = [None] * len(self.fanouts.layers)
        self._handles = [neuron.register_forward_hook(self._keeper(i))
                         for i, (_, neuron) in enumerate(model.spiking_layers())]

    def _keeper(self, i: int):
        def hook(_module, _inputs, output):
            if torch.is_grad_enabled():
                self._spikes[i] = spikes_per_position(output)
        return hook

    def synops(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(network-driven, input-driven) synops per window [B] of the last training forward on
        ``frames``."""
        counts = [s for s in self._spikes if s is not None]
        self._spikes = [None] * len(self.fanouts.layers)
        self.norm = self.fanouts.full_activity(int(frames.shape[1]))
        return synops_from_counts(self.fanouts, frames, counts)

    def penalty(self, network: torch.Tensor, inputs: torch.Tensor, weight: float,
                budget: float | None) -> torch.Tensor:
        """``weight x sum(cost) / norm`` (divide by the global batch for the mean per window);
        cost per window: its network-driven synops (no budget) or ``relu(total - budget)`` with
        total = network- + input-driven synops (a budget); ``norm``: the network-driven synops per
        window if every neuron fired once per step, so a weight means the same on any network."""
        cost = network if budget is None else F.relu(network + inputs - budget)
        return weight * cost.sum() / self.norm

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
