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
from asa_deploy.errors import AsaDeployError


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


def per_input_event(c_out: int, k: int, stride: tuple[int, int]) -> int:
    """Synops of one input event at an interior position of a core: C_out x the kernel offsets
    that land on an output neuron, ceil(k / stride) per axis (C_out x k^2 / stride^2, SynSense's
    formula, where the stride divides the kernel)."""
    sy, sx = stride
    return c_out * -(-k // sy) * -(-k // sx)


def input_cuts(config: ChipConfig, spec: ChipSpec) -> list[str]:
    """What would cut the input-driven synops of this config on ``spec``, with the factor each
    gives."""
    lines = []
    for cid in config.entry_cores():
        core = config.core(cid)
        c_out, k, (sy, sx) = core.neuron_shape[0], core.kernel_size, core.stride
        now = per_input_event(c_out, k, (sy, sx))
        strided = per_input_event(c_out, k, (2 * sy, 2 * sx))
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


@dataclass(frozen=True)
class FirstCoreCut:
    """One cheaper first core: ``param`` set to ``value`` (was ``was``), and the input-driven synops
    per event of the chip's first core before and after (``maps``: the cut network passes the
    design rules and the mapper; ``why``: what refuses it)."""

    what: str  # stride | kernel | channels
    param: str
    was: int
    value: int
    synops_before: int
    synops_after: int
    maps: bool
    why: str = ""

    @property
    def factor(self) -> float:
        return self.synops_after / self.synops_before

    def line(self) -> str:
        return (f"{self.what} {self.was} -> {self.value} (--param {self.param}={self.value}): "
                f"input-driven synops per event {self.synops_before:,} -> {self.synops_after:,} "
                f"(x{self.factor:.2f})")

    def to_dict(self) -> dict:
        return {"what": self.what, "param": self.param, "was": self.was, "value": self.value,
                "synops_per_input_event": [self.synops_before, self.synops_after],
                "factor": round(self.factor, 4), "maps": self.maps,
                **({"why": self.why} if self.why else {})}


def first_core_cuts(model_spec, num_classes: int, input_shape: tuple[int, int, int], sensor,
                    chip: ChipSpec, bias_policy: str | None = "drop") -> list[FirstCoreCut]:
    """Each cheaper first core the spec's params allow (stride x2, kernel -2, channels /2 of the
    first conv block, where that block names a param), on the network's shapes, checked with the
    same design rules and mapper as compile. Empty when the first block names no param."""
    from asa_deploy.chip.compile import check_network
    from asa_deploy.nn.network import build_network

    block = model_spec.blocks[0] if model_spec.blocks else {}
    if block.get("type") != "conv":
        return []

    def first_core(params: dict) -> tuple[int | None, str]:
        try:
            model = build_network(model_spec.with_overrides(params=params), num_classes).eval()
            lowered, violations, mapping, why = check_network(
                model, chip, input_shape=input_shape, sensor=sensor, bias_policy=bias_policy)
        except (AsaDeployError, RuntimeError) as exc:  # e.g. a map shrunk to nothing
            return None, str(exc)
        first = lowered.layers[0]
        cost = per_input_event(first.weight.shape[0], first.weight.shape[-1], first.stride)
        refusal = "; ".join(map(str, violations)) or (why or "")
        return cost, refusal

    before, _ = first_core({})
    cuts = []
    for what, key, default, cut in (("stride", "stride", 1, lambda v: 2 * v),
                                    ("kernel", "kernel", 3, lambda v: v - 2),
                                    ("channels", "out", None, lambda v: v // 2)):
        name = block.get(key, default)
        if not isinstance(name, str) or name not in model_spec.params:
            continue
        was = model_spec.params[name]
        while isinstance(was, str):  # a param naming another (c1: c)
            was = model_spec.params[was]
        value = cut(int(was))
        if value < 1 or value == was:
            continue
        after, why = first_core({name: value})
        if after is not None:
            cuts.append(FirstCoreCut(what, name, int(was), value, before, after, not why, why))
    return cuts
