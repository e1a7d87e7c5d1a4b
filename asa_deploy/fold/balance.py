"""Threshold balancing for LIF -> IAF: per-layer threshold multipliers matched to the LIF network's rates.

The chip's IAF has no leak, so with the LIF's threshold a converted layer integrates everything and
fires several times more often (measured on synthetic:gesture with dvs-small: NASFR 0.02 -> 0.15),
and the flood compounds layer after layer. Classic rate-based conversion rescales each layer's
threshold so that its firing matches the source network's; we do that layer by layer in order, each
multiplier picked from a grid to match the source layer's total spikes on calibration windows, with
the layers before it already balanced. Thresholds, lower bounds, initial states and per-neuron
thresholds scale together, so a fold strategy's offsets keep their meaning.
"""

from __future__ import annotations

import copy

import torch
from torch.utils.data import DataLoader

from asa_deploy.chip.lower import LoweredNetwork

GRID = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)


def _layer_spikes(model, modules, frames: torch.Tensor) -> list[float]:
    counts = [0.0] * len(modules)

    def hook(i):
        def record(_module, _inputs, out):
            counts[i] += float(out.detach().sum())
        return record

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(modules)]
    try:
        with torch.no_grad():
            model.reset_states()
            model(frames)
    finally:
        for h in handles:
            h.remove()
    return counts


def scale_layer(layer, k: float) -> None:
    layer.threshold *= k
    layer.min_v_mem *= k
    if layer.initial_state is not None:
        layer.initial_state = layer.initial_state * k
    if layer.per_neuron_threshold is not None:
        layer.per_neuron_threshold = layer.per_neuron_threshold * k


def balance_thresholds(lowered: LoweredNetwork, reference, dataset, *, windows: int = 32
                       ) -> tuple[LoweredNetwork, list[float]]:
    """A copy of ``lowered`` whose layer thresholds are scaled to match ``reference``'s (a
    SpikingNetwork with one spiking layer per chip layer) spike counts; returns the multipliers."""
    from asa_deploy.fold.finetune import ChipAwareNetwork

    frames = next(iter(DataLoader(dataset, batch_size=windows, shuffle=False)))[0]
    reference.eval()
    target = _layer_spikes(reference, [m for _, m in reference.spiking_layers()], frames)
    out = copy.deepcopy(lowered)
    if len(target) != len(out.layers):
        raise ValueError(f"{len(target)} spiking layers in the reference, {len(out.layers)} chip layers")
    chosen = []
    for i, layer in enumerate(out.layers):
        base = copy.deepcopy(layer)
        best = None
        for k in GRID:
            trial = copy.deepcopy(base)
            scale_layer(trial, k)
            out.layers[i] = trial
            net = ChipAwareNetwork(out, None)
            spikes = _layer_spikes(net, [m for _, m in net.spiking_layers()], frames)[i]
            error = abs(spikes - target[i])
            if best is None or error < best[0]:
                best = (error, k, trial)
        out.layers[i] = best[2]
        chosen.append(best[1])
    out.notes = [*out.notes, f"IAF thresholds balanced to the source rates: x{chosen}"]
    return out, chosen

