"""Branch / merge networks (``SpikingGraph``) on the chip: lowering, compile for every chip, the float
graph against the fast simulator, fast against exact where theory fixes the relation, sinabs's own
``DynapcnnNetwork`` on a graph it can express (sum merges), NIR export, and every refusal."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import sinabs.activation as sa
import sinabs.layers as sl
import torch
import torch.nn.functional as F
from sinabs_reference import iaf as iaf_squeeze
from sinabs_reference import load_dynapcnn
from torch import nn

from asa_deploy.chip.compile import SensorInput, compile_network
from asa_deploy.chip.config import ChipConfig, Destination
from asa_deploy.chip.graph import LoweredGraph, lower_graph
from asa_deploy.chip.mapping import memory_words
from asa_deploy.chip.sim import EventWindow, simulate
from asa_deploy.chip.sim.fast import run_frames
from asa_deploy.chip.spec import hw_configs_dir, load_chip_spec
from asa_deploy.data.events import EVENT_DTYPE
from asa_deploy.device.samna_adapter import translate
from asa_deploy.errors import AsaDeployError, CompileError, ModelSpecError
from asa_deploy.export import chip_config_to_nir, lowered_to_nir, nir_to_sinabs, read_nir, write_nir
from asa_deploy.nn.graph import SpikingGraph

SHAPE = (2, 16, 16)
SENSOR = SensorInput(SHAPE)
EDGES = [("input", "conv"), ("input", "gate"), ("conv", "mid"), ("gate", "mid"), ("mid", "aux"),
         ("mid", "out"), ("aux", "out")]
# Channels of "out"'s Linear input fed by "mid" (6 channels x 4 x 4, first in the concatenation)
MID_FEATURES = 6 * 4 * 4


def iaf(threshold: float) -> sl.IAF:
    return sl.IAF(spike_threshold=torch.tensor(float(threshold)), min_v_mem=-float(threshold),
                  spike_fn=sa.MultiSpike)


def gate_graph(thresholds=(1.0,) * 5) -> SpikingGraph:
    """The input feeds ``conv`` (4 channels, sum pooling 2) and ``gate`` (1 channel, stride 2); ``mid``
    reads both concatenated [conv, gate] and AvgPools; ``mid`` feeds ``aux`` and ``out``, which reads
    [mid, aux] concatenated: fan-out 2 at the input and at mid, two concatenating merges."""
    t = thresholds
    return SpikingGraph(nodes={
        "conv": nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), iaf(t[0]), sl.SumPool2d(2)),
        "gate": nn.Sequential(nn.Conv2d(2, 1, 3, stride=2, padding=1, bias=False), iaf(t[1])),
        "mid": nn.Sequential(nn.Conv2d(5, 6, 3, padding=1, bias=False), iaf(t[2]), nn.AvgPool2d(2)),
        "aux": nn.Sequential(nn.Conv2d(6, 2, 1, bias=False), iaf(t[3])),
        "out": nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 5, bias=False), iaf(t[4])),
    }, edges=EDGES).eval()


def synapse(graph: SpikingGraph, name: str) -> nn.Module:
    return next(m for m in graph.nodes[name] if isinstance(m, (nn.Conv2d, nn.Linear)))


def integer_graph(seed: int) -> tuple[SpikingGraph, dict[str, torch.Tensor]]:
    """``gate_graph`` whose chip integers are known: every core's weights are integers in
    [-60, 127] with a 127 (so quantization's scale is exactly 1) and its threshold an integer.
    Inputs from mid's AvgPool 2 are x 1/4 after lowering, so their float weights are 4 x those."""
    gen = torch.Generator().manual_seed(seed)
    thresholds = torch.randint(120, 300, (5,), generator=gen).tolist()
    graph = gate_graph(thresholds)
    chip = {}
    for name in graph.order:
        weight = synapse(graph, name).weight
        q = torch.randint(-60, 128, weight.shape, generator=gen).float()
        q.view(-1)[0] = 127
        chip[name] = q if q.dim() == 4 else q.reshape(q.shape[0], -1, 4, 4)
        scale = torch.ones_like(q)
        if name == "aux":
            scale[:] = 4
        if name == "out":
            scale[:, :MID_FEATURES] = 4
        weight.data = q * scale
    return graph, chip


def frames(seed: int, batch: int = 2, steps: int = 8) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 3, (batch, steps, *SHAPE), generator=gen).float()
    return x * (torch.rand(x.shape, generator=gen) < 0.4)


