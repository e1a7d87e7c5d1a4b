"""Placing layers on cores: the memory formulas of the chip and a maximum bipartite matching.

Memory (docs/speck-hardware.md section 2; sinabs ``memory_summary``), in words:
kernel = c_in * 2^(ceil(log2(k_y*k_x)) + ceil(log2(c_out))); neuron = c_out * 2^(ceil(log2(H_out)) +
ceil(log2(W_out))) with the conv output before pooling; bias = c_out when the layer keeps a bias.
A layer may go on any core whose three memories hold it; the assignment is a maximum matching found
by augmenting paths with layers and cores visited in ascending order, so it is deterministic and
small networks land on cores 0, 1, 2, ... (cores 0 and 1 suit input layers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from asa_deploy.chip.lower import ChipLayer
from asa_deploy.chip.spec import ChipSpec
from asa_deploy.errors import CompileError

MEMORIES = ("kernel", "neuron", "bias")


def _pow2_bits(n: int) -> int:
    return math.ceil(math.log2(n)) if n > 1 else 0


def memory_words(layer: ChipLayer) -> dict[str, int]:
    c_out, c_in, ky, kx = layer.weight.shape
    _, h, w = layer.neuron_shape
    return {
        "kernel": c_in * 2 ** (_pow2_bits(ky * kx) + _pow2_bits(c_out)),
        "neuron": c_out * 2 ** (_pow2_bits(h) + _pow2_bits(w)),
        "bias": 0 if layer.bias is None else int(layer.bias.numel()),
    }


def core_capacity(spec: ChipSpec, core: int) -> dict[str, int]:
    c = spec.cores
    return {"kernel": c.kernel_memory[core], "neuron": c.neuron_memory[core],
            "bias": c.bias_memory[core]}


@dataclass
class Mapping:
    chip: str
    assignment: dict[int, int]     # layer index -> core id
    layer_names: list[str]
    memory: list[dict[str, int]]   # per layer

    def table(self, spec: ChipSpec) -> list[dict]:
        """One row per core, used or not: layer, used / available of each memory."""
        by_core = {core: layer for layer, core in self.assignment.items()}
        rows = []
        for core in range(spec.cores.count):
            cap = core_capacity(spec, core)
            layer = by_core.get(core)
            used = self.memory[layer] if layer is not None else {m: 0 for m in MEMORIES}
            rows.append({"core": core, "layer": None if layer is None else self.layer_names[layer],
                         **{f"{m}_used": used[m] for m in MEMORIES},
                         **{f"{m}_available": cap[m] for m in MEMORIES}})
        return rows

    def to_dict(self, spec: ChipSpec) -> dict:
        return {"chip": self.chip,
                "assignment": [{"layer": self.layer_names[i], "core": c, **self.memory[i]}
                               for i, c in sorted(self.assignment.items())],
                "cores": self.table(spec)}


def format_table(rows: list[dict]) -> str:
    header = (f"{'core':>4}  {'layer':<22} {'kernel used/avail':>19} {'neuron used/avail':>19} "
              f"{'bias used/avail':>15}")
    lines = [header, "-" * len(header)]
    def cell(row, m, width):
        return f"{row[f'{m}_used']:,}/{row[f'{m}_available']:,}".rjust(width)

    for r in rows:
        lines.append(f"{r['core']:>4}  {(r['layer'] or '-'):<22} {cell(r, 'kernel', 19)} "
                     f"{cell(r, 'neuron', 19)} {cell(r, 'bias', 15)}")
    return "\n".join(lines)


def map_layers(layers: list[ChipLayer], spec: ChipSpec) -> Mapping:
    """Assign every layer a distinct core whose memories hold it, or explain why none can."""
    memory = [memory_words(layer) for layer in layers]
    names = [layer.name for layer in layers]
    cores = range(spec.cores.count)
    if len(layers) > spec.cores.count:
        raise CompileError(f"the network has {len(layers)} layers; {spec.name} has "
                           f"{spec.cores.count} cores. Merge or remove layers")
    candidates = []
    for i, need in enumerate(memory):
        fits = [c for c in cores if all(need[m] <= core_capacity(spec, c)[m] for m in MEMORIES)]
        if not fits:
            raise CompileError(_no_core_message(names[i], need, spec, layers[i]))
        candidates.append(fits)
    core_of_layer: dict[int, int] = {}
    layer_of_core: dict[int, int] = {}

    def augment(i: int, seen: set[int]) -> bool:
        free = [c for c in candidates[i] if c not in layer_of_core]
        if free:  # a free core first, so layers keep the lowest cores in order
            core_of_layer[i], layer_of_core[free[0]] = free[0], i
            return True
        for c in candidates[i]:
            if c in seen:
                continue
            seen.add(c)
            if c not in layer_of_core or augment(layer_of_core[c], seen):
                core_of_layer[i], layer_of_core[c] = c, i
                return True
        return False

    for i in range(len(layers)):
        if not augment(i, set()):
            wanted = sorted({c for j in range(i + 1) for c in candidates[j]})
            rivals = [names[j] for j in range(i) if set(candidates[j]) & set(candidates[i])]
            raise CompileError(
                f"layer {names[i]} fits only cores {candidates[i]}; together with {rivals} the "
                f"layers need more of cores {wanted} than exist. Shrink a layer so that it fits a "
                f"larger-memory core (cores' kernel words {list(spec.cores.kernel_memory)}, neuron "
                f"words {list(spec.cores.neuron_memory)})")
    return Mapping(spec.name, dict(sorted(core_of_layer.items())), names, memory)


def _no_core_message(name: str, need: dict[str, int], spec: ChipSpec, layer: ChipLayer) -> str:
    """Which memory is short, by how much, and what would shrink it."""
    cores = range(spec.cores.count)
    holding = {m: [c for c in cores if need[m] <= core_capacity(spec, c)[m]] for m in MEMORIES}
    c_out, c_in, ky, kx = layer.weight.shape
    _, h, w = layer.neuron_shape
    fixes = {
        "neuron": f"reduce its output {c_out}x{h}x{w} (stride 2, or pooling before the neuron, "
                  f"halves H and W; or fewer channels)",
        "kernel": f"reduce c_in x kernel x c_out = {c_in} x {ky}x{kx} x {c_out} (fewer channels or "
                  f"a smaller kernel)",
        "bias": "compile with --bias drop or use fewer output channels",
    }
    short = [m for m in MEMORIES if not holding[m]]
    if short:
        parts = [f"{need[m]:,} {m} words, {need[m] - max(core_capacity(spec, c)[m] for c in cores):,}"
                 f" more than the largest core holds "
                 f"({max(core_capacity(spec, c)[m] for c in cores):,})" for m in short]
        return (f"layer {name} fits no core: it needs " + "; ".join(parts) + ". Fix: "
                + "; ".join(fixes[m] for m in short))
    parts = [f"{need[m]:,} {m} words (only cores {holding[m]} hold that)" for m in MEMORIES
             if len(holding[m]) < spec.cores.count]
    return (f"layer {name} fits no core: it needs " + " and ".join(parts) + ", and no core holds "
            "all of it. Fix: " + "; or ".join(fixes[m] for m in ("kernel", "neuron")))
