"""Lowering a ``SpikingGraph`` (branches and merges) to chip layers plus the topology between them.

Each node becomes one core, lowered by the chain lowering's own rules (``chip.lower``: BN folded,
pooling of currents folded into the conv, LIF -> IAF, bias policy), so only the wiring is new:

- A node's trailing pooling of spikes is the sum pooling of every destination of its core; an
  AvgPool multiplies the input-channel slice it feeds in each consumer's weights by 1/k^2 (exact
  on spike counts, as in a chain).
- A concatenating merge: the consumer's input channels are [first source's, second source's, ...]
  (edge order); the k-th source's destination has ``feature_shift`` = the channels before it. A sum
  merge (sinabs's ``Merge``): every source lands at ``feature_shift`` 0 on the same channels.
- The graph's input feeds its entry nodes through the DVS layer's destinations (at most
  ``dvs.max_destinations``), or one entry core when host events enter a core directly.

Chip limits, each a named ``Violation`` listed with the design rules (``graph_violations``): a
node's fan-out against ``limits.fan_out`` of the hw_config (destinations per core), the input's
against the DVS layer's destinations, and the node count against the cores. Shapes a core cannot
receive (a merge of unequal spatial shapes, the input merged with a core's spikes, pooling before a
node's synapse) are refused at lowering, naming the node and the rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from asa_deploy.chip.config import Destination
from asa_deploy.chip.lower import BIAS_POLICIES, LoweredNetwork, _Builder, _walk
from asa_deploy.chip.rules import Violation
from asa_deploy.chip.spec import ChipSpec
from asa_deploy.errors import CompileError
from asa_deploy.nn.graph import INPUT, SpikingGraph, node_error


@dataclass
class LoweredGraph(LoweredNetwork):
    """Chip layers in topological order (the output last) and who feeds whom.

    ``sources[i]``: the layers feeding layer i, in merge order (``[]``: the graph's input);
    ``merges[i]``: ``"cat"`` or ``"sum"``."""

    sources: list[list[int]] = field(default_factory=list)
    merges: list[str] = field(default_factory=list)

    def to_sequential(self, batch_size: int = 1):
        raise CompileError("a lowered graph has branches or merges, not a chain: compile it "
                           "(chip.compile.compile_network) and run the fast simulator instead")

    def entries(self) -> list[int]:
        return [i for i, s in enumerate(self.sources) if not s]

    def consumers(self, j: int) -> list[int]:
        return [i for i, s in enumerate(self.sources) if j in s]

    def feature_shift(self, i: int, j: int) -> int:
        """Where source j's channels start in layer i's input."""
        if self.merges[i] == "sum":
            return 0
        before = self.sources[i][:self.sources[i].index(j)]
        return sum(self.layers[k].output_shape[0] for k in before)

    def destinations(self, j: int, assignment: dict[int, int]) -> list[Destination]:
        """Layer j's core's destinations, consumers in topological order."""
        return [Destination(assignment[i], self.layers[j].pool, self.feature_shift(i, j))
                for i in self.consumers(j)]

    def describe(self, assignment: dict[int, int] | None = None) -> list[dict]:
        """Every edge, for mapping.json: layer names, cores, pooling and feature shift."""
        rows = []
        for i, srcs in enumerate(self.sources):
            for j in srcs or [None]:
                row = {"from": INPUT if j is None else self.layers[j].name, "to": self.layers[i].name,
                       "pooling": 1 if j is None else self.layers[j].pool,
                       "feature_shift": 0 if j is None else self.feature_shift(i, j)}
                if assignment is not None:
                    row.update(from_core=None if j is None else assignment[j], to_core=assignment[i])
                rows.append(row)
        return rows


def lower_graph(graph: SpikingGraph, input_shape: tuple[int, int, int], *,
                bias_policy: str | None = None) -> LoweredGraph:
    """One chip layer per node of ``graph`` (eval mode), in its topological order."""
    if bias_policy not in (None, *BIAS_POLICIES):
        raise CompileError(f"bias policy {bias_policy!r} unknown; use one of {BIAS_POLICIES}")
    input_shape = tuple(int(s) for s in input_shape)
    index = {name: i for i, name in enumerate(graph.order)}
    layers, notes, scales = [], [], []
    sources: list[list[int]] = []
    for name in graph.order:
        srcs = graph.sources[name]
        if INPUT in srcs and len(srcs) > 1:
            raise CompileError(node_error(
                name, "input_merge", f"merges the graph's input with {[s for s in srcs if s != INPUT]}",
                "feed it from the input alone or from nodes alone (input events carry no feature shift)"))
        src_index = [] if srcs == [INPUT] else [index[s] for s in srcs]
        shape = input_shape if not src_index else _merged_shape(graph, name, src_index, layers)
        builder = _Builder(shape, bias_policy)
        for module_name, module in _walk(graph.nodes[name], name):
            builder.add(module_name, module)
        if builder.input_pool > 1:
            raise CompileError(node_error(
                name, "pool_before_synapse", f"pools its input by {builder.input_pool} before its "
                f"synapse; a core pools only its output spikes",
                "move the pooling to the end of the node(s) feeding it (or into the DVS input)"))
        scale, builder.next_weight_scale = builder.next_weight_scale, 1.0
        lowered = builder.finish()
        if len(lowered.layers) != 1:
            raise CompileError(node_error(
                name, "one_core", f"holds {len(lowered.layers)} synapse -> neuron layers "
                f"({[layer.name for layer in lowered.layers]}); a node is one core",
                "split it into one node per synapse -> neuron pair"))
        layer = lowered.layers[0]
        if layer.weight.shape[1] != shape[0]:
            raise CompileError(node_error(
                name, "input_channels", f"its synapse takes {layer.weight.shape[1]} channels, its "
                f"input {srcs}{' (' + graph.merge_of(name) + ')' if len(srcs) > 1 else ''} gives "
                f"{shape[0]}", "match the synapse's input channels to what its sources send"))
        layer.name = name
        _apply_source_scales(layer, graph.merge_of(name), src_index, layers, scales)
        layers.append(layer)
        scales.append(scale)
        notes += lowered.notes
        sources.append(src_index)
    if scales[-1] != 1.0:
        notes.append(f"{graph.output}: final AvgPool of spikes kept as sum pooling (class ranking "
                     f"unchanged)")
    return LoweredGraph(input_shape, 1, layers, notes, sources=sources,
                        merges=[graph.merge_of(n) for n in graph.order])


def _merged_shape(graph: SpikingGraph, name: str, src_index: list[int], layers) -> tuple[int, int, int]:
    shapes = [layers[j].output_shape for j in src_index]
    if len(shapes) == 1:
        return shapes[0]
    srcs = graph.sources[name]
    if len({s[1:] for s in shapes}) != 1:
        raise CompileError(node_error(
            name, "merge_shape", f"merges {srcs} of shapes {shapes} (C, H, W); a core's sources "
            f"must land on the same H x W", "make their H x W equal (stride, padding or pooling in "
            "the feeding nodes)"))
    if graph.merge_of(name) == "sum":
        if len({s[0] for s in shapes}) != 1:
            raise CompileError(node_error(
                name, "merge_channels", f"adds {srcs} of shapes {shapes}; a sum merge needs equal "
                f"channels", "give them equal channels, or concatenate (the default merge)"))
        return shapes[0]
    return sum(s[0] for s in shapes), *shapes[0][1:]


def _apply_source_scales(layer, merge, src_index, layers, scales) -> None:
    """A source's trailing AvgPool: x 1/k^2 on the input channels it feeds (the chain lowering
    notes it)."""
    if not src_index:
        return
    if merge == "sum":
        distinct = {scales[j] for j in src_index}
        if len(distinct) > 1:
            raise CompileError(node_error(
                layer.name, "merge_scale", f"adds {[layers[j].name for j in src_index]}, whose "
                f"AvgPools scale the same weights differently ({sorted(distinct)})",
                "use SumPool2d in the feeding nodes, or equal pooling"))
        if distinct != {1.0}:
            layer.weight = layer.weight * distinct.pop()
        return
    start = 0
    for j in src_index:
        c = layers[j].output_shape[0]
        layer.weight[:, start:start + c] *= scales[j]
        start += c


def graph_violations(net: LoweredGraph, spec: ChipSpec, *, input_from_sensor: bool) -> list[Violation]:
    """The chip's routing limits for a graph, named after the node that breaks them."""
    out = []
    names = [layer.name for layer in net.layers]
    for j, layer in enumerate(net.layers):
        fed = [names[i] for i in net.consumers(j)]
        if len(fed) > spec.limits.fan_out:
            out.append(Violation(
                layer.name, "fan_out", f"feeds {len(fed)} nodes {fed}", spec.limits.fan_out,
                f"a core has {spec.limits.fan_out} destinations ({spec.path} [limits] fan_out): "
                f"feed at most {spec.limits.fan_out} nodes from it, e.g. through a relay node"))
    entries = [names[i] for i in net.entries()]
    if input_from_sensor and len(entries) > spec.dvs.max_destinations:
        out.append(Violation(
            INPUT, "dvs_destinations", f"feeds {len(entries)} nodes {entries}",
            spec.dvs.max_destinations, f"the DVS layer has {spec.dvs.max_destinations} "
            f"destinations ({spec.path} [dvs] max_destinations): feed fewer nodes from the input"))
    if not input_from_sensor and len(entries) > 1:
        out.append(Violation(
            INPUT, "input_fan_out", f"feeds {len(entries)} nodes {entries}", 1,
            "without the DVS layer host events enter one core: compile with the sensor input "
            "(drop --no-dvs), whose DVS layer has destinations for each"))
    if len(names) > spec.cores.count:
        out.append(Violation(
            names[spec.cores.count], "cores", f"{len(names)} nodes, one core each; nodes "
            f"{names[spec.cores.count:]} get none", spec.cores.count,
            f"{spec.name} has {spec.cores.count} cores ({spec.path} [cores] count): merge or "
            f"remove nodes"))
    return out