def sum_pool(x: torch.Tensor, k: int) -> torch.Tensor:
    if k == 1:
        return x
    return (F.avg_pool2d(x.flatten(0, 1), k) * k * k).unflatten(0, x.shape[:2])


def events(rng: np.random.Generator, n: int, duration: int) -> np.ndarray:
    ev = np.zeros(n, EVENT_DTYPE)
    ev["x"], ev["y"] = rng.integers(0, SHAPE[2], n), rng.integers(0, SHAPE[1], n)
    ev["p"], ev["t"] = rng.integers(0, SHAPE[0], n), np.sort(rng.integers(0, duration, n))
    return ev


# ---- the float graph ------------------------------------------------------------------------------

def test_float_graph_concatenates_in_edge_order_and_trains():
    graph = gate_graph((0.5,) * 5)
    torch.manual_seed(0)
    for name in graph.order:
        synapse(graph, name).weight.data.uniform_(-0.05, 0.1)
    assert graph.order == ["conv", "gate", "mid", "aux", "out"] and graph.output == "out"
    x = frames(0)
    outs = graph.outputs(x)
    assert outs["mid"].shape == (2, 8, 6, 4, 4) and outs["out"].shape == (2, 8, 5)
    graph.reset_states()
    conv_input = graph.node_input("mid", [outs["conv"], outs["gate"]])
    assert torch.equal(conv_input[:, :, :4], outs["conv"]) and torch.equal(conv_input[:, :, 4:], outs["gate"])
    graph.reset_states()
    graph.train()
    graph(x).sum().backward()
    for name in graph.order:
        grad = synapse(graph, name).weight.grad
        assert grad is not None and grad.abs().sum() > 0, name


@pytest.mark.parametrize("seed", range(4))
def test_fast_simulator_equals_the_float_graph_per_node_and_bin(seed):
    graph, chip = integer_graph(seed)
    compiled = compile_network(graph, "speck2f", input_shape=SHAPE, sensor=SENSOR)
    core_of = {c.name: c for c in compiled.config.cores}
    for name, q in chip.items():
        assert core_of[name].scale == 1.0
        np.testing.assert_array_equal(core_of[name].weights, q.numpy().astype(np.int8))
    x = frames(seed)
    expected = graph.outputs(x)
    got = run_frames(compiled.config, x)["spikes"]
    assert expected["out"].sum() > 0, "a silent output would make the comparison vacuous"
    for layer in compiled.lowered.layers:
        spikes = got[core_of[layer.name].core]
        want = expected[layer.name] * (4 if layer.name == "mid" else 1)  # AvgPool 2 -> sum / 4
        assert torch.equal(sum_pool(spikes, layer.pool).reshape(want.shape), want), layer.name


# ---- compile -------------------------------------------------------------------------------------

