"""Figures more than one stage computes, defined once at the bottom of the package: training's
validation (``train.evaluation``) and the redundancy analysis (``analysis``) report the same
NASFR, and neither stage imports the other (docs/design.md section 5)."""

from __future__ import annotations

from collections.abc import Mapping


def nasfr(sfr_per_layer: Mapping[str, float], neurons_per_layer: Mapping[str, int]) -> float:
    """NASFR = sum_l SFR_l N_l / sum_l N_l: the network average spike firing rate.

    Weighted by neuron count so that it equals total spikes / (T x all neurons x samples).
    """
    if set(sfr_per_layer) != set(neurons_per_layer):
        raise ValueError(
            f"nasfr needs the same layers in both dicts; got {sorted(sfr_per_layer)} and "
            f"{sorted(neurons_per_layer)}"
        )
    total = sum(neurons_per_layer.values())
    return sum(sfr_per_layer[k] * neurons_per_layer[k] for k in sfr_per_layer) / total
