"""``SpikingGraph``: a spiking network whose layers branch (fan-out) and merge, trainable in torch.

Chains (``SpikingNetwork``, an ``nn.Sequential``) cannot say that two layers read the same spikes or
that one layer reads two others; a chip core can (two destinations each, several sources per core,
the second arriving as extra input channels: ``Destination.feature_shift``). The description is the
smallest a user writes by hand: named nodes and edges ::

    graph = SpikingGraph(
        nodes={"conv": nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), sl.IAF(min_v_mem=-1.0)),
               "gate": nn.Sequential(nn.Conv2d(2, 1, 3, padding=1), sl.IAF(min_v_mem=-1.0)),
               "out": nn.Sequential(nn.Conv2d(9, 10, 3, stride=2), sl.IAF(min_v_mem=-1.0))},
        edges=[("input", "conv"), ("input", "gate"), ("conv", "out"), ("gate", "out")])

- ``"input"`` names the network's input. Each node is an ``nn.Sequential`` (or one module) of the
  layers one core runs: synapse (Conv2d / Linear, after a Flatten) -> optional BatchNorm -> neuron ->
  optional pooling of its output spikes (AvgPool2d / SumPool2d), the same layers ``chip.lower``
  accepts in a chain, but exactly one synapse and one neuron per node.
- A node fed by several nodes concatenates their outputs along channels in the order of the edges
  (``merge={"node": "sum"}`` adds them instead, as sinabs's ``Merge`` does); their spatial shapes
  must be equal. A node reading the graph's input reads only it.
- Exactly one node feeds no other: the output. Edges must not form a cycle (a core's spikes go
  forward only). Both are checked here; chip limits (fan-out, cores) at compile (``chip.graph``).

Tensors are [B, T, C, H, W] between nodes, as between a ``SpikingNetwork``'s blocks: synapses and
pooling see [B*T, ...], sinabs ``IAF`` / ``LIF`` see [B, T, ...], ``*Squeeze`` neurons [B*T, ...].
"""

from __future__ import annotations

import torch
from sinabs.layers import SqueezeMixin, StatefulLayer
from torch import nn

from asa_deploy.errors import ModelSpecError

INPUT = "input"
MERGES = ("cat", "sum")


def node_error(node: str, rule: str, problem: str, fix: str) -> str:
    """The one message format for a graph refusal: the node, the rule, what, and the fix."""
    return f"graph node {node!r}: rule {rule}: {problem}. Fix: {fix}"


