"""NIR export and import for the chains asa_deploy puts on a chip.

Why our own exporter and importer
---------------------------------
``sinabs.to_nir`` traces a torch module and leaves ``Conv2d.input_shape=None`` (``nir.write`` then
fails), and neither it nor NIR 1.0.4 has a place for what makes our networks compute what the chip
computes: the reset mode (nir 1.0.4's ``IF`` always subtracts; nir 1.0.6 added ``v_reset``), the
membrane floor ``min_v_mem``, the multi-spike integration, per-neuron initial states and kill bits.
``sinabs.from_nir`` (sinabs 3.1.3) does load our graphs here (nir 1.0.4 / nirtorch 2.0.2), through
the deprecated ``nirtorch.load`` (a ``DeprecationWarning``); it needs ``batch_size`` or
``num_timesteps`` and returns a nirtorch ``GraphExecutor`` whose forward returns ``(output,
state)``. But it reads only the NIR fields: every ``IF`` becomes an ``IAFSqueeze`` with MultiSpike,
subtract reset and ``min_v_mem = -v_threshold``; initial states start at zero and kill bits are
lost. Its spikes equal ours (tested) only for subtract-reset layers whose floor is -threshold and
that have no initial states or killed neurons; a zero-reset network differs (tested). So we write
the graph ourselves (every shape set, ``graph.infer_types()`` run) and import it with
``nir_to_sinabs``, which honours the metadata below and refuses IF nodes without it.

Graph layout (a chain; node names in brackets)
----------------------------------------------
``Input [input]`` -> ``SumPool2d [input_pool]`` (only when pooling > 1: the LoweredNetwork's
``input_pool`` or the DVS layer's pooling) -> per layer i: ``Conv2d [conv{i}]`` -> ``IF [if{i}]``
-> ``SumPool2d [pool{i}]`` (only when the layer pools its output spikes > 1) -> ``Output [output]``.
Shapes are [C, H, W] without batch or time; a LoweredNetwork's input is (C, H * input_pool,
W * input_pool) for a first layer taking (C, H, W). ``Conv2d.bias`` is zeros when the layer has none.
``IF.r`` is ones and ``IF.v_threshold`` is always an explicit [C, H, W] array (a scalar threshold is
broadcast). A ChipConfig exports its integers as float32 arrays (weights, biases when
``leak_enable``, else zeros, ``threshold_high`` as v_threshold, ``threshold_low`` as min_v_mem,
``neurons_initial_value`` as initial_state). The last core's spikes are the output, before any
readout pooling (what ``sim.fast.run_frames`` reports).

Metadata (``graph.metadata``, written to and read from the .nir file)
--------------------------------------------------------------------
- ``format`` = ``"asa_deploy.nir"``, ``format_version`` = 1, ``source`` (``LoweredNetwork`` or
  ``ChipConfig <chip>``), ``dt``, ``integration`` (:data:`INTEGRATION`), ``bias`` (:data:`BIAS`),
  ``kill`` (:data:`KILL`).
- ``layers``: one entry per IF node name (``if0``, ``if1``, ...) with ``name`` (the source layer),
  ``reset`` (``"subtract"``: v -= n * threshold, or ``"zero"``: v = 0 after a spike), ``min_v_mem``
  (float), ``dt``, ``integration``, and, only when present, ``initial_state`` (float32 [C, H, W],
  absent means zeros) and ``kill`` (bool [C, H, W]); ChipConfig exports add ``core`` (the core id).
- ChipConfig exports: ``readout`` (source core, number of classes, channel stride, whether the
  readout block is used) and, when there is a DVS layer, ``dvs`` (its pooling and its whole
  configuration as JSON). Only the DVS pooling is in the graph: polarity selection / merge, region
  of interest, mirroring and killed pixels are metadata only, so the graph's input is the
  polarity-selected, cropped sensor map before pooling.

Import conventions (``nir_to_sinabs``)
--------------------------------------
A ``torch.nn.Sequential`` taking [batch * T, C, H, W] (sinabs's squeezed layout, ``batch_size``
fixed at build time): ``SumPool2d`` -> ``sl.SumPool2d``, ``Conv2d`` -> ``nn.Conv2d`` (always with
bias), ``IF`` -> ``sl.IAFSqueeze(MultiSpike, MembraneSubtract() or MembraneReset(), min_v_mem)``;
with an initial state an :class:`IAFSqueezeWithInitialState`, whose ``reset_states()`` (and first
forward) restore that state rather than zeros. Kill bits are applied, not metadata-only: a
:class:`NeuronKill` mask zeros a killed neuron's input current (before the IAF) and its output
spikes (after it), as ``sim.fast`` models the chip's kill bit; so a killed neuron never spikes and,
as there, keeps its initial state. ``LoweredNetwork.to_sequential()`` ignores both initial states
and kill bits (its IAFs start at zero); the NIR import does not. (An infinite threshold is not an option: MultiSpike computes
floor(v / threshold).) ``dt`` is recorded, not used: one forward step is one time step of ``dt``.
As with any sinabs network, call ``reset_states()`` between independent inputs.

Other importers (checked here with torch 2.13, ``pip install --no-deps``): norse 1.1.0's
``from_nir`` loads and runs our graphs, but as single-spike IAF cells resetting to 0 with no floor;
snnTorch 1.0.0's ``import_from_nir`` has no SumPool2d mapping, and maps IF to a leaky
``snn.Leaky(beta=0.9)`` that carries no state between calls. Neither reads our metadata.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import nir
import numpy as np
import sinabs.activation as sa
import sinabs.layers as sl
import torch
from torch import nn

from asa_deploy.chip.config import READOUT_CORE, ChipConfig
from asa_deploy.chip.graph import LoweredGraph
from asa_deploy.chip.lower import LoweredNetwork
from asa_deploy.errors import AsaDeployError
from asa_deploy.io import artifact_error, atomic_output, brief

FORMAT = "asa_deploy.nir"
FORMAT_VERSION = 1
INTEGRATION = ("sinabs: v += input each step, at most floor(v/threshold) spikes (MultiSpike), "
               "then the reset, then v = max(v, min_v_mem)")
BIAS = "Conv2d bias added to the current every time step (the chip's leak, one tick per step)"
KILL = ("killed neurons (layer kill arrays) get no input and emit no spikes; "
        "nir_to_sinabs applies this as a mask, other importers ignore it")


# ---- export -----------------------------------------------------------------------------------------

def _f32(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def _pool_out(shape: tuple[int, int, int], k: tuple[int, int]) -> tuple[int, int, int]:
    c, h, w = shape
    return c, h // k[0], w // k[1]


class _ChainBuilder:
    """Builds the node dict, edges and layer metadata of our chain, tracking shapes."""

    def __init__(self, input_shape: tuple[int, int, int], dt: float):
        if not (isinstance(dt, (int, float)) and np.isfinite(dt) and dt > 0):
            raise AsaDeployError(f"NIR export: dt must be a positive number, got {dt!r}")
        self.dt = float(dt)
        self.shape = tuple(int(s) for s in input_shape)
        self.nodes: dict[str, nir.NIRNode] = {
            "input": nir.Input(input_type={"input": np.array(self.shape)})}
        self.order = ["input"]
        self.layers: dict[str, dict] = {}

    def _add(self, name: str, node: nir.NIRNode) -> None:
        self.nodes[name] = node
        self.order.append(name)

    def pool(self, name: str, k: tuple[int, int]) -> None:
        k = (int(k[0]), int(k[1]))
        if k == (1, 1):
            return
        node = nir.SumPool2d(kernel_size=np.array(k), stride=np.array(k), padding=np.array((0, 0)))
        out = _pool_out(self.shape, k)
        node.input_type = {"input": np.array(self.shape)}
        node.output_type = {"output": np.array(out)}
        self._add(name, node)
        self.shape = out

    def layer(self, i: int, *, name: str, weight, bias, stride, padding, threshold, min_v_mem: float,
              return_to_zero: bool, initial_state=None, kill=None, pool: int = 1,
              extra: dict | None = None) -> None:
        weight = _f32(weight)
        if weight.ndim != 4 or weight.shape[1] != self.shape[0]:
            raise AsaDeployError(f"NIR export: layer {name}: weights {weight.shape} do not take the "
                                 f"{self.shape} input it receives")
        bias = np.zeros(weight.shape[0], np.float32) if bias is None else _f32(bias)
        conv = nir.Conv2d(input_shape=(self.shape[1], self.shape[2]), weight=weight,
                          stride=tuple(int(s) for s in stride),
                          padding=tuple(int(p) for p in padding), dilation=(1, 1), groups=1,
                          bias=bias)
        neuron_shape = tuple(int(s) for s in conv.output_type["output"])
        self._add(f"conv{i}", conv)
        threshold = _f32(threshold)
        try:
            threshold = np.ascontiguousarray(np.broadcast_to(threshold, neuron_shape))
        except ValueError as exc:
            raise AsaDeployError(f"NIR export: layer {name}: threshold of shape {threshold.shape} "
                                 f"does not fit its neurons {neuron_shape}") from exc
        self._add(f"if{i}", nir.IF(r=np.ones(neuron_shape, np.float32), v_threshold=threshold))
        meta = {"name": str(name), "reset": "zero" if return_to_zero else "subtract",
                "min_v_mem": float(min_v_mem), "dt": self.dt, "integration": INTEGRATION,
                **(extra or {})}
        for key, value, cast in (("initial_state", initial_state, _f32),
                                 ("kill", kill, lambda x: np.asarray(_f32(x) != 0))):
            if value is None:
                continue
            value = cast(value)
            if value.shape != neuron_shape:
                raise AsaDeployError(f"NIR export: layer {name}: {key} of shape {value.shape}, "
                                     f"its neurons are {neuron_shape}")
            meta[key] = np.ascontiguousarray(value)
        self.layers[f"if{i}"] = meta
        self.shape = neuron_shape
        self.pool(f"pool{i}", (pool, pool))

    def finish(self, metadata: dict) -> nir.NIRGraph:
        self._add("output", nir.Output(output_type={"output": np.array(self.shape)}))
        edges = list(zip(self.order[:-1], self.order[1:], strict=True))
        graph = nir.NIRGraph(nodes=self.nodes, edges=edges, metadata={
            "format": FORMAT, "format_version": FORMAT_VERSION, "dt": self.dt,
            "integration": INTEGRATION, "bias": BIAS, "kill": KILL, **metadata,
            "layers": self.layers})
        _infer_types(graph, "NIR export")
        return graph


def _infer_types(graph: nir.NIRGraph, where: str) -> None:
    """nir's own type inference (it prints its warnings: kept out of our stdout)."""
    if not hasattr(graph, "infer_types"):
        return
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            graph.infer_types()
    except (ValueError, KeyError, TypeError, IndexError, NotImplementedError) as exc:
        raise AsaDeployError(f"{where}: NIR type inference failed ({type(exc).__name__}: "
                             f"{exc})") from exc


