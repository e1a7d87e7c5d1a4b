"""Bring your own model (``asa-deploy import``): a NIR graph written by sinabs, snnTorch, Norse or
Rockpool, or a sinabs / torch ``nn.Sequential`` saved with ``torch.save``, becomes a run directory
that ``compile``, ``simulate``, ``export``, ``report``, ``camera`` and ``deploy`` accept as they
accept a trained run.

The run directory
-----------------
``imported.pt`` is the root artifact of an imported run, as ``model.pt`` is of a trained one (a run
directory holds one of the two: importing moves a trained run's artifacts aside, training moves an
import's). It is a dict written atomically with a ``provenance`` record (the model file's path and
SHA-256, the data spec):

- ``network``: an ``nn.Sequential`` of torch / sinabs layers (Conv2d, Linear, Flatten, AvgPool2d,
  SumPool2d, BatchNorm2d, IAF / IAFSqueeze, LIF) that ``compile`` lowers exactly as it lowers a
  trained model: the same bias policy (``--bias``), pooling folds, Linear -> full-kernel conv and
  design rules. It is checked with that lowering when imported, so a graph the chip cannot run is
  refused now, naming the node.
- ``model_spec`` (``name``: the file's stem, ``input``: channels, height, width), ``attention``
  (``"none"``), ``num_classes``, ``metrics`` (None): the keys of ``model.pt`` that compile, report
  and simulate read.
- ``data``: ``spec`` (``--data``, or None), ``sensor_size`` [W, H, P], ``class_names``,
  ``frame_spec`` (the data's default framing, or ``--T`` / ``--dt-ms``; ``downsample`` is what maps
  the sensor onto the network's input) and ``split`` (``{"seed": 0}``, no validation split: simulate
  uses every recording of its data).
- ``import``: ``source`` (path), ``sha256``, ``format`` (``nir`` or ``torch``), ``dt``, ``reset``,
  ``nodes`` (per node: what it became), ``notes`` and ``warnings`` (also in ``mapping.json``).

``evaluate``, ``analyze`` and ``fold`` work on asa_deploy's own networks (``model.pt``) and do not
apply to an imported run.

Mapping NIR (nir 1.0.4, what sinabs 3.1.3 pins) onto chip layers
---------------------------------------------------------------
A chip core integrates ``v += W s`` per input spike, fires while ``v >= threshold`` and subtracts
the threshold or resets to 0, with no leak. Per node of the graph (nested subgraphs are inlined):

- ``Conv2d`` -> ``nn.Conv2d`` (groups 1, dilation 1, integer or ``"valid"`` padding; bias kept,
  zeros when absent), ``Affine`` / ``Linear`` -> ``nn.Linear``, ``Flatten`` -> ``nn.Flatten``
  (all of C, H, W), ``SumPool2d`` -> ``sl.SumPool2d``, ``AvgPool2d`` -> ``nn.AvgPool2d`` (square,
  stride = kernel, no padding: what the chip pools).
- Neurons become ``sl.IAFSqueeze`` (MultiSpike: a core may fire several times per time bin) with one
  threshold per layer. NIR states continuous-time equations; a framework's discrete model is their
  Euler step ``dt`` with a spike of value 1 for one step. The input gain per step is ``r * dt``
  (``IF``: ``dv/dt = r I``), ``r * dt / tau`` (``LIF``: ``tau dv/dt = v_leak - v + r I``) and
  ``w_in * r * dt / tau_mem`` (``CubaLIF``: the synaptic current's whole charge, ``w_in`` per input
  spike, reaches the membrane), and the chip threshold is ``v_threshold / gain``.
  ``dt``: ``--dt`` when given; else 1 for ``IF`` (sinabs and Norse integrate ``v += r x`` per step)
  and, per leaky layer, the step at which its membrane gain ``r * dt / tau`` is 1 (snnTorch writes
  ``r = tau / dt``, ``dt = 1e-4``; Rockpool ``r = tau exp(-dt / tau) / dt``; sinabs and Norse
  ``r = 1`` with ``tau`` in their own time unit), so a layer integrates ``v += W s`` as the
  framework did. The leak (``1 - dt / tau`` per step) and the synaptic filter are dropped, with a
  note: the chip has neither (fine-tune as IAF if accuracy suffers).
- Per-neuron thresholds (or gains) are collapsed to their median per layer with a warning giving
  their spread: a core has one threshold (SynSense's NIR-to-Speck tutorial likewise sets each
  layer's ``spike_threshold`` to a single value, its first neuron's). Per-neuron leaks (``tau`` or
  ``tau_syn`` varying within a layer) and ``v_leak != 0`` are refused.
- Reset: NIR 1.0.4's equations subtract the threshold, so graphs without ``v_reset`` subtract;
  newer writers (nir >= 1.0.6, e.g. snnTorch 1.0) add ``v_reset`` (reset to that value): 0 means the
  chip's reset to zero, anything else is refused. ``--reset subtract|zero`` overrides both (Norse's
  IAF resets to 0 but its nir 1.0.4 graph cannot say so). Graphs written by asa_deploy keep their
  reset mode and ``min_v_mem`` from the metadata.
- Membrane floor: NIR has none, nor do snnTorch, Norse and Rockpool, so by default none
  (``min_v_mem`` -inf: ``threshold_low`` at the chip state's most negative value, where it saturates
  anyway). ``--floor threshold`` sets ``-threshold`` instead, as ``sinabs.from_nir`` and SynSense's
  tutorial do: right for a sinabs network trained with ``min_v_mem = -spike_threshold``.
- Anything else is refused naming the node and the reason: ``LI`` / ``I`` / ``CubaLI`` (non-spiking
  readouts), ``Scale``, ``Threshold``, ``Delay``, ``Conv1d``, empty nodes (an exporter with no
  mapping for a module, e.g. Norse's for ``nn.Flatten``), branches, recurrent edges, and shapes that
  do not chain. A leading batch dimension of 1 in the ``Input`` (snnTorch, Norse and Rockpool trace
  with a batch) is dropped.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import OrderedDict
from pathlib import Path

import h5py
import nir
import numpy as np
import sinabs.activation as sa
import sinabs.layers as sl
import torch
from nir.serialization import hdf2dict
from torch import nn

from asa_deploy import io, provenance
from asa_deploy.chip.compile import SensorInput, chip_inputs
from asa_deploy.chip.lower import flatten_modules, lower
from asa_deploy.data import CacheSetting, FrameSpec, open_dataset
from asa_deploy.errors import ArtifactError, AsaDeployError, CompileError, DataSpecError
from asa_deploy.export.nir_io import FORMAT as ASA_NIR_FORMAT
from asa_deploy.rundir import IMPORTED, MODEL, supersede

log = logging.getLogger("asa_deploy.import")

IMPORT_FORMAT = 1
RESETS = ("auto", "subtract", "zero")
FLOORS = ("none", "threshold")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
DEFAULT_FRAME = FrameSpec(T=10, dt_us=10_000)  # without --data: 100 ms windows of 10 ms bins
UNIFORM_RTOL = 1e-5
MODEL_REMEDY = ("pass a .nir graph (nir.write of sinabs.to_nir, snntorch.export_to_nir, "
                "norse.torch.to_nir or rockpool's to_nir) or an nn.Sequential saved with "
                "torch.save(model, PATH)")

# Why each NIR node type that is not a chip layer is refused.
REFUSED = {
    "LI": "a non-spiking leaky integrator (a readout); a chip core's outputs are spikes: end the "
          "graph with a spiking layer (IF, LIF, CubaLIF) and count its spikes",
    "I": "a non-spiking integrator (a readout); a chip core's outputs are spikes: end the graph "
         "with a spiking layer (IF, LIF, CubaLIF) and count its spikes",
    "CubaLI": "a non-spiking current-based integrator (a readout); a chip core's outputs are "
              "spikes: end the graph with a spiking layer and count its spikes",
    "Scale": "an elementwise scale between layers, which no core computes: fold it into the "
             "next layer's weights before exporting",
    "Threshold": "a bare threshold without a membrane; use an IF node",
    "Delay": "synaptic delays, which the chip does not have",
    "Conv1d": "a 1-D convolution; the chip convolves 2-D event maps (Conv2d)",
}


# ---- reading the model file ------------------------------------------------------------------------

def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_format(path: Path) -> str:
    """``nir`` (an HDF5 file) or ``torch`` (a torch.save zip or pickle); else an error naming it."""
    if not path.is_file():
        raise io.artifact_error(path, "no such model file" if not path.exists()
                                else "a folder, not a model file", MODEL_REMEDY)
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(HDF5_SIGNATURE):
        return "nir"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    what = "empty" if not head else "neither a NIR graph (HDF5) nor a torch.save file"
    raise io.artifact_error(path, f"not a model: {what}", MODEL_REMEDY)


def read_nir_file(path: Path) -> tuple[nir.NIRGraph, list[str]]:
    """The graph in ``path`` and notes on what was left out. Written by any nir version: nodes
    carrying fields nir 1.0.4 lacks keep ``v_reset`` (set on the node) and drop the rest, noted."""
    try:
        with h5py.File(path, "r") as f:
            if "node" not in f:
                raise io.artifact_error(path, "not a model: an HDF5 file without NIR's 'node' "
                                              "group", MODEL_REMEDY)
            data = hdf2dict(f["node"])
    except ArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 - h5py raises OSError, KeyError, ValueError, ...
        raise io.artifact_error(path, f"a NIR file that cannot be read: truncated or corrupt "
                                      f"({io.brief(exc)})", MODEL_REMEDY) from exc
    notes: list[str] = []
    node = _build_node(path, data, "", notes)
    if not isinstance(node, nir.NIRGraph):
        raise io.artifact_error(path, f"holds a single {type(node).__name__} node, not a NIR "
                                      f"graph", MODEL_REMEDY)
    return node, notes


def _build_node(path: Path, data, name: str, notes: list[str]):
    where = f"node {name!r}" if name else "the graph"
    if not isinstance(data, dict) or "type" not in data:
        raise io.artifact_error(path, f"{where} has no type: not a NIR graph", MODEL_REMEDY)
    kind = str(data["type"])
    cls = getattr(nir, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, nir.NIRNode)):
        raise CompileError(f"{path}: {where} is a {kind}, a NIR node this nir ({nir.version}) "
                           f"does not know; asa-deploy imports Conv2d, Affine, Linear, Flatten, "
                           f"SumPool2d, AvgPool2d, IF, LIF and CubaLIF")
    data = dict(data)
    if kind == "NIRGraph":
        nodes = {k: _build_node(path, v, f"{name}.{k}" if name else k, notes)
                 for k, v in data.get("nodes", {}).items()}
        edges = [(_text(a), _text(b)) for a, b in data.get("edges", [])]
        metadata = data.get("metadata") or {}
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)
    v_reset = data.pop("v_reset", None)
    while True:
        try:
            node = cls.from_dict(dict(data))
            break
        except TypeError as exc:
            extra = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
            if not extra or extra.group(1) not in data:
                raise io.artifact_error(path, f"{where} ({kind}) cannot be built: "
                                              f"{io.brief(exc)}", MODEL_REMEDY) from exc
            data.pop(extra.group(1))
            notes.append(f"{name}: field {extra.group(1)!r} (from a newer nir) ignored")
        except (AssertionError, ValueError, KeyError) as exc:
            raise io.artifact_error(path, f"{where} ({kind}) is malformed: {io.brief(exc)}",
                                    MODEL_REMEDY) from exc
    if v_reset is not None:
        node.v_reset = np.asarray(v_reset, dtype=np.float64)
    return node


def _text(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


# ---- NIR graph -> nn.Sequential ----------------------------------------------------------------------

def _array(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def _pair(value, name: str, what: str) -> tuple[int, int]:
    arr = np.asarray(_array(value)).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    if arr.size != 2 or np.any(arr != np.round(arr)):
        raise CompileError(f"NIR import: node {name!r}: {what} {value!r} is not one or two integers")
    return int(arr[0]), int(arr[1])


def _uniform(values: np.ndarray) -> bool:
    flat = values.reshape(-1)
    return bool(np.allclose(flat, flat[0], rtol=UNIFORM_RTOL, atol=0.0)) if flat.size else True


def _module_name(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", name) or "node"


def _flat_graph(graph: nir.NIRGraph, prefix: str = "") -> tuple[dict, list]:
    """Nested subgraphs inlined: nodes by dotted name, edges rewired through their Input / Output
    nodes (which then pass their input on)."""
    nodes, edges, entry, exit_ = {}, [], {}, {}
    for name, node in graph.nodes.items():
        full = prefix + name
        if isinstance(node, nir.NIRGraph):
            inner, inner_edges = _flat_graph(node, full + ".")
            nodes.update(inner)
            edges += inner_edges
            entry[name] = [f"{full}.{k}" for k, n in node.nodes.items() if isinstance(n, nir.Input)]
            exit_[name] = [f"{full}.{k}" for k, n in node.nodes.items() if isinstance(n, nir.Output)]
        else:
            nodes[full] = node
    for a, b in graph.edges:
        a, b = _text(a), _text(b)
        for name in (a, b):
            if name not in graph.nodes:
                raise CompileError(f"NIR import: the edge {a!r} -> {b!r} names a node "
                                   f"{prefix + name!r} the graph does not have")
        edges += [(s, d) for s in exit_.get(a, [prefix + a]) for d in entry.get(b, [prefix + b])]
    return nodes, edges


def _reaches(succ: dict, start: str, target: str) -> bool:
    todo, seen = [start], set()
    while todo:
        node = todo.pop()
        if node == target:
            return True
        if node not in seen:
            seen.add(node)
            todo += succ.get(node, [])
    return False


def _back_edge(succ: dict, start: str) -> tuple[str, str] | None:
    """The first edge, in a depth-first walk from ``start``, that leads back to a node on the
    current path (the edge that closes a recurrent loop)."""
    state = {start: "open"}
    stack = [(start, iter(succ.get(start, [])))]
    while stack:
        node, targets = stack[-1]
        nxt = next(targets, None)
        if nxt is None:
            state[node] = "done"
            stack.pop()
        elif state.get(nxt) == "open":
            return node, nxt
        elif nxt not in state:
            state[nxt] = "open"
            stack.append((nxt, iter(succ.get(nxt, []))))
    return None


def chain_order(graph: nir.NIRGraph) -> tuple[list[str], dict]:
    """The node names from the Input to the Output (nested graphs inlined) and the node table;
    refuses empty nodes, branches, recurrent edges and nodes off the chain, naming them."""
    nodes, edges = _flat_graph(graph)
    empty = [name for name, node in nodes.items() if node is None]
    if empty:
        raise CompileError(f"NIR import: node {empty[0]!r} is empty (None): the exporter had no "
                           f"NIR mapping for that module (Norse's to_nir has none for nn.Flatten "
                           f"or pooling, snnTorch's prints 'module not implemented'); rebuild the "
                           f"network from layers the exporter maps")
    succ: dict[str, list[str]] = {}
    pred: dict[str, list[str]] = {}
    for a, b in edges:
        succ.setdefault(a, []).append(b)
        pred.setdefault(b, []).append(a)
    inputs = [n for n in graph.nodes if isinstance(graph.nodes[n], nir.Input)]
    back = _back_edge(succ, inputs[0]) if len(inputs) == 1 else None
    if back is None:  # a loop the input does not reach
        back = next(((a, b) for a, targets in succ.items() for b in targets
                     if a == b or _reaches(succ, b, a)), None)
    if back is not None:
        raise CompileError(f"NIR import: recurrent edge {back[0]!r} -> {back[1]!r} (back to a "
                           f"node before it); a chip core feeds only later cores, so asa-deploy "
                           f"imports feed-forward chains")
    if len(inputs) != 1:
        raise CompileError(f"NIR import: the graph has {len(inputs)} Input nodes {inputs}; a chip "
                           f"network takes one input (the event sensor)")
    order = [inputs[0]]
    while succ.get(order[-1]):
        here, nxt = order[-1], succ[order[-1]]
        if len(nxt) > 1:
            raise CompileError(f"NIR import: node {here!r} feeds {nxt}; asa-deploy imports a chain "
                               f"(no branches or skip connections: a core sends to at most two "
                               f"others and nothing merges them back)")
        if len(pred.get(nxt[0], [])) > 1:
            raise CompileError(f"NIR import: node {nxt[0]!r} receives from {pred[nxt[0]]}; "
                               f"asa-deploy imports a chain (no merging branches)")
        order.append(nxt[0])
    last = nodes[order[-1]]
    if not isinstance(last, nir.Output) or "." in order[-1]:
        raise CompileError(f"NIR import: the chain from {inputs[0]!r} ends at {order[-1]!r} "
                           f"({type(last).__name__}), not at the graph's Output node")
    off = [n for n in nodes if n not in order]
    if off:
        raise CompileError(f"NIR import: nodes {off} are not on the chain from {inputs[0]!r} to "
                           f"{order[-1]!r}; asa-deploy imports one chain from input to output")
    return order, nodes


class _GraphImporter:
    """Walks the chain, tracking the shape, and builds the Sequential (see the module docstring)."""

    def __init__(self, graph: nir.NIRGraph, *, dt: float | None, reset: str, floor: str,
                 input_shape: tuple[int, ...] | None):
        if reset not in RESETS:
            raise AsaDeployError(f"reset {reset!r} unknown; use one of {RESETS}")
        if floor not in FLOORS:
            raise AsaDeployError(f"floor {floor!r} unknown; use one of {FLOORS}")
        self.floor = floor
        if dt is not None and not (np.isfinite(dt) and dt > 0):
            raise AsaDeployError(f"dt must be a positive number, got {dt!r}")
        self.graph, self.dt, self.reset = graph, dt, reset
        self.ours = graph.metadata.get("format") == ASA_NIR_FORMAT
        self.override = input_shape
        self.modules: OrderedDict[str, nn.Module] = OrderedDict()
        self.records: list[dict] = []
        self.notes: list[str] = []
        self.warnings: list[str] = []
        self.shape: tuple[int, ...] = ()
        self.input_shape: tuple[int, ...] = ()

    def run(self) -> tuple[nn.Sequential, tuple[int, int, int]]:
        order, nodes = chain_order(self.graph)
        self._input(order[0], nodes[order[0]])
        for name in order[1:]:
            node = nodes[name]
            if isinstance(node, (nir.Input, nir.Output)):
                continue
            handler = getattr(self, f"_{type(node).__name__}", None)
            if handler is None:
                reason = REFUSED.get(type(node).__name__, "no chip equivalent")
                raise CompileError(f"NIR import: node {name!r} is a {type(node).__name__}: "
                                   f"{reason}. asa-deploy imports Conv2d, Affine, Linear, Flatten, "
                                   f"SumPool2d, AvgPool2d, IF, LIF and CubaLIF")
            before = self.shape
            handler(name, node)
            self.records.append({"node": name, "type": type(node).__name__,
                                 "input": list(before), "output": list(self.shape)})
        if len(self.input_shape) != 3:
            raise CompileError(f"NIR import: the Input takes {list(self.input_shape)}; a chip takes "
                               f"[C, H, W] event maps: pass --input-shape C,H,W (product "
                               f"{int(np.prod(self.input_shape))}) to read it as one")
        return nn.Sequential(self.modules), tuple(int(s) for s in self.input_shape)

    def _add(self, name: str, module: nn.Module) -> None:
        key = _module_name(name)
        while key in self.modules:
            key += "_"
        self.modules[key] = module

    def _input(self, name: str, node: nir.Input) -> None:
        shape = [int(s) for s in np.asarray(node.input_type["input"]).reshape(-1)]
        if len(shape) in (2, 4) and shape[0] == 1:
            shape = shape[1:]
            self.notes.append(f"{name}: leading batch dimension 1 of the Input dropped")
        if self.override is not None:
            want = tuple(int(s) for s in self.override)
            if int(np.prod(want)) != int(np.prod(shape)):
                raise CompileError(f"NIR import: --input-shape {'x'.join(map(str, want))} has "
                                   f"{int(np.prod(want))} values, the Input {name!r} takes "
                                   f"{shape} ({int(np.prod(shape))})")
            if len(shape) != len(want):
                self._add(f"{name}_flatten", nn.Flatten())
                self.notes.append(f"{name}: the flat input of {shape[0]} values read as "
                                  f"{'x'.join(map(str, want))} (C, H, W), flattened")
                self.input_shape, self.shape = want, (int(np.prod(want)),)
                return
            shape = list(want)
        self.input_shape = self.shape = tuple(shape)

    # -- synapses and shape ops --------------------------------------------------------------------

    def _Conv2d(self, name: str, node: nir.Conv2d) -> None:
        weight = _array(node.weight).astype(np.float32)
        if weight.ndim != 4:
            raise CompileError(f"NIR import: node {name!r}: Conv2d weight of shape "
                               f"{list(weight.shape)}, expected [out, in, kH, kW]")
        if len(self.shape) != 3 or weight.shape[1] != self.shape[0]:
            raise CompileError(f"NIR import: node {name!r} (Conv2d) takes {weight.shape[1]} "
                               f"channels, but receives {list(self.shape)}: the shapes do not chain")
        if int(np.asarray(node.groups)) != 1 or _pair(node.dilation, name, "dilation") != (1, 1):
            raise CompileError(f"NIR import: node {name!r}: groups {node.groups}, dilation "
                               f"{node.dilation}; a core runs dense, undilated convolutions")
        padding = node.padding
        if isinstance(padding, (str, bytes)):
            if _text(padding) != "valid":
                raise CompileError(f"NIR import: node {name!r}: padding {_text(padding)!r}; give "
                                   f"integer padding (the chip pads 0..7 per side)")
            padding = (0, 0)
        stride, padding = _pair(node.stride, name, "stride"), _pair(padding, name, "padding")
        declared = node.input_shape
        if declared is not None and tuple(int(s) for s in np.asarray(declared).reshape(-1)) != \
                tuple(self.shape[1:]):
            raise CompileError(f"NIR import: node {name!r} (Conv2d) declares input "
                               f"{list(np.asarray(declared).reshape(-1))} but receives "
                               f"{list(self.shape[1:])}: the shapes do not chain")
        conv = nn.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]), stride,
                         padding, bias=True)
        conv.weight.data = torch.from_numpy(weight)
        bias = node.bias if node.bias is not None else np.zeros(weight.shape[0])
        conv.bias.data = torch.from_numpy(np.broadcast_to(_array(bias), (weight.shape[0],))
                                          .astype(np.float32).copy())
        c, h, w = self.shape
        out = (weight.shape[0], (h + 2 * padding[0] - weight.shape[2]) // stride[0] + 1,
               (w + 2 * padding[1] - weight.shape[3]) // stride[1] + 1)
        if min(out[1:]) < 1:
            raise CompileError(f"NIR import: node {name!r} (Conv2d): kernel "
                               f"{list(weight.shape[2:])} does not fit its {h}x{w} input")
        self._add(name, conv)
        self.shape = out

    def _dense(self, name: str, weight, bias) -> None:
        weight = _array(weight).astype(np.float32)
        if weight.ndim != 2:
            raise CompileError(f"NIR import: node {name!r}: weight of shape {list(weight.shape)}, "
                               f"expected [out, in]")
        if len(self.shape) != 1:
            raise CompileError(f"NIR import: node {name!r} (dense) receives a "
                               f"{'x'.join(map(str, self.shape))} map; add a Flatten before it")
        if weight.shape[1] != self.shape[0]:
            raise CompileError(f"NIR import: node {name!r} takes {weight.shape[1]} inputs but "
                               f"receives {self.shape[0]}: the shapes do not chain")
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        linear.weight.data = torch.from_numpy(weight)
        if bias is not None:
            linear.bias.data = torch.from_numpy(np.broadcast_to(_array(bias), (weight.shape[0],))
                                                .astype(np.float32).copy())
        self._add(name, linear)
        self.shape = (int(weight.shape[0]),)

    def _Affine(self, name: str, node: nir.Affine) -> None:
        self._dense(name, node.weight, node.bias)

    def _Linear(self, name: str, node: nir.Linear) -> None:
        self._dense(name, node.weight, None)

    def _Flatten(self, name: str, node: nir.Flatten) -> None:
        n = len(self.shape)
        start, end = int(node.start_dim), int(node.end_dim)
        if n == 1:
            return
        if start not in (0, -n) or end not in (-1, n - 1):
            raise CompileError(f"NIR import: node {name!r}: Flatten from dim {start} to {end} of "
                               f"a {list(self.shape)} map leaves it {n}-D; only a full flatten "
                               f"(of C, H, W) before a dense layer maps onto a core")
        self._add(name, nn.Flatten())
        self.shape = (int(np.prod(self.shape)),)

    def _pool(self, name: str, node, module) -> None:
        kind = type(node).__name__
        k = _pair(node.kernel_size, name, "kernel_size")
        stride = _pair(node.stride if node.stride is not None else node.kernel_size, name, "stride")
        padding = _pair(node.padding if node.padding is not None else 0, name, "padding")
        if k[0] != k[1] or stride != k or padding != (0, 0):
            raise CompileError(f"NIR import: node {name!r} ({kind}): kernel {k}, stride {stride}, "
                               f"padding {padding}; the chip pools squares with stride = kernel "
                               f"and no padding")
        if len(self.shape) != 3:
            raise CompileError(f"NIR import: node {name!r} ({kind}) receives a flat "
                               f"{list(self.shape)} input; pooling needs a [C, H, W] map")
        c, h, w = self.shape
        if h // k[0] < 1 or w // k[0] < 1:
            raise CompileError(f"NIR import: node {name!r} ({kind}): pooling {k[0]} does not fit "
                               f"its {h}x{w} input")
        self._add(name, module(k[0]))
        self.shape = (c, h // k[0], w // k[0])

    def _SumPool2d(self, name: str, node: nir.SumPool2d) -> None:
        self._pool(name, node, sl.SumPool2d)

    def _AvgPool2d(self, name: str, node: nir.AvgPool2d) -> None:
        self._pool(name, node, nn.AvgPool2d)

    # -- neurons -----------------------------------------------------------------------------------

    def _param(self, name: str, node, field: str, default=None) -> np.ndarray:
        value = getattr(node, field, default)
        if value is None:
            value = default
        arr = _array(value)
        if arr.size == 1:
            return np.full(self.shape, float(arr.reshape(-1)[0]))
        if tuple(arr.shape) != tuple(self.shape):
            raise CompileError(f"NIR import: node {name!r} ({type(node).__name__}): {field} of "
                               f"shape {list(arr.shape)} does not fit the {list(self.shape)} "
                               f"input it receives: the shapes do not chain")
        if not np.all(np.isfinite(arr)):
            raise CompileError(f"NIR import: node {name!r}: {field} holds non-finite values")
        return arr

    def _IF(self, name: str, node: nir.IF) -> None:
        dt = 1.0 if self.dt is None else self.dt
        gain = self._param(name, node, "r") * dt
        self._neuron(name, node, gain, f"IF: gain r * dt, dt {dt:g}")

    def _leaky(self, name: str, node, tau_field: str) -> tuple[np.ndarray, np.ndarray, float]:
        tau = self._param(name, node, tau_field)
        r = self._param(name, node, "r")
        if np.any(tau <= 0) or not _uniform(tau):
            raise CompileError(f"NIR import: node {name!r} ({type(node).__name__}): per-neuron "
                               f"leaks ({tau_field} from {tau.min():.4g} to {tau.max():.4g}); a "
                               f"core has no leak at all, and dropping a different leak per neuron "
                               f"is not one network: export with one {tau_field} per layer")
        v_leak = self._param(name, node, "v_leak", 0.0)
        if np.any(v_leak != 0):
            raise CompileError(f"NIR import: node {name!r} ({type(node).__name__}): v_leak "
                               f"{float(np.abs(v_leak).max()):.4g} != 0 (a resting potential the "
                               f"membrane decays to); a core has none: export with v_leak = 0")
        if np.any(r <= 0):
            raise CompileError(f"NIR import: node {name!r}: r <= 0 (the input resistance)")
        dt = self.dt if self.dt is not None else float(np.median(tau / r))
        self.notes.append(f"{name}: {type(node).__name__} -> IAF; the chip has no leak, the decay "
                          f"{1 - dt / float(tau.flat[0]):.4g} per step (dt {dt:.4g}, tau "
                          f"{float(tau.flat[0]):.4g}) is dropped (approximate: fine-tune as IAF)")
        return tau, r, dt

    def _LIF(self, name: str, node: nir.LIF) -> None:
        tau, r, dt = self._leaky(name, node, "tau")
        how = "--dt" if self.dt is not None else "the step with r * dt / tau = 1"
        self._neuron(name, node, r * dt / tau, f"LIF: gain r * dt / tau, dt {dt:.4g} ({how})")

    def _CubaLIF(self, name: str, node: nir.CubaLIF) -> None:
        tau, r, dt = self._leaky(name, node, "tau_mem")
        tau_syn = self._param(name, node, "tau_syn")
        if np.any(tau_syn <= 0) or not _uniform(tau_syn):
            raise CompileError(f"NIR import: node {name!r} (CubaLIF): per-neuron synaptic leaks "
                               f"(tau_syn from {tau_syn.min():.4g} to {tau_syn.max():.4g}); export "
                               f"with one tau_syn per layer")
        w_in = self._param(name, node, "w_in", 1.0)
        self.notes.append(f"{name}: the synaptic current filter (tau_syn {float(tau_syn.flat[0]):.4g}) "
                          f"is dropped; its whole charge (w_in per input spike) reaches the "
                          f"membrane at once")
        how = "--dt" if self.dt is not None else "the step with r * dt / tau_mem = 1"
        self._neuron(name, node, w_in * r * dt / tau,
                     f"CubaLIF: gain w_in * r * dt / tau_mem, dt {dt:.4g} ({how})")

    def _reset_mode(self, name: str, node, meta: dict | None) -> tuple[bool, str]:
        if self.reset != "auto":
            return self.reset == "zero", f"--reset {self.reset}"
        if meta is not None:
            return _text(meta.get("reset", "subtract")) == "zero", "asa_deploy metadata"
        v_reset = getattr(node, "v_reset", None)
        if v_reset is None:
            return False, "NIR 1.0.4: subtract the threshold"
        if np.any(_array(v_reset) != 0):
            raise CompileError(f"NIR import: node {name!r}: v_reset {float(np.max(np.abs(v_reset))):.4g} "
                               f"!= 0; a core resets to 0 or subtracts the threshold (pass --reset "
                               f"subtract to read the graph as subtracting)")
        return True, "v_reset = 0 (reset to zero)"

    def _neuron(self, name: str, node, gain: np.ndarray, how: str) -> None:
        threshold = self._param(name, node, "v_threshold")
        if not np.all(np.isfinite(gain)) or np.any(gain <= 0):
            raise CompileError(f"NIR import: node {name!r}: input gain ({how}) is not a positive "
                               f"finite number (from {np.nanmin(gain):.4g} to {np.nanmax(gain):.4g})")
        effective = threshold / gain
        if np.any(effective <= 0):
            raise CompileError(f"NIR import: node {name!r}: v_threshold <= 0; a core fires at a "
                               f"positive threshold")
        value = float(np.median(effective))
        if not _uniform(effective):
            message = (f"{name}: per-neuron thresholds (v_threshold / gain) from "
                       f"{effective.min():.4g} to {effective.max():.4g} collapsed to their median "
                       f"{value:.4g}: a core has one threshold")
            self.warnings.append(message)
            log.warning("%s", message)
        meta = (self.graph.metadata.get("layers", {}).get(name) if self.ours else None)
        if meta is not None and ("initial_state" in meta or "kill" in meta):
            raise CompileError(f"NIR import: node {name!r} carries per-neuron initial states or "
                               f"kill bits (an asa_deploy fold); compile the run it was exported "
                               f"from instead")
        zero, why = self._reset_mode(name, node, meta)
        if meta is not None:
            floor, where = float(meta["min_v_mem"]), "asa_deploy metadata"
        elif self.floor == "threshold":
            floor, where = -value, "--floor threshold"
        else:
            floor, where = -np.inf, "none, as in NIR"
        self.notes.append(f"{name}: threshold {value:.6g} ({how}); reset "
                          f"{'to zero' if zero else 'by subtraction'} ({why}); membrane floor "
                          f"{floor:.6g} ({where})")
        self._add(name, sl.IAFSqueeze(
            batch_size=1, spike_threshold=torch.tensor(value), min_v_mem=torch.tensor(floor),
            spike_fn=sa.MultiSpike,
            reset_fn=sa.MembraneReset() if zero else sa.MembraneSubtract()))


def nir_to_network(graph: nir.NIRGraph, *, dt: float | None = None, reset: str = "auto",
                   floor: str = "none", input_shape: tuple[int, int, int] | None = None
                   ) -> tuple[nn.Sequential, dict]:
    """A NIR graph (nir.read, or any framework's exporter) as an ``nn.Sequential`` of torch / sinabs
    layers and a record: input shape, per-node mapping, notes and warnings."""
    if not isinstance(graph, nir.NIRGraph):
        raise CompileError(f"NIR import: got a {type(graph).__name__}, not a NIRGraph")
    importer = _GraphImporter(graph, dt=dt, reset=reset, floor=floor, input_shape=input_shape)
    network, shape = importer.run()
    return network, {"input_shape": list(shape), "nodes": importer.records,
                     "notes": importer.notes, "warnings": importer.warnings}


def complete_shapes(graph: nir.NIRGraph, **options) -> nir.NIRGraph:
    """Fill in, from the chain's shapes, what ``nir.write`` needs and some exporters leave unset:
    ``Conv2d.input_shape`` and ``Flatten``'s input type (snnTorch 0.9.4's and Norse 1.1's exporters
    leave them None, and nir 1.0.4's ``infer_types`` fails on their scalar neuron parameters).
    Changes nothing else; ``options`` as for ``nir_to_network``. Returns ``graph``."""
    _, info = nir_to_network(graph, **options)
    nodes, _ = _flat_graph(graph)
    for record in info["nodes"]:
        node = nodes[record["node"]]
        if isinstance(node, nir.Conv2d) and node.input_shape is None:
            node.input_shape = tuple(record["input"][1:])
        if isinstance(node, nir.Flatten) and node.input_type.get("input") is None:
            node.input_type = {"input": np.array(record["input"])}
            node.output_type = {"output": np.array(record["output"])}
    return graph


# ---- torch.save'd models ------------------------------------------------------------------------------

def load_torch_model(path: Path) -> nn.Sequential:
    """The ``nn.Sequential`` in a ``torch.save(model, path)`` file, its nested Sequentials
    flattened; anything else is refused naming the file."""
    try:
        obj = torch.load(path, weights_only=False, map_location="cpu")
    except AttributeError as exc:  # pickle: the class is not importable here
        raise io.artifact_error(path, f"a pickled model whose class cannot be found here "
                                      f"({io.brief(exc)}): save an nn.Sequential of torch / sinabs "
                                      f"layers, not a class defined in your script",
                                MODEL_REMEDY) from exc
    except Exception as exc:  # noqa: BLE001 - zip, pickle, EOF: all mean unreadable
        raise io.artifact_error(path, f"not a model: a torch file that cannot be read, truncated "
                                      f"or corrupt ({io.brief(exc)})", MODEL_REMEDY) from exc
    if isinstance(obj, dict):
        if "model_spec" in obj and "weights" in obj:
            what = "an asa-deploy model.pt (its run directory is a run already: compile it)"
        elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            what = "a state_dict (weights without the layers); save the module itself"
        else:
            what = f"a dict with keys {sorted(map(str, obj))[:8]}"
        raise io.artifact_error(path, f"not a model: {what}", MODEL_REMEDY)
    if not isinstance(obj, nn.Module):
        raise io.artifact_error(path, f"not a model: it holds a {type(obj).__name__}", MODEL_REMEDY)
    from asa_deploy.nn.network import SpikingNetwork

    if isinstance(obj, SpikingNetwork):
        raise io.artifact_error(path, "an asa_deploy SpikingNetwork: train it with asa-deploy "
                                      "train (its run directory is what compile takes)", MODEL_REMEDY)
    if not isinstance(obj, nn.Sequential):
        raise io.artifact_error(path, f"a {type(obj).__name__}, whose layer order cannot be read "
                                      f"from its forward(); save an nn.Sequential of torch / "
                                      f"sinabs layers", MODEL_REMEDY)
    modules = OrderedDict()
    for name, module in flatten_modules(obj):
        key = _module_name(name)
        while key in modules:
            key += "_"
        modules[key] = module
    return nn.Sequential(modules).eval()


# ---- the import stage ----------------------------------------------------------------------------------

def _pick_downsample(sensor: tuple[int, int, int], shape: tuple[int, int, int],
                     downsample: int | None, data: str) -> int:
    width, height, _ = sensor
    _, h, w = shape
    options = [downsample] if downsample else [d for d in (1, 2, 4, 8)]
    for d in options:
        if height // d == h and width // d == w:
            return d
    tried = f"downsample {downsample}" if downsample else "downsample 1, 2, 4 or 8"
    raise DataSpecError(f"{data}: its {width}x{height} sensor does not give the network's {h}x{w} "
                        f"input with {tried}; pass --downsample, or data from the sensor the model "
                        f"was trained on")


def data_record(data: str | None, input_shape: tuple[int, int, int], num_classes: int, *,
                T: int | None = None, dt_us: int | None = None,
                downsample: int | None = None, cache: CacheSetting = None) -> dict:
    """What the imported model expects from its input (``model.pt``'s ``data`` keys); ``cache``:
    where decoded recordings live (``open_dataset``)."""
    c, h, w = input_shape
    if data is None:
        d = downsample or 1
        frames = FrameSpec(T=T or DEFAULT_FRAME.T, dt_us=dt_us or DEFAULT_FRAME.dt_us, downsample=d)
        return {"spec": None, "sensor_size": [w * d, h * d, c],
                "class_names": [str(k) for k in range(num_classes)],
                "frame_spec": frames.to_dict(), "split": {"seed": 0}, "skipped": []}
    dataset = open_dataset(data, cache=cache)
    sensor = tuple(int(v) for v in dataset.sensor_size)
    d = _pick_downsample(sensor, input_shape, downsample, data)
    if c not in (1, sensor[2]):
        raise DataSpecError(f"{data}: the network takes {c} input channels, the sensor gives "
                            f"{sensor[2]} polarities (1 channel merges them)")
    names = list(dataset.class_names)
    if len(names) != num_classes:
        raise DataSpecError(f"{data} has {len(names)} classes ({', '.join(names[:12])}) but the "
                            f"model's last layer has {num_classes} output channels; import it with "
                            f"data of its own classes")
    default = dataset.frame_spec
    frames = FrameSpec(T=T or default.T, dt_us=dt_us or default.dt_us, downsample=d)
    return {"spec": data, "sensor_size": list(sensor), "class_names": names,
            "frame_spec": frames.to_dict(), "split": {"seed": 0},
            "skipped": [list(s) for s in dataset.skipped]}


def import_model(model: str | Path, out_dir: str | Path, *, data: str | None = None,
                 input_shape: tuple[int, int, int] | None = None, dt: float | None = None,
                 reset: str = "auto", floor: str = "none", T: int | None = None,
                 dt_us: int | None = None, downsample: int | None = None,
                 cache: CacheSetting = None) -> dict:
    """The import stage: read ``model`` (.nir graph or torch.save'd nn.Sequential), map it onto
    chip layers, check that the chip lowering accepts it, and write ``OUT/imported.pt``. Returns
    the record (without the network). ``cache``: where ``data``'s decoded recordings live
    (``open_dataset``)."""
    path, out_dir = Path(model), Path(out_dir)
    kind = model_format(path)
    notes: list[str] = []
    if kind == "nir":
        graph, notes = read_nir_file(path)
        network, info = nir_to_network(graph, dt=dt, reset=reset, floor=floor,
                                       input_shape=input_shape)
        shape = tuple(info["input_shape"])
    else:
        network = load_torch_model(path)
        info = {"nodes": [{"node": n, "type": type(m).__name__} for n, m in network.named_children()],
                "notes": [], "warnings": []}
        shape = input_shape or _torch_input_shape(network, data, downsample, cache)
    try:
        lowered = lower(network, shape, bias_policy="leak")
    except CompileError as exc:
        raise CompileError(f"{path}: {exc}") from exc
    num_classes = int(lowered.layers[-1].neuron_shape[0])
    record_data = data_record(data, shape, num_classes, T=T, dt_us=dt_us, downsample=downsample,
                              cache=cache)
    moved_to, moved = supersede(out_dir)
    if moved:
        log.warning("importing into %s: the previous model's artifacts (%s) moved to %s", out_dir,
                    ", ".join(moved), moved_to)
    c, h, w = shape
    record = {
        "format_version": IMPORT_FORMAT, "kind": "imported",
        "model_spec": {"name": path.stem, "input": {"channels": c, "height": h, "width": w}},
        "attention": "none", "num_classes": num_classes, "metrics": None, "data": record_data,
        "import": {"source": str(path), "sha256": sha256(path), "format": kind,
                   "dt": dt, "reset": reset, "floor": floor, "nodes": info["nodes"],
                   "biases": any(layer.bias is not None for layer in lowered.layers),
                   "notes": notes + info["notes"], "warnings": info["warnings"]},
        provenance.KEY: provenance.record(out_dir, source=str(path), source_sha256=sha256(path),
                                          data=data),
    }
    io.save_torch(out_dir / IMPORTED, {**record, "network": network})
    return record


def _torch_input_shape(network: nn.Sequential, data: str | None, downsample: int | None,
                       cache: CacheSetting) -> tuple[int, int, int]:
    first = next((m for m in network.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
    if data is None or not isinstance(first, nn.Conv2d):
        raise AsaDeployError("a torch model does not say what input it takes: pass --input-shape "
                             "C,H,W (or --data SPEC for a network starting with a Conv2d, with "
                             "--downsample if it pools the sensor)")
    width, height, _ = open_dataset(data, cache=cache).sensor_size
    d = downsample or 1
    return int(first.in_channels), int(height) // d, int(width) // d


# ---- reading an imported run ---------------------------------------------------------------------------

IMPORTED_KEYS = ("format_version", "network", "model_spec.input", "data.sensor_size",
                 "data.class_names", "data.frame_spec", "import")


def is_imported(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds an imported model (``imported.pt``, no ``model.pt``)."""
    run_dir = Path(run_dir)
    return (run_dir / IMPORTED).is_file() and not (run_dir / MODEL).is_file()


def load_imported_record(run_dir: str | Path) -> dict:
    """``RUN/imported.pt`` as saved; an ArtifactError naming it when unreadable or not an import."""
    path = Path(run_dir) / IMPORTED
    remedy = f"import the model again (asa-deploy import MODEL --out {run_dir})"
    record = io.load_torch(path, "imported model", remedy=remedy, required_keys=IMPORTED_KEYS)
    if record["format_version"] != IMPORT_FORMAT:
        raise io.artifact_error(path, f"format {record['format_version']!r}, this asa_deploy reads "
                                      f"{IMPORT_FORMAT}", remedy)
    if not isinstance(record["network"], nn.Sequential):
        raise io.artifact_error(path, f"its network is a {type(record['network']).__name__}, not "
                                      f"an nn.Sequential", remedy)
    return record


def load_imported(run_dir: str | Path) -> tuple[nn.Sequential, dict, tuple[int, int, int],
                                                 SensorInput]:
    """The imported network, its record, its input shape and sensor (as ``load_network_for_compile``
    gives them for a trained run)."""
    record = load_imported_record(run_dir)
    input_shape, sensor = chip_inputs(record["model_spec"]["input"], record["data"])
    return record["network"].eval(), record, input_shape, sensor
