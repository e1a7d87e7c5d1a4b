"""A fold stage that writes a ``LoweredGraph`` (chain layers plus a spiking gate branching off and
merging back by concatenation) into ``folded.pt``: every stage downstream of it (compile, with the
input mask and hot-pixel kills, both simulators and their synops split by cause, ``--jobs``, NIR
export, report) works on it. The graphs are built by hand (``lower_graph``) and saved in the run
directory of a tiny real training run, as the fold stage saves its layers."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import sinabs.activation as sa
import sinabs.layers as sl
import torch
from test_chip_graph import run_nir
from torch import nn

from asa_deploy import provenance
from asa_deploy.chip.config import ChipConfig, Destination
from asa_deploy.chip.graph import LoweredGraph, lower_graph
from asa_deploy.chip.sim import EventWindow, simulate
from asa_deploy.chip.sim.dvs import prepare_window
from asa_deploy.chip.sim.fast import fanout_map, run_frames
from asa_deploy.chip.simulate import event_windows, simulate_run
from asa_deploy.cli import main
from asa_deploy.export import lowered_to_nir, read_nir
from asa_deploy.fold.stage import FOLD_FORMAT, FOLDED, load_folded
from asa_deploy.io import save_torch
from asa_deploy.nn.graph import SpikingGraph
from asa_deploy.pipeline import compile_run
from asa_deploy.train import TrainConfig, train
from asa_deploy.train.loop import MODEL

TINY = dict(data="synthetic:gesture-tiny", model="speck-tiny", T=5, epochs=1, batch_size=4,
            eval_windows=2, seed=0, params={"c": 4, "fc": 8})
SHAPE = (2, 32, 32)  # speck-tiny's input: the 128 x 128 sensor pooled by 4 (the framing's downsample)
CLASSES = 6          # gesture-tiny
# Where the gate reads from: the chain's first layer (fan-out 2 there) or the DVS input (two entries).
EDGES = {"c1": [("input", "c1"), ("c1", "gate"), ("c1", "c2"), ("gate", "c2")],
         "input": [("input", "c1"), ("input", "gate"), ("c1", "c2"), ("gate", "c2")]}


def iaf() -> sl.IAF:
    return sl.IAF(spike_threshold=torch.tensor(1.0), min_v_mem=-1.0, spike_fn=sa.MultiSpike)


def gate_graph(gate_reads: str, *, w_max: float = 1.0, seed: int = 0) -> SpikingGraph:
    """c1 (2 -> 4) and the 1-channel gate feed c2, which concatenates [c1, gate] (5 channels) at
    stride 2 into the classes; weights in [0, w_max) x threshold 1, multiples of 1/16 so that float
    sums are exact in any order (a merge exported to NIR sums two convs)."""
    gate_in = 4 if gate_reads == "c1" else 2
    graph = SpikingGraph(nodes={
        "c1": nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), iaf()),
        "gate": nn.Sequential(nn.Conv2d(gate_in, 1, 3, padding=1, bias=False), iaf()),
        "c2": nn.Sequential(nn.Conv2d(5, CLASSES, 3, stride=2, padding=1, bias=False), iaf()),
    }, edges=EDGES[gate_reads]).eval()
    gen = torch.Generator().manual_seed(seed)
    for node in graph.nodes.values():
        node[0].weight.data = (torch.rand(node[0].weight.shape, generator=gen) * w_max * 16).floor() / 16
    return graph


def gated(gate_reads: str, **weights) -> LoweredGraph:
    return lower_graph(gate_graph(gate_reads, **weights), SHAPE)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("trained")
    train(TrainConfig(**TINY), run, progress=False, verbose=False)
    return run


def folded_run(trained: Path, dest: Path, lowered: LoweredGraph) -> Path:
    """A copy of the trained run whose ``folded.pt`` holds ``lowered``, as the fold stage writes it."""
    run = Path(shutil.copytree(trained, dest))
    record = torch.load(run / MODEL, weights_only=False)
    save_torch(run / FOLDED, {"format_version": FOLD_FORMAT, "chip": "speck2f", "strategy": "gate",
                              "lowered": lowered, "input_shape": SHAPE, "data": record["data"],
                              "attention": record["attention"],
                              provenance.KEY: provenance.record(run, [MODEL], chip="speck2f")})
    return run


@pytest.fixture(scope="module")
def runs(trained, tmp_path_factory) -> dict[str, Path]:
    """Both variants, compiled from their folded.pt."""
    root = tmp_path_factory.mktemp("folded")
    out = {}
    for gate_reads in EDGES:
        out[gate_reads] = folded_run(trained, root / gate_reads, gated(gate_reads))
        compile_run(out[gate_reads], "speck2f")
    return out


def cores(config: ChipConfig) -> dict[str, int]:
    return {c.name: c.core for c in config.cores}


def windows(config: ChipConfig) -> list[EventWindow]:
    """One test window of each of the first 3 validation recordings."""
    return event_windows(config, None, windows=1, max_recordings=3)[0]


# ---- compile ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("gate_reads", list(EDGES))
def test_compile_run_compiles_the_folded_graph(runs, gate_reads):
    run = runs[gate_reads]
    lowered, record = load_folded(run)
    assert isinstance(lowered, LoweredGraph) and record["strategy"] == "gate"
    config = ChipConfig.load(run / "chip_config.json")
    assert config.meta["source"] == str(run / FOLDED)
    core = cores(config)
    assert list(core) == ["c1", "gate", "c2"]
    dests = {c.name: c.destinations for c in config.cores}
    # c2 concatenates [c1 (4 channels), gate (1 channel)]: the gate lands after c1's channels
    assert dests["gate"] == [Destination(core["c2"], 1, 4)] and dests["c2"] == []
    if gate_reads == "c1":  # c1's fan-out: the gate first (topological order), then c2
        assert dests["c1"] == [Destination(core["gate"], 1, 0), Destination(core["c2"], 1, 0)]
        assert config.dvs.destinations == [core["c1"]]
        assert tuple(config.core(core["gate"]).input_shape) == (4, 32, 32)
    else:  # the DVS layer feeds both entry nodes
        assert dests["c1"] == [Destination(core["c2"], 1, 0)]
        assert config.dvs.destinations == [core["c1"], core["gate"]]
        assert tuple(config.core(core["gate"]).input_shape) == (2, 32, 32)
    assert config.dvs.pooling == (4, 4) and config.readout.source_core == core["c2"]
    mapping = json.loads((run / "mapping.json").read_text())
    assert {"from": "gate", "to": "c2", "pooling": 1, "feature_shift": 4, "from_core": core["gate"],
            "to_core": core["c2"]} in mapping["graph"]


def test_compile_cli_on_the_folded_graph_names_both_entry_cores(runs, tmp_path, capsys):
    run = Path(shutil.copytree(runs["input"], tmp_path / "run"))
    assert main(["compile", str(run), "--chip", "speck2f", "--check"]) == 0
    out = capsys.readouterr().out
    assert "fits speck2f" in out and "gate" in out
    assert main(["compile", str(run), "--chip", "speck2f"]) == 0
    out = capsys.readouterr().out
    assert "core 0: one input event ->" in out and "core 1: one input event ->" in out
    assert "core 2: one spike of core 0 ->" in out and "core 2: one spike of core 1 ->" in out
    assert "core 1 (gate) takes the input events: 1 channels x 3x3 kernel offsets = 9 synops" in out
    assert "fewer channels in c1: linear, e.g. 2 channels -> 18 per event" in out
    assert "fewer channels in gate" not in out  # one channel: nothing to drop


# ---- both simulators, synops by cause --------------------------------------------------------------

def per_event(fan: np.ndarray, config: ChipConfig, ws: list[EventWindow]) -> np.ndarray:
    """[N] synops the chip input events of each window cost a core of fan-out map ``fan``."""
    return np.array([int(fan[ci.y, ci.x].sum()) for ci in (prepare_window(config, w) for w in ws)])


def per_spike(fan: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """[N] synops the monitored spikes ``counts`` [N, bins, C, H, W] cost a core of fan-out ``fan``."""
    return np.einsum("nhw,hw->n", counts.astype(np.int64).sum(axis=(1, 2)), fan)


@pytest.mark.parametrize("gate_reads", list(EDGES))
def test_both_engines_count_the_gate_core_by_cause(runs, gate_reads):
    """Weights below the threshold: exact == fast (tests/test_chip_graph.py gives the argument).
    Input events reaching the gate core are input-driven synops there; its spikes into c2 are
    network-driven synops of c2, next to c1's."""
    config = ChipConfig.load(runs[gate_reads] / "chip_config.json")
    core = cores(config)
    assert all(int(c.weights.max()) <= c.threshold_high for c in config.cores)
    ws = windows(config)
    exact = simulate(config, ws, "exact", monitor=[core["c1"], core["gate"]])
    fast = simulate(config, ws, "fast")
    col = {name: exact.core_ids.index(cid) for name, cid in core.items()}
    assert np.all(exact.spikes_per_core.sum(axis=0) > 0), "a silent core would make this vacuous"
    for name in ("spikes_per_core", "synops_per_core", "input_synops_per_core", "output_spikes"):
        np.testing.assert_array_equal(getattr(exact, name), getattr(fast, name), err_msg=name)
    fan = {name: fanout_map(config.core(cid)) for name, cid in core.items()}
    fed, network = exact.input_synops_per_core, exact.network_synops_per_core
    np.testing.assert_array_equal(fed[:, col["c1"]], per_event(fan["c1"], config, ws))
    assert not network[:, col["c1"]].any() and not fed[:, col["c2"]].any()
    spikes = {name: exact.monitor[core[name]] for name in ("c1", "gate")}
    if gate_reads == "input":
        np.testing.assert_array_equal(fed[:, col["gate"]], per_event(fan["gate"], config, ws))
        assert not network[:, col["gate"]].any()
    else:
        assert not fed[:, col["gate"]].any()
        np.testing.assert_array_equal(network[:, col["gate"]], per_spike(fan["gate"], spikes["c1"]))
    gate_part = per_spike(fan["c2"], spikes["gate"])
    assert gate_part.sum() > 0
    np.testing.assert_array_equal(network[:, col["c2"]],
                                  per_spike(fan["c2"], spikes["c1"]) + gate_part)