def lowered_to_nir(net: LoweredNetwork, *, dt: float = 1.0) -> nir.NIRGraph:
    """The float network ``net`` (what ``net.to_sequential()`` computes, plus its initial states and
    kill bits) as a NIR chain with our metadata (a ``LoweredGraph``: a NIR graph keeping its
    branches and merges, see "graphs" below); see the module docstring."""
    if isinstance(net, LoweredGraph):
        return _lowered_graph_to_nir(net, dt)
    c, h, w = net.input_shape
    p = int(net.input_pool)
    builder = _ChainBuilder((c, h * p, w * p), dt)
    builder.pool("input_pool", (p, p))
    for i, layer in enumerate(net.layers):
        threshold = (layer.per_neuron_threshold if layer.per_neuron_threshold is not None
                     else np.float32(layer.threshold))
        builder.layer(i, name=layer.name, weight=layer.weight, bias=layer.bias,
                      stride=layer.stride, padding=layer.padding, threshold=threshold,
                      min_v_mem=layer.min_v_mem, return_to_zero=layer.return_to_zero,
                      initial_state=layer.initial_state, kill=layer.kill, pool=layer.pool)
    return builder.finish({"source": "LoweredNetwork"})


def _chain(config: ChipConfig) -> list[int]:
    order = config.topological_order()
    if config.entry_cores() != [order[0]]:
        raise AsaDeployError(f"NIR export: input enters cores {config.entry_cores()}; the export "
                             f"handles a chain entered at its first core {order[0]}")
    for i, cid in enumerate(order):
        core = config.core(cid)
        targets = [d for d in core.destinations if d.core != READOUT_CORE]
        expected = [] if i == len(order) - 1 else [order[i + 1]]
        if [d.core for d in targets] != expected or any(d.feature_shift for d in targets):
            raise AsaDeployError(
                f"NIR export: core {cid} ({core.name}) sends to "
                f"{[(d.core, d.feature_shift) for d in targets]}; the export handles a chain "
                f"(each core feeding only the next, feature_shift 0: order {order})")
        if targets and config.core(order[i + 1]).input_shape[0] != core.neuron_shape[0]:
            raise AsaDeployError(f"NIR export: core {cid} ({core.name}) fills only part of the "
                                 f"channels of core {order[i + 1]}")
        if core.output_decimator is not None:
            raise AsaDeployError(f"NIR export: core {cid} ({core.name}) uses output_decimator "
                                 f"{core.output_decimator}, which NIR (like sim.fast) cannot model")
    return order