@pytest.mark.parametrize("chip", ["speck2f", "dynapcnn"])
def test_graph_compiles_with_destinations_and_feature_shifts(chip):
    torch.manual_seed(1)
    graph = gate_graph()
    compiled = compile_network(graph, chip, input_shape=SHAPE, sensor=SENSOR)
    config = compiled.config
    core = {c.name: c.core for c in config.cores}
    assert core == {"conv": 0, "gate": 1, "mid": 2, "aux": 3, "out": 4}
    dests = {c.name: c.destinations for c in config.cores}
    assert dests == {"conv": [Destination(2, 2, 0)], "gate": [Destination(2, 1, 4)],
                     "mid": [Destination(3, 2, 0), Destination(4, 2, 0)],
                     "aux": [Destination(4, 1, 6)], "out": []}
    assert [tuple(c.input_shape) for c in config.cores] == [(2, 16, 16), (2, 16, 16), (5, 8, 8),
                                                            (6, 4, 4), (8, 4, 4)]
    assert config.dvs.destinations == [0, 1] and config.readout.source_core == 4
    assert [c.monitor_enable for c in config.cores] == [False] * 4 + [True]
    assert ChipConfig.from_json(config.to_json()) == config
    report = compiled.report(load_chip_spec(chip))
    assert {"from": "aux", "to": "out", "pooling": 1, "feature_shift": 6, "from_core": 3,
            "to_core": 4} in report["graph"]
    # AvgPool 2 of mid's spikes: its consumers' weights on mid's channels x 1/4 (exact on counts)
    lowered = compiled.lowered
    out_weight = synapse(graph, "out").weight.detach().reshape(5, 8, 4, 4)
    assert torch.equal(lowered.layers[4].weight[:, :6], out_weight[:, :6] / 4)
    assert torch.equal(lowered.layers[4].weight[:, 6:], out_weight[:, 6:])
    assert torch.equal(lowered.layers[3].weight, synapse(graph, "aux").weight.detach() / 4)


@pytest.mark.parametrize("chip", ["speck2f", "dynapcnn"])
def test_samna_translation_writes_both_destinations_and_the_feature_shift(chip):
    config = compile_network(gate_graph(), chip, input_shape=SHAPE, sensor=SENSOR).config
    writes = {w.name: w.value for w in translate(config, chip=chip)}
    for i, (core, pooling, shift) in enumerate([(3, 2, 0), (4, 2, 0)]):  # mid -> aux, out
        assert writes[f"cnn_layers[2].destinations[{i}].layer"] == core
        assert writes[f"cnn_layers[2].destinations[{i}].enable"] is True
        assert writes[f"cnn_layers[2].destinations[{i}].pooling"] == pooling
        assert writes[f"cnn_layers[2].destinations[{i}].feature_shift"] == shift
    assert writes["cnn_layers[3].destinations[0].feature_shift"] == 6  # aux -> out, after mid's 6
    assert writes["cnn_layers[1].destinations[0].feature_shift"] == 4  # gate -> mid, after conv's 4
    assert [writes[f"dvs_layer.destinations[{i}].layer"] for i in range(2)] == [0, 1]
    assert all(writes[f"dvs_layer.destinations[{i}].enable"] is True for i in range(2))


def test_graph_without_the_dvs_layer_needs_one_entry_node():
    graph = SpikingGraph(nodes={
        "a": nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), iaf(1.0)),
        "b": nn.Sequential(nn.Conv2d(4, 2, 1, bias=False), iaf(1.0)),
        "c": nn.Sequential(nn.Conv2d(6, 3, 1, bias=False), iaf(1.0))},
        edges=[("input", "a"), ("a", "b"), ("a", "c"), ("b", "c")])
    config = compile_network(graph, "speck2f", input_shape=SHAPE).config
    assert config.dvs is None and config.input_core == 0
    assert config.core(0).destinations == [Destination(1), Destination(2)]
    assert config.core(1).destinations == [Destination(2, 1, 4)]


# ---- exact versus fast where theory fixes the relation -------------------------------------------

def positive_graph(seed: int, w_max: float) -> ChipConfig:
    """Weights in [0, w_max) x threshold 1, zero initial states, subtract reset."""
    graph = gate_graph()
    gen = torch.Generator().manual_seed(seed)
    for name in graph.order:
        weight = synapse(graph, name).weight
        weight.data = torch.rand(weight.shape, generator=gen) * w_max
    return compile_network(graph, "speck2f", input_shape=SHAPE, sensor=SENSOR).config