class SpikingGraph(nn.Module):
    """[B, T, C, H, W] in, the output node's [B, T, ...] spikes out; see the module docstring."""

    def __init__(self, nodes: dict[str, nn.Module], edges: list[tuple[str, str]],
                 merge: dict[str, str] | None = None):
        super().__init__()
        if not nodes:
            raise ModelSpecError("a SpikingGraph needs at least one node")
        for name, module in nodes.items():
            if not isinstance(name, str) or not name or "." in name or name == INPUT:
                raise ModelSpecError(f"graph node name {name!r}: use a non-empty name without "
                                     f"'.', other than {INPUT!r} (which names the input)")
            if not isinstance(module, nn.Module):
                raise ModelSpecError(f"graph node {name!r} is a {type(module).__name__}, not a "
                                     f"torch module")
        self.nodes = nn.ModuleDict(nodes)
        self.edges = [(str(a), str(b)) for a, b in edges]
        self.merge = dict(merge or {})
        self.sources: dict[str, list[str]] = {name: [] for name in nodes}
        self._check_edges()
        self.order = self._topological_order()
        sinks = [n for n in self.order if not self.consumers(n)]
        if len(sinks) != 1:
            raise ModelSpecError(node_error(
                sinks[0], "one_output", f"nodes {sinks} feed no other node; a graph has one "
                f"output (the node no edge leaves)", "connect all but one of them onward, or drop them"))
        self.output = sinks[0]

    def _check_edges(self) -> None:
        seen = set()
        for edge in self.edges:
            a, b = edge
            if a != INPUT and a not in self.sources:
                raise ModelSpecError(f"graph edge {edge}: no node {a!r} (nodes: "
                                     f"{list(self.sources)}, and {INPUT!r})")
            if b not in self.sources:
                raise ModelSpecError(f"graph edge {edge}: no node {b!r} (nodes: "
                                     f"{list(self.sources)}); nothing feeds {INPUT!r}")
            if edge in seen:
                raise ModelSpecError(f"graph edge {edge} is listed twice")
            seen.add(edge)
            self.sources[b].append(a)
        for name, merge in self.merge.items():
            if name not in self.sources or merge not in MERGES:
                raise ModelSpecError(f"merge {{{name!r}: {merge!r}}}: needs a node name and one of "
                                     f"{MERGES}")
        for name, srcs in self.sources.items():
            if not srcs:
                raise ModelSpecError(node_error(name, "inputs", "no edge feeds it",
                                                f"add an edge ({INPUT!r} or a node, {name!r})"))
        if not self.consumers(INPUT):
            raise ModelSpecError(f"no edge leaves {INPUT!r}: the graph never reads its input")

    def consumers(self, name: str) -> list[str]:
        """The nodes ``name`` feeds, in the order of the edges."""
        return [b for a, b in self.edges if a == name]

    def _topological_order(self) -> list[str]:
        """Kahn's order, ties in the order the nodes were given; a cycle is named."""
        indegree = {n: sum(s != INPUT for s in srcs) for n, srcs in self.sources.items()}
        order: list[str] = []
        ready = [n for n in self.sources if indegree[n] == 0]
        while ready:
            name = ready.pop(0)
            order.append(name)
            for b in self.consumers(name):
                indegree[b] -= 1
                if indegree[b] == 0:
                    ready.append(b)
                    ready.sort(key=list(self.sources).index)
        if len(order) < len(self.sources):
            cycle = self._cycle({n for n in self.sources if n not in order})
            raise ModelSpecError(node_error(
                cycle[0], "acyclic", f"the edges form a cycle {' -> '.join(cycle)}; a core's "
                f"spikes go forward only", "remove one edge of the cycle"))
        return order

    def _cycle(self, left: set[str]) -> list[str]:
        """One cycle among the nodes Kahn's order could not place (each has a predecessor there)."""
        path = [next(n for n in self.sources if n in left)]
        while True:
            prev = next(s for s in self.sources[path[-1]] if s in left)
            if prev in path:
                cycle = path[path.index(prev):] + [prev]
                return cycle[::-1]
            path.append(prev)

    def merge_of(self, name: str) -> str:
        return self.merge.get(name, "cat")

    def node_input(self, name: str, inputs: list[torch.Tensor]) -> torch.Tensor:
        """The tensor node ``name`` reads from its sources' outputs [B, T, C, ...]."""
        if len(inputs) == 1:
            return inputs[0]
        shapes = [tuple(x.shape[3:]) for x in inputs]
        if len(set(shapes)) != 1:
            raise ModelSpecError(node_error(
                name, "merge_shape", f"merges {self.sources[name]} of spatial shapes {shapes}",
                "make them equal (stride, padding or pooling in the feeding nodes)"))
        if self.merge_of(name) == "cat":
            return torch.cat(inputs, dim=2)
        channels = [x.shape[2] for x in inputs]
        if len(set(channels)) != 1:
            raise ModelSpecError(node_error(
                name, "merge_channels", f"adds {self.sources[name]} of {channels} channels",
                "give them equal channels, or concatenate (the default merge)"))
        return torch.stack(inputs).sum(dim=0)

    def outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every node's output [B, T, ...] (after its pooling), and ``"input"``."""
        if x.dim() != 5:
            raise ValueError(f"expected input [B, T, C, H, W], got shape {tuple(x.shape)}")
        out = {INPUT: x}
        for name in self.order:
            y = self.node_input(name, [out[s] for s in self.sources[name]])
            out[name] = run_time_stepped(self.nodes[name], y)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outputs(x)[self.output]

    def reset_states(self) -> None:
        """Forget all neuron states (as ``SpikingNetwork.reset_states``: empty buffers, so the
        next forward starts from zeros at its own batch size)."""
        for module in self.modules():
            if isinstance(module, StatefulLayer):
                for name, buffer in list(module.named_buffers()):
                    module.register_buffer(name, torch.zeros(0, device=buffer.device))


def run_time_stepped(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module`` (a Sequential or one layer) on [B, T, ...]: stateful non-squeeze neurons see
    [B, T, ...], every other layer [B*T, ...]."""
    b, t = x.shape[:2]
    layers = list(module) if isinstance(module, nn.Sequential) else [module]
    for layer in layers:
        if isinstance(layer, nn.Sequential):
            x = run_time_stepped(layer, x)
        elif isinstance(layer, StatefulLayer) and not isinstance(layer, SqueezeMixin):
            x = layer(x)
        else:
            x = layer(x.flatten(0, 1)).unflatten(0, (b, t))
    return x