def chip_config_to_nir(config: ChipConfig, *, dt: float = 1.0) -> nir.NIRGraph:
    """The integer network ``config`` holds, as float arrays in a NIR chain (cores in topological
    order; the DVS layer's pooling as the leading SumPool2d). Importing it with ``nir_to_sinabs``
    gives the spikes ``sim.fast.run_frames`` gives for the last core. A config whose cores branch
    or merge is exported as a graph (see "graphs" below)."""
    if _is_graph(config):
        return _chip_graph_to_nir(config, dt)
    order = _chain(config)
    first = config.core(order[0])
    c, h, w = first.input_shape
    pool = (1, 1) if config.dvs is None else tuple(int(p) for p in config.dvs.pooling)
    builder = _ChainBuilder((c, h * pool[0], w * pool[1]), dt)
    builder.pool("input_pool", pool)
    for i, cid in enumerate(order):
        core = config.core(cid)
        targets = [d for d in core.destinations if d.core != READOUT_CORE]
        state = core.neurons_initial_value
        builder.layer(
            i, name=core.name, weight=core.weights,
            bias=core.biases if core.leak_enable else None, stride=core.stride,
            padding=core.padding, threshold=np.float32(core.threshold_high),
            min_v_mem=float(core.threshold_low), return_to_zero=core.return_to_zero,
            initial_state=state if np.any(state != 0) else None,
            kill=core.neurons_kill if core.neurons_kill is not None and np.any(core.neurons_kill)
            else None,
            pool=targets[0].pooling if targets else 1, extra={"core": int(cid)})
    return builder.finish(_chip_metadata(config, pool))


