"""Lowering the folded per-neuron factor R to what a chip's cores can hold (docs/design.md section 4, step 3).

A folded layer has g_c in its weights and a per-neuron threshold theta / R; a core has one threshold.
What each strategy keeps of R:

- ``channel``: nothing (threshold theta everywhere): only g_c survives. Needs no capability.
- ``offset``: a neuron with threshold theta / R needs theta (1/R - 1) more input before its first
  spike; it starts at that negative value instead (``neurons_initial_value``), a dead zone that holds
  until its first spike. States are reset to these values at the start of every window (the
  simulators do it per window; on the chip ``reset_states`` rewrites ``neurons_initial_value``), so
  the offset acts once per window, not after every spike. Offsets deeper than ``MAX_OFFSET`` x theta
  are clipped (they would cost state precision) and counted; the layer's lower bound min_v_mem is
  lowered to hold the deepest offset.
- ``kill``: neurons with R below ``kill_below`` are switched off: per-neuron kill bits where the chip
  has them (dynapcnn), else started at the lower bound (Speck: nearly silent for a window). Others
  keep threshold theta.
- ``offset+kill``: kill below ``kill_below``, offsets elsewhere.

The input mask (``input_mask``) turns the first attention layer's mean gain into DVS pixel kills and a
region of interest, where the chip has them. Which strategy serves a chip best is measured by the
fold stage (it evaluates every strategy the chip supports), not assumed here.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from asa_deploy.chip.lower import LoweredNetwork
from asa_deploy.chip.spec import ChipSpec
from asa_deploy.errors import AsaDeployError

STRATEGIES = ("channel", "offset", "kill", "offset+kill")
MAX_OFFSET = 8.0  # deepest initial offset, in thresholds


def supported_strategies(spec: ChipSpec) -> list[str]:
    out = ["channel"]
    if spec.has("per_neuron_initial_value"):
        out += ["offset", "kill", "offset+kill"]
    elif spec.has("per_neuron_kill"):
        out += ["kill"]
    return out


def apply_strategy(lowered: LoweredNetwork, strategy: str, spec: ChipSpec, *,
                   kill_below: float = 0.1) -> tuple[LoweredNetwork, dict[str, dict]]:
    """A copy of ``lowered`` with every per-neuron threshold replaced as ``strategy`` says, and a
    per-layer report of what was kept and lost."""
    if strategy not in STRATEGIES:
        raise AsaDeployError(f"fold strategy {strategy!r} unknown; use one of {STRATEGIES}")
    available = supported_strategies(spec)
    if strategy not in available:
        needs = "per-neuron initial values" if "offset" in strategy else "per-neuron kill bits or initial values"
        raise AsaDeployError(f"strategy {strategy!r} needs {needs}, which {spec.name} lacks; "
                             f"{spec.name} supports {available}")
    out = copy.deepcopy(lowered)
    report = {}
    for layer in out.layers:
        if layer.per_neuron_threshold is None:
            continue
        theta = layer.threshold
        ratio = (theta / layer.per_neuron_threshold).clamp(0, 1)
        layer.per_neuron_threshold = None
        entry = {"R_mean": float(ratio.mean()), "R_min": float(ratio.min()),
                 "R_below_kill": float((ratio < kill_below).float().mean())}
        killed = ratio < kill_below if "kill" in strategy else torch.zeros_like(ratio, dtype=torch.bool)
        state = torch.zeros_like(ratio)
        if "offset" in strategy:
            wanted = -theta * (1 / ratio.clamp_min(1e-6) - 1)
            floor = -MAX_OFFSET * theta
            entry["offset_clipped"] = float(((wanted < floor) & ~killed).float().mean())
            state = torch.where(killed, state, wanted.clamp_min(floor))
        if killed.any():
            if spec.has("per_neuron_kill"):
                layer.kill = killed
            else:
                state = torch.where(killed, torch.full_like(state, min(layer.min_v_mem, state.min())),
                                    state)
        entry["killed"] = float(killed.float().mean())
        if bool((state != 0).any()):
            layer.initial_state = state
            layer.min_v_mem = min(layer.min_v_mem, float(state.min()))
        entry["residual"] = _residual(ratio, state, killed, theta)
        report[layer.name] = entry
    out.notes = [*out.notes, f"per-neuron thresholds lowered with strategy {strategy!r}"]
    return out, report


def _residual(ratio: torch.Tensor, state: torch.Tensor, killed: torch.Tensor, theta: float) -> float:
    """How much of R the lowering misses, as the mean relative error of the input each neuron needs
    before its first spike: folded theta / R against lowered theta - state (inf for killed: 0 error
    when R is near 0, counted as matched)."""
    needed = theta / ratio.clamp_min(1e-6)
    lowered = theta - state
    error = ((lowered - needed).abs() / needed).where(~killed, torch.zeros_like(needed))
    return float(error.mean())


def input_mask(gain: torch.Tensor, input_shape: tuple[int, int, int], *,
               keep: float = 0.5) -> torch.Tensor:
    """Input pixels to keep (bool [H, W] at the network input): the ``keep`` share of them (at
    least one) where the first attention layer's channel-mean gain, resized to the input, is
    highest. A share rather than a level relative to the maximum: on N-MNIST the mean gain never
    fell below half its maximum, so a level of 0.1 masked nothing. Pixels tied at the cut are all
    kept, so the share kept can exceed ``keep``."""
    mean = gain.mean(0)
    resized = nn.functional.interpolate(mean[None, None], size=input_shape[1:], mode="nearest")[0, 0]
    finite = resized[torch.isfinite(resized)]
    if finite.numel() == 0:
        raise AsaDeployError("the input mask would kill every input pixel: the first attention "
                             "layer's calibrated gain is not finite anywhere; recalibrate (fold "
                             "again), or drop --input-mask")
    count = max(1, round(keep * resized.numel()))
    cut = torch.sort(finite, descending=True).values[min(count, finite.numel()) - 1]
    return torch.isfinite(resized) & (resized >= cut)