def test_engines_agree_on_a_graph_without_bursts():
    """Weights in [0, thr] (the quantized weights too: rounding is monotonic): after every exact
    update v < thr, so every neuron's spikes up to any event are floor(its input / thr), what fast
    has emitted by the end of the bin; by induction over the cores in topological order (through
    both merges and both fan-outs) equal inputs per bin give equal spikes per bin, however many
    events share a bin (tests/test_chip_sim.py, the same argument for chains)."""
    config = positive_graph(0, 1.0)
    assert all(int(c.weights.max()) <= c.threshold_high for c in config.cores)
    rng = np.random.default_rng(0)
    windows = [EventWindow(events(rng, 400, 2000), 0, 20, 100) for _ in range(3)]
    exact, fast = simulate(config, windows, "exact"), simulate(config, windows, "fast")
    assert exact.output_spikes.sum() > 50 and np.all(exact.spikes_per_core.sum(axis=0) > 0)
    np.testing.assert_array_equal(exact.output_spikes, fast.output_spikes)
    np.testing.assert_array_equal(exact.spikes_per_core, fast.spikes_per_core)
    np.testing.assert_array_equal(exact.synops_per_core, fast.synops_per_core)


def test_exact_lags_fast_on_a_graph_with_bursts():
    """Weights up to 3 thr: fast emits floor(v / thr) at once where exact emits one and keeps the
    rest; with positive weights exact's cumulative spikes can only lag, core by core."""
    config = positive_graph(1, 3.0)
    rng = np.random.default_rng(1)
    windows = [EventWindow(events(rng, 400, 2000), 0, 20, 100) for _ in range(3)]
    exact, fast = simulate(config, windows, "exact"), simulate(config, windows, "fast")
    assert exact.spikes_per_core.sum() < fast.spikes_per_core.sum()
    assert np.all(exact.spikes_per_core <= fast.spikes_per_core)
    assert np.all(exact.synops_per_core <= fast.synops_per_core)
    assert np.all(np.cumsum(exact.output_spikes, axis=1) <= np.cumsum(fast.output_spikes, axis=1))


# ---- sinabs's DynapcnnNetwork on a graph it can express -------------------------------------------
#
# sinabs 3.1.3 builds graphs with branches and merges, but its ``Merge`` adds its two inputs
# (layers/merge.py: ``data1 + data2``, zero-padding the smaller) and its config builder never sets
# ``feature_shift`` (backend/dynapcnn: no occurrence): concatenation cannot be expressed there. So the
# reference check runs on a branch + sum merge, which our graphs express with merge={"d": "sum"}.