def _chip_metadata(config: ChipConfig, pool: tuple[int, int]) -> dict:
    r = config.readout
    metadata = {"source": f"ChipConfig {config.chip}",
                "readout": {"source_core": int(r.source_core), "num_classes": int(r.num_classes),
                            "channel_stride": int(r.channel_stride),
                            "use_readout_block": bool(r.use_readout_block)}}
    if config.dvs is not None:
        metadata["dvs"] = {
            "pooling": np.array(pool),
            "in_graph": "pooling only; polarity, region of interest, mirror, killed pixels: "
                        "see config_json",
            "config_json": json.dumps(config.to_dict()["dvs"])}
    return metadata


# ---- graphs (branches and merges) -------------------------------------------------------------------
#
# NIR sums the inputs of a node that several edges enter, and NIR 1.0.4 has no concatenation. So a
# core fed by several sources (a merge) becomes one Conv2d per input-channel range [feature_shift,
# feature_shift + C) that a source fills, ``conv{i}_{shift}`` holding those columns of the weights
# (the bias on the first), all entering ``if{i}``: conv over concatenated channels = sum of convs
# over the ranges, exactly. Sources sharing a range (a sum merge) enter the same conv, named
# ``conv{i}`` when it covers all channels. A core whose destinations pool differently gets one
# ``pool{i}_{k}`` per pooling. The graph's metadata adds ``topology``: JSON, per layer (IF node),
# its sources with feature shift and pooling. ``nir_to_sinabs`` reads chains only; other importers
# (sinabs.from_nir) read the NIR nodes and edges.

