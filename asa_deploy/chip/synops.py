"""Synaptic operations known from a chip config alone, before any activity is simulated.

What one input event, or one spike of a core, costs each core it reaches, counted as the exact
simulator counts it (output channels x kernel offsets landing inside the output map, zero weights
included). Input-driven synops (events entering the chip) do not depend on what the network
learns, so ``compile`` shows them next to what would cut them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from asa_deploy.chip.config import READOUT_CORE, ChipConfig
from asa_deploy.chip.sim.fast import fanout_map
from asa_deploy.chip.spec import ChipSpec


@dataclass(frozen=True)
class EventCost:
    """Synops in core ``target`` per event from ``source`` (a core id; None: input events)."""

    source: int | None
    target: int
    mean: float  # averaged over the source's positions (border and dropped positions cost less)
    max: int     # the costliest position (an interior one)


def event_costs(config: ChipConfig) -> list[EventCost]:
    """Per-event synops of every connection: input -> entry cores first, then core -> core."""
    costs = []
    for cid in config.entry_cores():
        fan = fanout_map(config.core(cid))
        costs.append(EventCost(None, cid, float(fan.mean()), int(fan.max())))
    for core in config.cores:
        _, h, w = core.neuron_shape
        for d in core.destinations:
            if d.core == READOUT_CORE:
                continue
            fan = fanout_map(config.core(d.core))
            ty, tx = np.arange(h) // d.pooling, np.arange(w) // d.pooling
            ty, tx = ty[ty < fan.shape[0]], tx[tx < fan.shape[1]]  # pooled beyond the map: dropped
            reached = fan[np.ix_(ty, tx)]
            costs.append(EventCost(core.core, d.core, float(reached.sum() / (h * w)),
                                   int(reached.max(initial=0))))
    return costs


def input_cuts(config: ChipConfig, spec: ChipSpec) -> list[str]:
    """What would cut the input-driven synops of this config on ``spec``, with the factor each
    gives."""
    lines = []
    for cid in config.entry_cores():
        core = config.core(cid)
        c_out, k, (sy, sx) = core.neuron_shape[0], core.kernel_size, core.stride
        now = c_out * -(-k // sy) * -(-k // sx)
        strided = c_out * -(-k // (2 * sy)) * -(-k // (2 * sx))
        lines.append(f"core {cid} ({core.name}) takes the input events: {c_out} channels x "
                     f"{-(-k // sy)}x{-(-k // sx)} kernel offsets = {now:,} synops per event "
                     f"(kernel {k}, stride {sy}x{sx})")
        if 2 * sy <= k and 2 * sx <= k:
            lines.append(f"  stride {2 * sy} in {core.name}: {strided:,} per event "
                         f"(x{strided / now:.2f})")
        if c_out > 1:  # a one-channel entry core (e.g. a spiking gate) has none to drop
            lines.append(f"  fewer channels in {core.name}: linear, e.g. {c_out // 2} channels "
                         f"-> {now * (c_out // 2) // c_out:,} per event")
    dvs = config.dvs
    if dvs is not None:
        py, px = dvs.pooling
        most = max(spec.dvs.poolings)
        room = ("the chip's maximum" if max(py, px) >= most
                else f"the chip allows up to {most}x{most}")
        lines.append(f"  input pooling (DVS layer, now {py}x{px}, {room}): pooling merges no "
                     f"events, each costs the same; it pays when the first kernel shrinks with it "
                     f"(half the kernel size over the same sensor area: about x0.25)")
        lines.append(f"  pixel kill / ROI: an event of a killed or cut pixel costs nothing (now "
                     f"{len(dvs.killed_pixels)} pixels killed); hot pixels first")
    else:
        lines.append("  no DVS layer: events come from the host, so fewer or pooled events from "
                     "the host cut them")
    return lines