def test_exact_lags_fast_on_a_folded_graph_with_bursts(trained, tmp_path):
    """Weights up to 3 thresholds: fast emits floor(v / thr) spikes at once, exact one per update."""
    run = folded_run(trained, tmp_path / "run", gated("c1", w_max=3.0, seed=1))
    config = compile_run(run, "speck2f").config
    ws = windows(config)
    exact, fast = simulate(config, ws, "exact"), simulate(config, ws, "fast")
    assert exact.spikes_per_core.sum() < fast.spikes_per_core.sum()
    assert np.all(exact.spikes_per_core <= fast.spikes_per_core)
    assert np.all(exact.synops_per_core <= fast.synops_per_core)


def test_simulate_jobs_gives_the_counts_of_one_process(runs):
    run = runs["c1"]
    one = simulate_run(run, engine="exact", windows=2)
    two = simulate_run(run, engine="exact", windows=2, jobs=2)
    assert one["n_windows"] >= 2
    for key in ("spikes_per_core", "synops_per_core", "input_synops_per_core",
                "network_synops_per_core"):
        assert two[key] == one[key], key
    gate = str(cores(ChipConfig.load(run / "chip_config.json"))["gate"])
    assert one["network_synops_per_core"]["total"][gate] > 0


# ---- input mask and hot pixels reach both entry nodes ----------------------------------------------