def _graph_to_nir(input_shape, input_pool: tuple[int, int], layers: list[dict],
                  feeds: list[list[tuple[int, int, int]]], output: int, dt: float,
                  metadata: dict) -> nir.NIRGraph:
    """``layers[i]``: the keyword arguments of ``_ChainBuilder.layer`` but ``pool``; ``feeds[i]``:
    (source layer, -1 for the input; feature shift; pooling) per source, layers topologically."""
    builder = _ChainBuilder(input_shape, dt)
    builder.pool("input_pool", input_pool)
    nodes, edges = builder.nodes, []
    if builder.order[1:]:
        edges.append(("input", "input_pool"))
    outputs = {-1: (builder.order[-1], builder.shape)}  # layer -> (IF node, neuron shape)
    pool_nodes: dict[tuple[int, int], str] = {}

    def source_node(j: int, k: int) -> str:
        name, shape = outputs[j]
        if j < 0 or k == 1:
            return name
        if (j, k) not in pool_nodes:
            poolings = {p for f in feeds for s, _, p in f if s == j and p > 1}
            pool_nodes[(j, k)] = f"pool{j}" if len(poolings) == 1 else f"pool{j}_{k}"
            node = nir.SumPool2d(kernel_size=np.array((k, k)), stride=np.array((k, k)),
                                 padding=np.array((0, 0)))
            node.input_type = {"input": np.array(shape)}
            node.output_type = {"output": np.array(_pool_out(shape, (k, k)))}
            nodes[pool_nodes[(j, k)]] = node
            edges.append((name, pool_nodes[(j, k)]))
        return pool_nodes[(j, k)]

    topology = {}
    for i, (layer, srcs) in enumerate(zip(layers, feeds, strict=True)):
        weight = _f32(layer["weight"])
        channels = {j: (outputs[j][1][0] if j >= 0 else builder.shape[0]) for j, _, _ in srcs}
        _, h, w = outputs[srcs[0][0]][1]
        if srcs[0][0] >= 0 and srcs[0][2] > 1:
            h, w = h // srcs[0][2], w // srcs[0][2]
        one = _ChainBuilder((weight.shape[1], h, w), dt)  # conv, IF and their metadata
        one.layer(i, **layer)
        ranges = sorted({(shift, channels[j]) for j, shift, _ in srcs})
        bias = _f32(layer["bias"]) if layer["bias"] is not None else np.zeros(weight.shape[0], np.float32)
        for n, (shift, c) in enumerate(ranges):
            whole = ranges == [(0, weight.shape[1])]
            name = f"conv{i}" if whole else f"conv{i}_{shift}"
            nodes[name] = nir.Conv2d(
                input_shape=(h, w), weight=np.ascontiguousarray(weight[:, shift:shift + c]),
                stride=one.nodes[f"conv{i}"].stride, padding=one.nodes[f"conv{i}"].padding,
                dilation=(1, 1), groups=1, bias=bias if n == 0 else np.zeros_like(bias))
            edges += [(source_node(j, k), name) for j, s, k in srcs if (s, channels[j]) == (shift, c)]
            edges.append((name, f"if{i}"))
        nodes[f"if{i}"] = one.nodes[f"if{i}"]
        builder.layers[f"if{i}"] = one.layers[f"if{i}"]
        outputs[i] = (f"if{i}", one.shape)
        topology[f"if{i}"] = [{"from": "input" if j < 0 else f"if{j}", "feature_shift": s,
                               "pooling": k} for j, s, k in srcs]
    nodes["output"] = nir.Output(output_type={"output": np.array(outputs[output][1])})
    edges.append((outputs[output][0], "output"))
    graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata={
        "format": FORMAT, "format_version": FORMAT_VERSION, "dt": builder.dt,
        "integration": INTEGRATION, "bias": BIAS, "kill": KILL, **metadata,
        "topology": json.dumps(topology), "layers": builder.layers})
    _infer_types(graph, "NIR export")
    return graph