class SinabsBranchMerge(nn.Module):
    """a -> (b, c) -> Merge (sum) -> d -> Linear e: sinabs's own way of writing a graph."""

    def __init__(self, batch: int):
        super().__init__()
        self.conv_a, self.iaf_a, self.pool_a = (nn.Conv2d(2, 4, 3, padding=1, bias=False),
                                                iaf_squeeze(batch, 0.5), sl.SumPool2d(2))
        self.conv_b, self.iaf_b = nn.Conv2d(4, 4, 3, padding=1, bias=False), iaf_squeeze(batch, 0.6)
        self.conv_c, self.iaf_c = nn.Conv2d(4, 4, 1, bias=False), iaf_squeeze(batch, 0.7, True)
        self.merge = sl.Merge()
        self.conv_d, self.iaf_d = (nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False),
                                   iaf_squeeze(batch, 0.8))
        self.flat, self.fc, self.iaf_e = nn.Flatten(), nn.Linear(8 * 4 * 4, 5, bias=False), iaf_squeeze(batch, 0.9)

    def forward(self, x):
        a = self.pool_a(self.iaf_a(self.conv_a(x)))
        d = self.iaf_d(self.conv_d(self.merge(self.iaf_b(self.conv_b(a)), self.iaf_c(self.conv_c(a)))))
        return self.iaf_e(self.fc(self.flat(d)))

    def as_graph(self) -> SpikingGraph:
        return SpikingGraph(nodes={
            "a": nn.Sequential(self.conv_a, self.iaf_a, self.pool_a),
            "b": nn.Sequential(self.conv_b, self.iaf_b), "c": nn.Sequential(self.conv_c, self.iaf_c),
            "d": nn.Sequential(self.conv_d, self.iaf_d), "e": nn.Sequential(self.flat, self.fc, self.iaf_e),
        }, edges=[("input", "a"), ("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("d", "e")],
            merge={"d": "sum"})


def test_sum_merge_graph_equals_sinabs_dynapcnn_network():
    batch, steps = 2, 8
    torch.manual_seed(3)
    net = SinabsBranchMerge(batch)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.weight.data.uniform_(-0.4, 0.8)
    x = frames(3, batch, steps)
    float_graph, float_net = copy.deepcopy(net).as_graph(), copy.deepcopy(net)
    assert torch.equal(float_graph(x), float_net(x.flatten(0, 1)).unflatten(0, (batch, steps)))
    ours = compile_network(net.as_graph(), "speck2f", input_shape=SHAPE)
    dynapcnn_network, constraints = load_dynapcnn()
    ref = dynapcnn_network(copy.deepcopy(net), input_shape=SHAPE, discretize=True)
    theirs = [ref.dynapcnn_layers[i] for i in sorted(ref.dynapcnn_layers)]
    assert [c.name for c in ours.config.cores] == ["a", "b", "c", "d", "e"]
    for core, layer, their in zip(ours.config.cores, ours.lowered.layers, theirs, strict=True):
        assert torch.equal(torch.from_numpy(core.weights).float(), their.conv.weight.data), core.name
        assert core.threshold_high == int(their.spk.spike_threshold)
        assert core.threshold_low == int(their.spk.min_v_mem)
        assert memory_words(layer) == {k: int(v) for k, v in their.memory_summary().items()}
        assert constraints[core.core].fits(their), f"{core.name} on core {core.core}"
    # Topology: sinabs's layer index -> destination indices (-1: exit), with its per-destination pooling
    dest = {c.core: c.destinations for c in ours.config.cores}
    assert {i: [d.core for d in dest[i]] or [-1] for i in dest} == ref.layer_destination_map
    assert theirs[0].pool == [[2, 2], [2, 2]] and [d.pooling for d in dest[0]] == [2, 2]
    assert all(d.feature_shift == 0 for ds in dest.values() for d in ds)
    expected = ref(x.flatten(0, 1)).unflatten(0, (batch, steps))
    got = run_frames(ours.config, x)["spikes"][ours.config.readout.source_core]
    assert expected.sum() > 0 and torch.equal(got, expected)


# ---- NIR export keeps the branch -----------------------------------------------------------------

def run_nir(graph, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """A minimal NIR interpreter for our node types (inputs summed, as NIR defines), written here so
    the export is checked by its nodes and edges alone: every node's output [N, T, ...]."""
    order, done, out = [], set(), {}
    preds = {n: [a for a, b in graph.edges if b == n] for n in graph.nodes}
    while len(order) < len(graph.nodes):
        ready = [n for n in graph.nodes if n not in done and all(p in done for p in preds[n])]
        order += ready
        done.update(ready)
    layers = graph.metadata["layers"]
    for name in order:
        node = graph.nodes[name]
        y = x if not preds[name] else sum(out[p] for p in preds[name])
        n, t = y.shape[:2]
        flat = y.flatten(0, 1)
        if type(node).__name__ == "Conv2d":
            flat = F.conv2d(flat, torch.from_numpy(np.asarray(node.weight)).float(),
                            torch.from_numpy(np.asarray(node.bias)).float(),
                            tuple(int(s) for s in node.stride), tuple(int(p) for p in node.padding))
        elif type(node).__name__ == "SumPool2d":
            k = int(node.kernel_size[0])
            flat = F.avg_pool2d(flat, k) * k * k
        elif type(node).__name__ == "IF":
            meta = layers[name]
            reset = meta["reset"].decode() if isinstance(meta["reset"], bytes) else meta["reset"]
            neuron = sl.IAFSqueeze(batch_size=n, min_v_mem=float(meta["min_v_mem"]), spike_fn=sa.MultiSpike,
                                   spike_threshold=torch.from_numpy(np.asarray(node.v_threshold)).float(),
                                   reset_fn=sa.MembraneReset() if reset == "zero" else sa.MembraneSubtract())
            flat = neuron(flat)
        out[name] = flat.unflatten(0, (n, t))
    return out


def test_nir_export_keeps_the_branch_and_computes_the_same_spikes(tmp_path):
    graph, _ = integer_graph(0)
    compiled = compile_network(graph, "speck2f", input_shape=SHAPE, sensor=SENSOR)
    exported = read_nir(write_nir(chip_config_to_nir(compiled.config), tmp_path / "graph.nir"))
    edges = set(exported.edges)
    assert {("input", "conv0"), ("input", "conv1")} <= edges          # the DVS layer's fan-out
    assert {("if2", "pool2"), ("pool2", "conv3"), ("pool2", "conv4_0")} <= edges  # mid's fan-out
    assert {("pool0", "conv2_0"), ("if1", "conv2_4"), ("conv2_0", "if2"), ("conv2_4", "if2"),
            ("if3", "conv4_6"), ("conv4_0", "if4"), ("conv4_6", "if4"), ("if4", "output")} <= edges
    topology = json.loads(exported.metadata["topology"])
    assert topology["if4"] == [{"from": "if2", "feature_shift": 0, "pooling": 2},
                               {"from": "if3", "feature_shift": 6, "pooling": 1}]
    x = frames(0)
    got, want = run_nir(exported, x), run_frames(compiled.config, x)["spikes"]
    assert want[4].sum() > 0
    for i, core in enumerate(compiled.config.cores):
        assert torch.equal(got[f"if{i}"], want[core.core]), core.name
    assert torch.equal(got["output"], want[4])
    # the float graph: its own weights (x 1/4 after mid's AvgPool), equal to the float forward
    floats = run_nir(lowered_to_nir(compiled.lowered), x)
    assert torch.equal(floats["output"].flatten(2), graph(x))
    with pytest.raises(AsaDeployError, match="nir_to_sinabs reads a chain"):
        nir_to_sinabs(exported)


# ---- refusals: each names the node and the rule ---------------------------------------------------

def branchy(fan: int, *, stride_of_last: int = 1, sources_of_out: list[str] | None = None) -> SpikingGraph:
    """input -> a; a feeds b1..b{fan} (1x1 convs, 2 channels); out concatenates them."""
    branches = [f"b{k}" for k in range(1, fan + 1)]
    nodes = {"a": nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), iaf(1.0))}
    for k, name in enumerate(branches):
        stride = stride_of_last if k == fan - 1 else 1
        nodes[name] = nn.Sequential(nn.Conv2d(4, 2, 1, stride=stride, bias=False), iaf(1.0))
    sources = sources_of_out or branches
    nodes["out"] = nn.Sequential(nn.Conv2d(2 * len(sources), 3, 1, bias=False), iaf(1.0))
    edges = [("input", "a")] + [("a", b) for b in branches] + [(s, "out") for s in sources]
    return SpikingGraph(nodes=nodes, edges=edges)


def test_fan_out_above_the_hw_config_limit_is_refused_naming_the_node(tmp_path):
    with pytest.raises(CompileError) as err:
        compile_network(branchy(3), "speck2f", input_shape=SHAPE)
    assert ("a: rule fan_out: feeds 3 nodes ['b1', 'b2', 'b3'] (limit 2). Fix: a core has 2 "
            "destinations" in str(err.value))
    assert "speck2f.toml [limits] fan_out" in str(err.value)
    compile_network(branchy(2), "speck2f", input_shape=SHAPE)  # 2 is allowed
    # the limit is the hw_config's number, not a constant
    text = (hw_configs_dir() / "speck2f.toml").read_text()
    assert text.count("fan_out = 2") == 1
    strict = tmp_path / "strict.toml"
    strict.write_text(text.replace("fan_out = 2", "fan_out = 1"))
    with pytest.raises(CompileError, match=r"a: rule fan_out: feeds 2 nodes \['b1', 'b2'\] \(limit 1\)"):
        compile_network(branchy(2), strict, input_shape=SHAPE)


def test_input_fan_out_is_bounded_by_the_dvs_layer_and_needs_it():
    nodes = {k: nn.Sequential(nn.Conv2d(2, 2, 1, bias=False), iaf(1.0)) for k in "abc"}
    nodes["out"] = nn.Sequential(nn.Conv2d(6, 3, 1, bias=False), iaf(1.0))
    graph = SpikingGraph(nodes=nodes, edges=[("input", k) for k in "abc"] + [(k, "out") for k in "abc"])
    with pytest.raises(CompileError, match=r"input: rule dvs_destinations: feeds 3 nodes \['a', 'b', 'c'\] "
                                           r"\(limit 2\)"):
        compile_network(graph, "speck2f", input_shape=SHAPE, sensor=SENSOR)
    with pytest.raises(CompileError, match=r"input: rule input_fan_out: feeds 2 nodes \['conv', 'gate'\] "
                                           r"\(limit 1\). Fix: without the DVS layer"):
        compile_network(gate_graph(), "speck2f", input_shape=SHAPE)


def test_merge_of_mismatched_shapes_is_refused_naming_the_node():
    graph = branchy(2, stride_of_last=2)
    message = (r"graph node 'out': rule merge_shape: merges \['b1', 'b2'\] of shapes \[\(2, 16, 16\), "
               r"\(2, 8, 8\)\]")
    with pytest.raises(CompileError, match=message):
        compile_network(graph, "speck2f", input_shape=SHAPE)
    with pytest.raises(ModelSpecError, match="graph node 'out': rule merge_shape"):
        graph(frames(0))
    nodes = {"a": nn.Sequential(nn.Conv2d(2, 2, 1, bias=False), iaf(1.0)),
             "b": nn.Sequential(nn.Conv2d(2, 3, 1, bias=False), iaf(1.0)),
             "out": nn.Sequential(nn.Conv2d(3, 2, 1, bias=False), iaf(1.0))}
    sums = SpikingGraph(nodes=nodes, edges=[("input", "a"), ("input", "b"), ("a", "out"), ("b", "out")],
                        merge={"out": "sum"})
    with pytest.raises(CompileError, match=r"graph node 'out': rule merge_channels: adds \['a', 'b'\] of "
                                           r"shapes \[\(2, 16, 16\), \(3, 16, 16\)\]"):
        lower_graph(sums, SHAPE)
    wide = branchy(2)  # out's conv takes 4 channels; a sum of b1 and b2 gives 2
    with pytest.raises(CompileError, match=r"graph node 'out': rule input_channels: its synapse takes 4 "
                                           r"channels, its input \['b1', 'b2'\] \(sum\) gives 2"):
        lower_graph(SpikingGraph(nodes=dict(wide.nodes.items()), edges=wide.edges, merge={"out": "sum"}), SHAPE)


def test_a_graph_needing_more_cores_than_the_chip_has_is_refused_naming_the_node():
    nodes = {f"n{k}": nn.Sequential(nn.Conv2d(2, 2, 1, bias=False), iaf(1.0)) for k in range(10)}
    edges = [("input", "n0")] + [(f"n{k}", f"n{k + 1}") for k in range(9)]
    with pytest.raises(CompileError, match=r"n9: rule cores: 10 nodes, one core each; nodes \['n9'\] get "
                                           r"none \(limit 9\). Fix: speck2f has 9 cores"):
        compile_network(SpikingGraph(nodes=nodes, edges=edges), "speck2f", input_shape=SHAPE)


@pytest.mark.parametrize("edges, match", [
    ([("input", "a"), ("a", "b"), ("b", "a"), ("b", "out")],
     r"graph node 'a': rule acyclic: the edges form a cycle a -> b -> a"),
    ([("input", "a"), ("a", "a"), ("a", "b"), ("b", "out")],
     r"graph node 'a': rule acyclic: the edges form a cycle a -> a"),
    ([("input", "a"), ("a", "b"), ("a", "out")], r"graph node 'b': rule one_output: nodes \['b', 'out'\]"),
    ([("input", "a"), ("a", "out")], r"graph node 'b': rule inputs: no edge feeds it"),
    ([("input", "a"), ("a", "b"), ("b", "outt")], r"graph edge \('b', 'outt'\): no node 'outt'"),
    ([("input", "a"), ("a", "b"), ("a", "b"), ("b", "out")], r"graph edge \('a', 'b'\) is listed twice"),
])
def test_malformed_graphs_are_refused_at_construction(edges, match):
    nodes = {k: nn.Sequential(nn.Conv2d(2, 2, 1, bias=False), iaf(1.0)) for k in ("a", "b", "out")}
    with pytest.raises(ModelSpecError, match=match):
        SpikingGraph(nodes=nodes, edges=edges)


@pytest.mark.parametrize("nodes, edges, match", [
    ({"a": nn.Sequential(nn.Conv2d(2, 2, 1, bias=False), iaf(1.0)),
      "out": nn.Sequential(nn.Conv2d(4, 2, 1, bias=False), iaf(1.0))},
     [("input", "a"), ("input", "out"), ("a", "out")], r"graph node 'out': rule input_merge"),
    ({"out": nn.Sequential(nn.Conv2d(2, 2, 1, bias=False), iaf(1.0), nn.Conv2d(2, 2, 1, bias=False),
                           iaf(1.0))},
     [("input", "out")], r"graph node 'out': rule one_core: holds 2 synapse -> neuron layers"),
    ({"a": nn.Sequential(nn.Conv2d(2, 2, 1, bias=False), iaf(1.0)),
      "out": nn.Sequential(sl.SumPool2d(2), nn.Conv2d(2, 2, 1, bias=False), iaf(1.0))},
     [("input", "a"), ("a", "out")], r"graph node 'out': rule pool_before_synapse"),
])
def test_what_a_core_cannot_receive_is_refused_at_lowering(nodes, edges, match):
    with pytest.raises(CompileError, match=match):
        lower_graph(SpikingGraph(nodes=nodes, edges=edges), SHAPE)


def test_lowered_graph_is_not_a_chain():
    lowered = lower_graph(gate_graph(), SHAPE)
    assert isinstance(lowered, LoweredGraph) and lowered.sources == [[], [], [0, 1], [2], [2, 3]]
    with pytest.raises(CompileError, match="not a chain"):
        lowered.to_sequential()


def test_chain_as_a_graph_compiles_like_the_chain():
    """A graph without branches is the chain it spells: same cores, integers and destinations."""
    torch.manual_seed(5)
    layers = [nn.Conv2d(2, 4, 3, padding=1, bias=False), iaf(1.0), sl.SumPool2d(2),
              nn.Conv2d(4, 4, 3, stride=2, padding=1, bias=False), iaf(1.0), nn.Flatten(),
              nn.Linear(4 * 4 * 4, 3, bias=False), iaf(1.0)]
    chain = compile_network(nn.Sequential(*layers).eval(), "speck2f", input_shape=SHAPE).config
    graph = SpikingGraph(nodes={"a": nn.Sequential(*layers[:3]), "b": nn.Sequential(*layers[3:5]),
                                "c": nn.Sequential(*layers[5:])},
                         edges=[("input", "a"), ("a", "b"), ("b", "c")])
    config = compile_network(graph, "speck2f", input_shape=SHAPE).config
    for ours, theirs in zip(config.cores, chain.cores, strict=True):
        np.testing.assert_array_equal(ours.weights, theirs.weights)
        assert ours.destinations == theirs.destinations
        assert (ours.threshold_high, ours.threshold_low) == (theirs.threshold_high, theirs.threshold_low)
    assert Path(config.meta["hw_config"]) == Path(chain.meta["hw_config"])