def test_input_mask_and_hot_pixels_reach_both_entry_nodes(trained, runs, tmp_path):
    lowered = gated("input")
    lowered.input_mask = torch.ones(32, 32, dtype=torch.bool)
    lowered.input_mask[:, :16] = False  # the left half of the network's input
    run = folded_run(trained, tmp_path / "run", lowered)
    config = compile_run(run, "speck2f", kill_hot_pixels=True).config
    core = cores(config)
    assert config.dvs.destinations == [core["c1"], core["gate"]]
    hot = {tuple(p) for p in config.meta["hot_pixels"]["pixels"]}
    masked = {(y, x) for y in range(128) for x in range(64)}  # pooled by 4 on the sensor
    assert hot and set(map(tuple, config.dvs.killed_pixels)) == masked | hot
    plain = ChipConfig.load(runs["input"] / "chip_config.json")
    ws = windows(config)  # the same events, through the unkilled DVS layer too
    killed, unkilled = simulate(config, ws, "exact"), simulate(plain, ws, "exact")
    dead = np.zeros((128, 128), dtype=bool)
    dead[tuple(np.array(sorted(masked | hot)).T)] = True
    alive = [w.events[(w.events["t"] >= w.t_start) & (w.events["t"] < w.t_end)] for w in ws]
    alive = [ev[~dead[ev["y"], ev["x"]]] for ev in alive]
    for name in ("c1", "gate"):  # each entry core's input synops: the surviving events only
        fan = fanout_map(config.core(core[name]))
        expected = [int(fan[ev["y"] // 4, ev["x"] // 4].sum()) for ev in alive]
        column = killed.core_ids.index(core[name])
        np.testing.assert_array_equal(killed.input_synops_per_core[:, column], expected)
        assert killed.input_synops_per_core[:, column].sum() < \
            unkilled.input_synops_per_core[:, column].sum() / 1.5, name


# ---- NIR export keeps the branch -------------------------------------------------------------------

def sum_pool(x: torch.Tensor, k: int) -> torch.Tensor:
    return (torch.nn.functional.avg_pool2d(x.flatten(0, 1), k) * k * k).unflatten(0, x.shape[:2])


def sensor_frames(seed: int, size: int = 128) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 2, (2, 6, 2, size, size), generator=gen).float()
    return x * (torch.rand(x.shape, generator=gen) < 0.05)


def test_export_keeps_the_branch_of_the_folded_graph(trained, tmp_path, capsys):
    graph = gate_graph("c1")
    run = folded_run(trained, tmp_path / "run", lower_graph(graph, SHAPE))
    compile_run(run, "speck2f")
    assert main(["export", str(run)]) == 0
    assert "folded.pt" in capsys.readouterr().out
    floats, ints = read_nir(run / "model.nir"), read_nir(run / "model_quantized.nir")
    for exported in (floats, ints):
        assert {("if0", "conv1"), ("if0", "conv2_0"), ("if1", "conv2_4"), ("conv2_0", "if2"),
                ("conv2_4", "if2"), ("if2", "output")} <= set(exported.edges)
        assert json.loads(exported.metadata["topology"])["if2"] == [
            {"from": "if0", "feature_shift": 0, "pooling": 1},
            {"from": "if1", "feature_shift": 4, "pooling": 1}]
    x = sensor_frames(0)
    pooled = sum_pool(x, 4)
    want = graph(pooled)
    assert want.sum() > 0
    assert torch.equal(run_nir(floats, pooled)["output"], want)
    config = ChipConfig.load(run / "chip_config.json")
    assert ("input", "input_pool") in ints.edges and ("input_pool", "conv0") in ints.edges
    got, chip = run_nir(ints, x), run_frames(config, pooled)["spikes"]
    assert torch.equal(got["output"], chip[config.readout.source_core])


def test_export_of_a_graph_that_pools_its_input():
    """A graph lowered from a chain with pooling before its first layer (the DVS layer pools): the
    NIR input is the unpooled map and both entry nodes read the pooled one."""
    pooled_net = replace(gated("input"), input_pool=2)
    exported = lowered_to_nir(pooled_net)
    assert tuple(exported.nodes["input"].input_type["input"]) == (2, 64, 64)
    assert {("input", "input_pool"), ("input_pool", "conv0"), ("input_pool", "conv1")} <= set(
        exported.edges)
    x = sensor_frames(1, 64)
    want = run_nir(lowered_to_nir(gated("input")), sum_pool(x, 2))["output"]
    assert want.sum() > 0 and torch.equal(run_nir(exported, x)["output"], want)


# ---- report ----------------------------------------------------------------------------------------

def test_report_runs_on_a_folded_graph_run(runs, tmp_path):
    run = runs["input"]
    sim = simulate_run(run, engine="exact", windows=1)
    assert main(["report", str(run), "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    entry = next(iter(report["runs"].values()))
    rows = {row["layer"]: row for row in entry["activity"]["cores"]}
    assert set(rows) == {"c1", "gate", "c2"}
    gate = str(rows["gate"]["core"])
    assert sim["input_synops_per_core"]["mean"][gate] > 0
    assert rows["gate"]["input_synops_per_window"] == pytest.approx(
        sim["input_synops_per_core"]["mean"][gate])
    assert rows["c2"]["network_synops_per_window"] > 0
    assert rows["c2"]["input_synops_per_window"] == 0
    # the report says which core feeds which: the gate lands on c2's input channel 4
    assert {"from": "gate", "to": "c2", "pooling": 1, "feature_shift": 4, "from_core": int(gate),
            "to_core": rows["c2"]["core"]} in entry["mapping"]["graph"]
    markdown = (tmp_path / "report.md").read_text()
    assert "Connections (the network branches and merges)" in markdown
    assert f"| gate | {gate} | c2 | {rows['c2']['core']} | 1 | 4 |" in markdown
    assert f"| input | n/a | gate | {gate} | 1 | 0 |" in markdown