def _lowered_graph_to_nir(net: LoweredGraph, dt: float) -> nir.NIRGraph:
    layers = [_layer_kwargs(layer) for layer in net.layers]
    feeds = [[(j, net.feature_shift(i, j), net.layers[j].pool) for j in srcs] or [(-1, 0, 1)]
             for i, srcs in enumerate(net.sources)]
    c, h, w = net.input_shape
    p = int(net.input_pool)  # e.g. a fold stage's graph lowered from a chain that pools its input
    return _graph_to_nir((c, h * p, w * p), (p, p), layers, feeds, len(layers) - 1, dt,
                         {"source": "LoweredGraph"})


def _layer_kwargs(layer) -> dict:
    return dict(name=layer.name, weight=layer.weight, bias=layer.bias, stride=layer.stride,
                padding=layer.padding,
                threshold=(layer.per_neuron_threshold if layer.per_neuron_threshold is not None
                           else np.float32(layer.threshold)),
                min_v_mem=layer.min_v_mem, return_to_zero=layer.return_to_zero,
                initial_state=layer.initial_state, kill=layer.kill)


def _is_graph(config: ChipConfig) -> bool:
    """More than one entry core, or a core with two destinations or two sources."""
    fan_in: dict[int, int] = {}
    for core in config.cores:
        targets = [d.core for d in core.destinations if d.core != READOUT_CORE]
        if len(targets) > 1:
            return True
        for t in targets:
            fan_in[t] = fan_in.get(t, 0) + 1
    return len(config.entry_cores()) > 1 or any(n > 1 for n in fan_in.values())


def _chip_graph_to_nir(config: ChipConfig, dt: float) -> nir.NIRGraph:
    order = config.topological_order()
    index = {cid: i for i, cid in enumerate(order)}
    feeds: list[list[tuple[int, int, int]]] = [[] for _ in order]
    for cid in config.entry_cores():
        feeds[index[cid]].append((-1, 0, 1))
    layers = []
    for i, cid in enumerate(order):
        core = config.core(cid)
        if core.output_decimator is not None:
            raise AsaDeployError(f"NIR export: core {cid} ({core.name}) uses output_decimator "
                                 f"{core.output_decimator}, which NIR (like sim.fast) cannot model")
        for d in core.destinations:
            if d.core != READOUT_CORE:
                feeds[index[d.core]].append((i, d.feature_shift, d.pooling))
        state = core.neurons_initial_value
        layers.append(dict(
            name=core.name, weight=core.weights, bias=core.biases if core.leak_enable else None,
            stride=core.stride, padding=core.padding, threshold=np.float32(core.threshold_high),
            min_v_mem=float(core.threshold_low), return_to_zero=core.return_to_zero,
            initial_state=state if np.any(state != 0) else None,
            kill=core.neurons_kill if core.neurons_kill is not None and np.any(core.neurons_kill)
            else None, extra={"core": int(cid)}))
    c, h, w = config.core(config.entry_cores()[0]).input_shape
    pool = (1, 1) if config.dvs is None else tuple(int(p) for p in config.dvs.pooling)
    metadata = _chip_metadata(config, pool)
    return _graph_to_nir((c, h * pool[0], w * pool[1]), pool, layers, feeds,
                         index[config.readout.source_core], dt, metadata)


# ---- files ------------------------------------------------------------------------------------------

def write_nir(graph: nir.NIRGraph, path) -> Path:
    """Write ``graph`` to ``path`` atomically (a temporary file in the same folder, then a rename)."""
    path = Path(path)
    missing = [name for name, node in graph.nodes.items()
               if isinstance(node, nir.Conv2d) and node.input_shape is None]
    if missing:
        raise AsaDeployError(f"{path}: cannot write NIR: Conv2d nodes {missing} have no "
                             f"input_shape; set it (and call graph.infer_types())")
    try:
        with atomic_output(path) as tmp:
            nir.write(tmp, graph)
    except AsaDeployError:
        raise
    except (OSError, TypeError, ValueError, KeyError) as exc:
        raise AsaDeployError(f"{path}: cannot write NIR ({type(exc).__name__}: {exc})") from exc
    return path


