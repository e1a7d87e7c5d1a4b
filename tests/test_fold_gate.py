"""Spiking gates (fold/gate.py, issue 12): the gated graph starts equal to the chain it gates, runs
bit for bit as the fast simulator runs its compiled config, respects the chip's routing rules,
learns at its own rate, distils from the dynamic network, and goes through `asa-deploy fold`."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

# the data fixture of test_fold_finetune (synthetic gesture-tiny frames)
from test_fold_finetune import (
    NUMERICS,
    SHAPE,
    activate,
    data,  # noqa: F401, E402  (a pytest fixture)
    sim_spikes,
)

from asa_deploy.chip.compile import compile_network
from asa_deploy.chip.config import ChipConfig
from asa_deploy.chip.graph import LoweredGraph
from asa_deploy.chip.lower import lower
from asa_deploy.chip.sim.fast import run_frames
from asa_deploy.chip.spec import load_chip_spec
from asa_deploy.cli import main
from asa_deploy.errors import AsaDeployError, CompileError
from asa_deploy.fold.finetune import ChipAwareNetwork, Distiller, lowered_fanouts
from asa_deploy.fold.gate import (
    add_gates,
    check_gated,
    choose_gated,
    distill_pairs,
    feedback_weights,
    gateable,
)
from asa_deploy.fold.stage import load_folded
from asa_deploy.nn import build_network, load_model_spec
from asa_deploy.train import TrainConfig, train
from asa_deploy.train.cost import CostMeter


@pytest.fixture(scope="module")
def chain(data):  # noqa: F811
    """speck-tiny (c=4, fc=8) lowered and made active: 4 cores."""
    torch.manual_seed(0)
    spec = load_model_spec("speck-tiny").with_overrides(params={"c": 4, "fc": 8}, T=5)
    net = build_network(spec, data["dataset"].num_classes).eval()
    return activate(lower(net, SHAPE, bias_policy="drop"), data["frames"])


@pytest.fixture(scope="module")
def gated(chain, data):  # noqa: F811
    return add_gates(chain, ["block1.conv"], data["frames"], channels=2, kernel=3, fire_share=0.3)


def with_feedback(graph: LoweredGraph, value: float) -> LoweredGraph:
    """The graph with every weight from a gate set to ``value``."""
    layers = list(graph.layers)
    for i, srcs in enumerate(graph.sources):
        gates = [j for j in srcs if layers[j].name.endswith(".gate")]
        if gates:
            c = sum(layers[j].output_shape[0] for j in gates)
            weight = layers[i].weight.clone()
            weight[:, -c:] = value
            layers[i] = replace(layers[i], weight=weight)
    return LoweredGraph(graph.input_shape, graph.input_pool, layers, list(graph.notes),
                        graph.input_mask, sources=graph.sources, merges=graph.merges)


def test_the_gate_sits_between_the_gated_layer_and_its_source(chain, gated):
    names = [layer.name for layer in gated.layers]
    assert names == ["block0.conv", "block1.conv.gate", "block1.conv", "block2.conv", "block5.fc",
                     "block6.fc"][:len(names)]
    g, layer = names.index("block1.conv.gate"), names.index("block1.conv")
    assert gated.sources[g] == [0] and gated.sources[layer] == [0, g]
    assert gated.feature_shift(layer, g) == chain.layers[1].input_shape[0]
    gate = gated.layers[g]
    assert gate.neuron_shape == (2, *chain.layers[1].input_shape[1:])  # same map as L's input
    assert torch.all(gate.weight > 0) and gate.min_v_mem == -gate.threshold
    weight = gated.layers[layer].weight
    assert weight.shape[1] == chain.layers[1].weight.shape[1] + 2
    assert torch.equal(weight[:, :-2], chain.layers[1].weight) and not weight[:, -2:].any()


def test_the_gate_threshold_lets_the_asked_share_of_positions_reach_it(chain, gated, data):  # noqa: F811
    twin = ChipAwareNetwork(gated, None)
    seen = {}
    twin.layers[1].register_forward_hook(lambda _m, inputs, _o: seen.update(x=inputs[0]))
    with torch.no_grad():
        twin(data["frames"])
    gate = gated.layers[1]
    current = torch.nn.functional.conv2d(seen["x"].flatten(0, 1), gate.weight, None, 1, 1)
    total = current.unflatten(0, seen["x"].shape[:2]).sum(1)
    share = float((total >= gate.threshold).float().mean())
    assert 0.2 <= share <= 0.4


@pytest.mark.parametrize("numerics", [None, NUMERICS])
def test_a_gate_with_zero_weights_into_its_layer_changes_nothing(chain, gated, data, numerics):  # noqa: F811
    frames = data["frames"]
    assert torch.equal(ChipAwareNetwork(gated, numerics)(frames),
                       ChipAwareNetwork(chain, numerics)(frames))


def test_inhibiting_weights_from_the_gate_silence_its_layer_where_it_fires(gated, data):  # noqa: F811
    frames = data["frames"]
    spikes = {}
    for value in (0.0, -5.0):
        twin = ChipAwareNetwork(with_feedback(gated, value), None)
        twin.layers[2].register_forward_hook(lambda _m, _i, out, v=value: spikes.update({v: out}))
        twin(frames)
    assert spikes[-5.0].sum() < 0.8 * spikes[0.0].sum()


@pytest.mark.parametrize("chip", ["speck2f", "dynapcnn"])
def test_the_gated_graph_compiles_and_runs_as_the_fast_simulator(gated, data, chip):  # noqa: F811
    graph = with_feedback(gated, -0.05)
    compiled = compile_network(graph, chip, input_shape=SHAPE)
    config = compiled.config
    feeding = next(c for c in config.cores if c.name == "block0.conv")
    assert len(feeding.destinations) == 2  # fan-out 2: the layer and its gate
    shifts = sorted(d.feature_shift for c in config.cores for d in c.destinations
                    if config.cores[[k.core for k in config.cores].index(d.core)].name == "block1.conv")
    assert shifts == [0, 4]
    if chip == "speck2f":
        frames = data["frames"]
        expected = sim_spikes(config, frames)
        assert expected.sum() > 0
        assert torch.equal(ChipAwareNetwork(graph, NUMERICS)(frames), expected)


def test_the_cost_term_counts_the_gates_own_synops_as_the_simulator(chain, gated, data):  # noqa: F811
    """The quantized twin's cost on its own spikes equals the fast simulator's synops exactly,
    the gate's included: input spikes into the gate and the gate's spikes into its layer."""
    frames = data["frames"]
    plain, fans = lowered_fanouts(chain), lowered_fanouts(gated)
    assert torch.equal(plain.input, fans.input)
    assert torch.all(fans.layers[0] > plain.layers[0])  # block0's spikes also reach the gate
    assert fans.layers[1].sum() > 0  # the gate's spikes cost in block1's core
    graph = with_feedback(gated, -0.05)
    twin = ChipAwareNetwork(graph, NUMERICS)
    meter = CostMeter(twin, fans)
    twin(frames)
    network, inputs = meter.synops(frames)
    meter.close()
    sim = run_frames(compile_network(graph, "speck2f", input_shape=SHAPE).config, frames)
    input_synops = sum(sim["input_synops"].values())
    assert network.sum() > 0
    assert network.tolist() == (sum(sim["synops"].values()) - input_synops).astype(float).tolist()
    assert inputs.tolist() == input_synops.astype(float).tolist()


def test_gates_are_refused_where_the_chip_cannot_route_them(chain, data):  # noqa: F811
    with pytest.raises(AsaDeployError, match="input_merge"):
        add_gates(chain, ["block0.conv"], data["frames"])
    with pytest.raises(AsaDeployError, match="odd"):
        add_gates(chain, ["block1.conv"], data["frames"], kernel=2)
    with pytest.raises(AsaDeployError, match="fire share"):
        add_gates(chain, ["block1.conv"], data["frames"], fire_share=1.0)
    # every gateable layer gated: 4 + 3 cores fit speck2f's 9; dynapcnn too
    everything = add_gates(chain, gateable(chain), data["frames"])
    check_gated(everything, load_chip_spec("speck2f"), input_from_sensor=True)
    with pytest.raises(CompileError, match="already branches"):
        add_gates(everything, ["block1.conv"], data["frames"])
    small = replace(load_chip_spec("speck2f"), cores=SimpleNamespace(count=5))
    with pytest.raises(CompileError, match="cores"):
        check_gated(everything, small, input_from_sensor=True)


def test_placement_follows_the_calibrated_spread(chain):
    def calib(spread):
        return SimpleNamespace(gain_mean=torch.ones(2), gain_std=torch.full((2,), spread))

    calibration = {"block0.conv": calib(0.9), "block1.conv": calib(0.1), "block2.conv": calib(0.3)}
    layers, why = choose_gated(chain, 1, calibration)
    assert layers == ["block2.conv"]  # block0 spreads most but cannot be gated
    assert why["spread"] == pytest.approx({"block1.conv": 0.1, "block2.conv": 0.3})
    assert choose_gated(chain, 2, None)[0] == gateable(chain)[:2]
    with pytest.raises(AsaDeployError, match="only 2 layer"):
        choose_gated(chain, 3, calibration)


def test_gates_learn_at_their_own_rate(gated):
    twin = ChipAwareNetwork(gated, NUMERICS)
    groups = twin.parameter_groups(1e-4, 1e-2)
    fast = {id(p) for p in groups[1]["params"]}
    assert groups[1]["lr"] == 1e-2 and groups[0]["lr"] == 1e-4
    assert id(twin.layers[1].weight) in fast and id(twin.layers[2].feedback) in fast
    assert id(twin.layers[2].weight) not in fast
    assert len(fast) + len(groups[0]["params"]) == len(twin.trainable_parameters())
    assert torch.equal(twin.to_lowered().layers[2].weight, gated.layers[2].weight)


def test_distillation_is_zero_for_a_copy_and_pulls_the_feedback(gated, data):  # noqa: F811
    frames = data["frames"][:4]
    teacher = ChipAwareNetwork(gated, None)
    teacher.spiking_layers = lambda: [(layer.name, layer) for layer in teacher.layers]
    copy = ChipAwareNetwork(gated, None)
    distiller = Distiller(teacher, copy, {2: 2})
    copy(frames)
    assert float(distiller.loss(frames).detach()) == pytest.approx(0.0, abs=1e-6)
    distiller.close()
    student = ChipAwareNetwork(with_feedback(gated, -0.5), None)
    distiller = Distiller(teacher, student, {2: 2})
    student(frames)
    loss = distiller.loss(frames)
    loss.backward()
    assert float(loss.detach()) > 0.01 and student.layers[2].feedback.grad.abs().sum() > 0
    distiller.close()
    assert distill_pairs(gated, ["block1.conv"], ["block0.conv", "block1.conv"]) == {2: 1}
    with pytest.raises(AsaDeployError, match="no spiking layer"):
        distill_pairs(gated, ["block1.conv"], ["block0.conv"])


def test_feedback_weights_are_summarised(gated):
    summary = feedback_weights(with_feedback(gated, -0.1))
    assert summary["block1.conv"]["negative_share"] == 1.0
    assert summary["block1.conv"]["mean"] == pytest.approx(-0.1)


# -- the fold command ---------------------------------------------------------------------------

TINY = dict(data="synthetic:gesture-tiny", T=5, epochs=2, batch_size=4, eval_windows=2, seed=0)


@pytest.fixture(scope="module")
def asa_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("asa2")
    train(TrainConfig(**TINY, model="speck-tiny", params={"c": 4, "fc": 8}, attention="asa2"),
          out, progress=False, verbose=False)
    return out


def test_fold_with_a_distilled_gate_compiles_a_branching_config(asa_run, capsys):
    assert main(["fold", str(asa_run), "--chip", "speck2f", "--finetune-epochs", "1",
                 "--eval-windows", "1", "--strategy", "channel", "--gate", "1",
                 "--distill-weight", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "spiking gates before" in printed and "1 spiking gate(s)" in printed
    report = json.loads((asa_run / "fold.json").read_text())
    gate = report["gate"]
    assert len(gate["layers"]) == 1 and gate["layers"][0] in ("block1.conv", "block2.conv")
    assert gate["placement"].startswith("largest relative spread")
    assert report["finetune_log"][1]["distill_loss"] is not None
    lowered, _ = load_folded(asa_run)
    assert isinstance(lowered, LoweredGraph)
    config = ChipConfig.load(asa_run / "chip_config.json")
    names = [c.name for c in config.cores]
    assert f"{gate['layers'][0]}.gate" in names
    exact = report["ladder"][-1]
    assert exact["step"] == "quantized, exact simulator"
    gate_core = next(c.core for c in config.cores if c.name.endswith(".gate"))
    assert str(gate_core) in exact["spikes_per_core"]


@pytest.mark.parametrize("argv, message", [
    (["--gate", "1", "--finetune-epochs", "0"], "finetune-epochs 1"),
    (["--distill-weight", "1"], "add --gate"),
    (["--gate", "1", "--distill-weight", "1", "--finetune-substeps", "5"], "finetune-substeps"),
    (["--gate", "3"], "can be gated"),
    (["--gate-at", "block0.conv"], "input_merge"),
])
def test_fold_refuses_gate_options_that_cannot_work(asa_run, tmp_path, capsys, argv, message):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(asa_run, run)
    assert main(["fold", str(run), "--chip", "speck2f", "--eval-windows", "1", "--strategy",
                 "channel", "--no-progress", *argv]) == 2
    assert message in capsys.readouterr().err


def test_fold_refuses_distillation_without_a_teacher(tmp_path, capsys):
    run = tmp_path / "vanilla"
    train(TrainConfig(**TINY, model="speck-tiny", params={"c": 4, "fc": 8}, attention="none"),
          run, progress=False, verbose=False)
    assert main(["fold", str(run), "--chip", "speck2f", "--gate", "1", "--distill-weight", "1",
                 "--no-progress"]) == 2
    assert "needs a run with attention" in capsys.readouterr().err
    assert not (run / "fold.json").exists()
