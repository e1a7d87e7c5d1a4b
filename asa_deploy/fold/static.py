"""Static folding, exact in float (docs/design.md section 4, steps 1-2).

The static model replaces each attention layer by its calibrated mean gain, X_out = G * X. Split
G(c, y, x) = g_c * R(c, y, x) with g_c = max over (y, x) of G, so 0 <= R <= 1. g_c scales the
channel's synapse (the BatchNorm affine when there is one, else the conv), and R moves into the
neuron: scaling a neuron's input by R is the same as dividing its threshold, its subtracted reset
amount and its lower bound by R (the state is v/R throughout, for IF and LIF alike). The folded
network therefore has per-neuron thresholds and no attention, and reproduces the static model's spikes
exactly (tested). A core holds one threshold, so ``asa_deploy.fold.strategies`` lowers R further.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from asa_deploy.chip.lower import LoweredNetwork, lower
from asa_deploy.fold.calibrate import LayerCalibration

R_FLOOR = 1e-6  # R = 0 would need an infinite threshold; 1e-6 x threshold is never reached in practice


class StaticGain(nn.Module):
    """The static attention model: multiply the neuron input [N, T, C, H, W] by a fixed G [C, H, W]."""

    def __init__(self, gain: torch.Tensor):
        super().__init__()
        self.register_buffer("gain", gain.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain


def static_network(model, calibration: dict[str, LayerCalibration]):
    """A copy of ``model`` whose attention layers are replaced by their mean gain G."""
    static = copy.deepcopy(model)
    for i, block in enumerate(static.blocks):
        name = f"block{i}.{block.kind}"
        if block.attention is not None:
            block.attention = StaticGain(calibration[name].gain_mean)
    static.reset_states()
    return static


@dataclass
class FoldResult:
    folded: nn.Module                # no attention; per-neuron thresholds (float, exact)
    channel_only: nn.Module          # no attention; g_c applied, scalar thresholds (what a core holds)
    R: dict[str, torch.Tensor]       # per folded layer, [C, H, W] in [0, 1]


def fold_static(model, calibration: dict[str, LayerCalibration]) -> FoldResult:
    """Fold every calibrated attention layer of ``model`` (a SpikingNetwork) into g_c and R."""
    folded = copy.deepcopy(model)
    channel_only = copy.deepcopy(model)
    R = {}
    for i, (block, plain) in enumerate(zip(folded.blocks, channel_only.blocks, strict=True)):
        name = f"block{i}.{block.kind}"
        if block.attention is None:
            continue
        gain = calibration[name].gain_mean
        g = gain.amax(dim=(1, 2))
        ratio = torch.where(g[:, None, None] > 0, gain / g.clamp_min(1e-12)[:, None, None],
                            torch.ones_like(gain))
        for net_block in (block, plain):
            _scale_channels(net_block.synapse, g, name)
            net_block.attention = None
        _divide_threshold(block.neuron, ratio.clamp_min(R_FLOOR))
        R[name] = ratio
    for net in (folded, channel_only):
        net.attention_kind = "none"
        net.reset_states()
    return FoldResult(folded, channel_only, R)


def _scale_channels(synapse: nn.Module, g: torch.Tensor, name: str) -> None:
    """Multiply the synapse's output channel c by g[c] (BN affine if present, else conv)."""
    modules = list(synapse) if isinstance(synapse, nn.Sequential) else [synapse]
    bn = [m for m in modules if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        if bn:
            bn[-1].weight.mul_(g)
            bn[-1].bias.mul_(g)
            return
        conv = [m for m in modules if isinstance(m, (nn.Conv2d, nn.Linear))]
        if not conv:
            raise ValueError(f"{name}: no conv or BN to carry the channel gain")
        conv[0].weight.mul_(g.view(-1, *([1] * (conv[0].weight.dim() - 1))))
        if conv[0].bias is not None:
            conv[0].bias.mul_(g)


def _divide_threshold(neuron: nn.Module, ratio: torch.Tensor) -> None:
    threshold = neuron.spike_threshold.detach() / ratio
    neuron.spike_threshold = nn.Parameter(threshold, requires_grad=False)
    if getattr(neuron, "min_v_mem", None) is not None:
        neuron.min_v_mem = nn.Parameter(neuron.min_v_mem.detach() / ratio, requires_grad=False)


def lower_folded(result: FoldResult, input_shape: tuple[int, int, int], *,
                 bias_policy: str | None) -> LoweredNetwork:
    """Chip layers of the folded network: g_c in the weights, R as per-neuron thresholds theta / R
    (float only; a strategy must replace them before quantization)."""
    lowered = lower(result.channel_only, input_shape, bias_policy=bias_policy)
    for layer in lowered.layers:
        if layer.name in result.R:
            layer.per_neuron_threshold = layer.threshold / result.R[layer.name].clamp_min(R_FLOOR)
    return lowered