def read_nir(path) -> nir.NIRGraph:
    """Read a .nir (HDF5) file; an AsaDeployError naming it when it is missing or not NIR. Node
    types are inferred again (nir does not store them) and a chain's nodes are listed in order."""
    path = Path(path)
    remedy = "export it again (asa-deploy export RUN) or pass another .nir file"
    if not path.is_file():
        raise artifact_error(path, "no such NIR file", remedy)
    try:
        graph = nir.read(path)
    except Exception as exc:  # h5py / nir raise OSError, KeyError, ValueError, AssertionError, ...
        raise artifact_error(path, f"not a NIR file, or truncated ({brief(exc)})", remedy) from exc
    if not isinstance(graph, nir.NIRGraph):
        raise artifact_error(path, f"holds a single {type(graph).__name__} node, not a NIR graph",
                             remedy)
    _infer_types(graph, str(path))
    try:  # HDF5 lists groups alphabetically: put a chain's nodes back in execution order
        graph.nodes = {name: graph.nodes[name] for name in _chain_order(graph)}
    except AsaDeployError:
        pass
    return graph


# ---- import -----------------------------------------------------------------------------------------

class NeuronKill(nn.Module):
    """Zeros the killed neurons (a fixed bool mask [C, H, W]) of a [N, C, H, W] tensor."""

    def __init__(self, kill: torch.Tensor):
        super().__init__()
        self.register_buffer("kill", torch.as_tensor(kill, dtype=torch.bool).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.masked_fill(self.kill, 0.0)

    def extra_repr(self) -> str:
        return f"killed={int(self.kill.sum())} of {self.kill.numel()}"


class IAFSqueezeWithInitialState(sl.IAFSqueeze):
    """``IAFSqueeze`` whose membrane starts at ``initial_state`` [C, H, W] (first forward and every
    ``reset_states()``), like a chip core's ``neurons_initial_value``."""

    def __init__(self, initial_state: torch.Tensor, **kwargs):
        super().__init__(**kwargs)
        # a frozen Parameter, like sinabs's spike_threshold: sinabs treats every buffer as state
        self.initial_state = nn.Parameter(
            torch.as_tensor(initial_state, dtype=torch.float32).clone(), requires_grad=False)
        if self.is_state_initialised():  # built with a shape (deepcopy): start from the state
            self.reset_states()

    def reset_states(self, randomize: bool = False, value_ranges=None):
        super().reset_states(randomize, value_ranges)
        initial = getattr(self, "initial_state", None)  # None while sinabs's __init__ runs
        if initial is not None and not randomize and self.is_state_initialised():
            self.v_mem.data = initial.expand_as(self.v_mem).clone()

    @property
    def _param_dict(self) -> dict:
        return {**super()._param_dict, "initial_state": self.initial_state.detach()}


def _layer_meta(graph: nir.NIRGraph, name: str) -> dict:
    layers = graph.metadata.get("layers", {})
    if graph.metadata.get("format") != FORMAT or name not in layers:
        raise AsaDeployError(
            f"NIR import: IF node {name!r} has no asa_deploy metadata (reset, min_v_mem); "
            f"nir_to_sinabs reads graphs written by asa_deploy (use sinabs.from_nir for others)")
    return layers[name]


def _as_str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nir_to_sinabs(graph: nir.NIRGraph, batch_size: int = 1) -> nn.Sequential:
    """Our importer for the chains we emit: an ``nn.Sequential`` taking [batch_size * T, C, H, W]
    that honours the reset mode, min_v_mem, initial states and kill bits in the metadata."""
    version = graph.metadata.get("format_version")
    if graph.metadata.get("format") == FORMAT and int(version) > FORMAT_VERSION:
        raise AsaDeployError(f"NIR import: format_version {version}, this asa_deploy reads "
                             f"{FORMAT_VERSION}")
    modules: list[tuple[str, nn.Module]] = []
    for name in _chain_order(graph):
        node = graph.nodes[name]
        if isinstance(node, (nir.Input, nir.Output)):
            continue
        if isinstance(node, nir.SumPool2d):
            if np.any(np.asarray(node.padding) != 0):
                raise AsaDeployError(f"NIR import: {name}: padded sum pooling is not supported")
            modules.append((name, sl.SumPool2d(tuple(int(k) for k in node.kernel_size),
                                               tuple(int(s) for s in node.stride))))
        elif isinstance(node, nir.Conv2d):
            weight = torch.from_numpy(_f32(node.weight))
            if isinstance(node.padding, str) or int(node.groups) != 1:
                raise AsaDeployError(f"NIR import: {name}: padding {node.padding!r} / groups "
                                     f"{node.groups} not supported (integer padding, groups 1)")
            conv = nn.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[-2:]),
                             tuple(int(s) for s in node.stride),
                             tuple(int(p) for p in node.padding),
                             tuple(int(d) for d in node.dilation), bias=True)
            conv.weight.data = weight
            conv.bias.data = torch.from_numpy(_f32(node.bias))
            modules.append((name, conv))
        elif isinstance(node, nir.IF):
            modules += _import_if(graph, name, node, batch_size)
        else:
            raise AsaDeployError(f"NIR import: node {name!r} is a {type(node).__name__}; "
                                 f"nir_to_sinabs reads Input, SumPool2d, Conv2d, IF, Output")
    seq = nn.Sequential()
    for name, module in modules:
        seq.add_module(name, module)
    return seq


def _import_if(graph: nir.NIRGraph, name: str, node: nir.IF, batch_size: int):
    meta = _layer_meta(graph, name)
    if not np.all(np.asarray(node.r) == 1):
        raise AsaDeployError(f"NIR import: {name}: r != 1; sinabs integrates v += input")
    reset = _as_str(meta["reset"])
    if reset not in ("subtract", "zero"):
        raise AsaDeployError(f"NIR import: {name}: reset {reset!r} unknown (subtract or zero)")
    threshold = torch.from_numpy(_f32(node.v_threshold))
    kwargs = dict(batch_size=batch_size, spike_threshold=threshold,
                  min_v_mem=torch.tensor(float(meta["min_v_mem"])), spike_fn=sa.MultiSpike,
                  reset_fn=sa.MembraneReset() if reset == "zero" else sa.MembraneSubtract())
    if "initial_state" in meta:
        state = torch.from_numpy(_f32(meta["initial_state"]))
        if state.shape != threshold.shape:
            raise AsaDeployError(f"NIR import: {name}: initial_state {tuple(state.shape)} does "
                                 f"not match its neurons {tuple(threshold.shape)}")
        iaf = IAFSqueezeWithInitialState(state, **kwargs)
    else:
        iaf = sl.IAFSqueeze(**kwargs)
    if "kill" not in meta:
        return [(name, iaf)]
    kill = torch.from_numpy(np.asarray(meta["kill"]).astype(bool))
    if kill.shape != threshold.shape:
        raise AsaDeployError(f"NIR import: {name}: kill {tuple(kill.shape)} does not match its "
                             f"neurons {tuple(threshold.shape)}")
    return [(f"{name}_kill_in", NeuronKill(kill)), (name, iaf), (f"{name}_kill_out",
                                                                  NeuronKill(kill))]


def _chain_order(graph: nir.NIRGraph) -> list[str]:
    inputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    succ: dict[str, list[str]] = {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
    if len(inputs) != 1:
        raise AsaDeployError(f"NIR import: {len(inputs)} Input nodes; nir_to_sinabs reads a chain")
    order = [inputs[0]]
    while succ.get(order[-1]):
        nxt = succ[order[-1]]
        if len(nxt) != 1 or nxt[0] in order:
            raise AsaDeployError(f"NIR import: node {order[-1]!r} feeds {nxt}; nir_to_sinabs "
                                 f"reads a chain")
        order.append(nxt[0])
    if len(order) != len(graph.nodes) or not isinstance(graph.nodes[order[-1]], nir.Output):
        raise AsaDeployError(f"NIR import: the edges {graph.edges} do not form one chain from "
                             f"Input to Output over all {len(graph.nodes)} nodes")
    return order
