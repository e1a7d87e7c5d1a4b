"""The differentiable synops cost (train/cost.py) against the fast chip simulator, its gradient,
and cost-aware training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from asa_deploy.chip.compile import compile_network
from asa_deploy.chip.lower import lower
from asa_deploy.chip.sim.fast import run_frames
from asa_deploy.chip.spec import load_chip_spec
from asa_deploy.errors import ModelSpecError
from asa_deploy.fold.finetune import ChipAwareNetwork, finetune, lowered_fanouts
from asa_deploy.nn.network import ModelSpec, build_network, load_model_spec
from asa_deploy.train import TrainConfig, train
from asa_deploy.train.cost import CostMeter, network_fanouts, synops_from_spikes
from asa_deploy.train.loop import synops_summary

# The chip's own IAF network (speck-tiny), small; lr 0.01 so 12 steps move the weights.
TINY = dict(data="synthetic:gesture-tiny", model="speck-tiny", T=5, epochs=2, batch_size=2,
            lr=0.01, eval_windows=2, seed=3, params={"c": 4, "fc": 16})


def random_spec(seed: int) -> ModelSpec:
    """A small random IAF network: strides, paddings, pooling of currents and of spikes, fc."""
    rng = np.random.default_rng(seed)
    size = h = int(rng.integers(8, 17))
    blocks = []
    for _ in range(int(rng.integers(1, 3))):
        k, stride, pool = int(rng.integers(1, 4)), int(rng.integers(1, 3)), int(rng.choice([1, 2]))
        padding = int(rng.integers(0, k))
        out = ((h + 2 * padding - k) // stride + 1) // pool
        if out < 2:
            break
        blocks.append({"type": "conv", "out": int(rng.integers(2, 5)), "kernel": k,
                       "stride": stride, "padding": padding, "pool": pool})
        h = out
        if rng.random() < 0.4 and h >= 4:
            blocks.append({"type": "pool", "kernel": 2})
            h //= 2
    if h > 16 or not blocks:  # the chip's kernels (an fc's covers its map) are at most 16
        blocks.append({"type": "conv", "out": 2, "kernel": 2, "stride": 2, "padding": 0})
    blocks += [{"type": "flatten"}, {"type": "fc", "out": int(rng.integers(3, 6))},
               {"type": "fc", "out": "classes"}]
    return ModelSpec.from_dict({"name": f"random{seed}", "input": {"channels": 2, "height": size,
                                                                   "width": size},
                                "T": 4, "neuron": "iaf",
                                "neuron_options": {"threshold": 1.0, "min_v_mem": -1.0},
                                "blocks": blocks})


def compiled(seed: int):
    torch.manual_seed(seed)
    net = build_network(random_spec(seed), 3).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
            m.weight.data = m.weight.data.abs() * 3  # excitatory: every layer fires
    shape = tuple(int(net.spec.input[k]) for k in ("channels", "height", "width"))
    return net, compile_network(net, "speck2f", input_shape=shape, bias_policy="drop").config


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_cost_equals_fast_simulator_synops(seed):
    """Fed the simulator's spikes and the same frames, the cost gives its synops exactly: network-
    driven = synops - input_synops, input-driven = input_synops, summed over cores."""
    net, config = compiled(seed)
    frames = torch.from_numpy(np.random.default_rng(seed).poisson(
        0.5, (3, net.spec.T, *config.core(config.entry_cores()[0]).input_shape))).float()
    sim = run_frames(config, frames)
    spikes = [sim["spikes"][core.core].double() for core in config.cores]
    network, inputs = synops_from_spikes(network_fanouts(net), frames.double(), spikes)
    total = sum(sim["synops"].values())
    input_synops = sum(sim["input_synops"].values())
    assert sum(float(s.sum()) for s in spikes[:-1]) > 0, "the example should have network spikes"
    assert network.tolist() == (total - input_synops).astype(float).tolist()
    assert inputs.tolist() == input_synops.astype(float).tolist()


def test_cost_of_a_hand_computed_network():
    """1 channel 4x4 -> conv 3x3 pad 1 (2 ch) -> fc 5: a spike at a corner of the conv layer costs
    5 (one per fc output), an input event at a corner 2 x 2x2 offsets = 8, at the centre 2 x 9."""
    spec = ModelSpec.from_dict({"name": "hand", "input": {"channels": 1, "height": 4, "width": 4},
                                "T": 1, "neuron": "iaf", "blocks": [
                                    {"type": "conv", "out": 2, "kernel": 3, "padding": 1},
                                    {"type": "flatten"}, {"type": "fc", "out": 5}]})
    fan = network_fanouts(build_network(spec, 5))
    assert fan.input[0, 0] == 8 and fan.input[1, 1] == 18 and fan.input[0, 1] == 12
    assert torch.equal(fan.layers[0], torch.full((4, 4), 5.0, dtype=torch.float64))
    assert float(fan.layers[1].sum()) == 0  # the last layer feeds the readout
    assert fan.full_activity(1) == 2 * 16 * 5


def test_cost_gradient_reaches_the_weights():
    torch.manual_seed(0)
    spec = load_model_spec("dvs-small").with_overrides(params={"c1": 4, "c2": 8, "c3": 8, "fc": 16}, T=4)
    net = build_network(spec, 11)
    meter = CostMeter(net)
    frames = (torch.rand(2, 4, 2, 32, 32) < 0.3).float()
    net(frames)
    network, inputs = meter.synops(frames)
    assert float(network.detach().sum()) > 0 and not inputs.requires_grad
    meter.penalty(network, inputs, 1.0, None).backward()
    grad = net.blocks[0].synapse[0].weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0


def test_budget_needs_a_weight_and_the_summary_reports_the_best():
    with pytest.raises(ModelSpecError, match="a budget needs a weight: set --synops-weight"):
        TrainConfig(synops_budget=1000.0)
    with pytest.raises(ModelSpecError, match="synops_weight=-1"):
        TrainConfig(synops_weight=-1)
    history = [{"epoch": 1, "synops_per_window": 5000.0, "input_synops_per_window": 3000.0},
               {"epoch": 2, "synops_per_window": 4000.0, "input_synops_per_window": 3000.0}]
    summary = synops_summary(TrainConfig(synops_weight=1, synops_budget=100.0), history)
    assert summary["met"] is False and summary["best_reached"] == 4000.0
    assert summary["best_epoch"] == 2
    assert "NOT met; best reached 4,000 (epoch 2" in summary["line"]
    assert "input-driven synops alone are 3,000 per window, which no network can cut" in summary["line"]
    assert synops_summary(TrainConfig(synops_weight=1, synops_budget=4500.0), history)["met"] is True


def test_cost_weight_lowers_the_logged_cost(tmp_path, capsys):
    """Same seed, 2 epochs: a large weight ends with fewer synops per window than none; an
    unreachable budget runs its epochs once and reports the best reached."""
    train(TrainConfig(**TINY), tmp_path / "plain", progress=False, verbose=False)
    train(TrainConfig(**TINY, synops_weight=100.0), tmp_path / "cost", progress=False, verbose=False)
    logs = [[json.loads(line) for line in (tmp_path / run / "train_log.jsonl").read_text().splitlines()]
            for run in ("plain", "cost")]
    assert [len(log) for log in logs] == [2, 2]
    plain, cost = (log[-1]["network_synops_per_window"] for log in logs)
    assert cost < 0.8 * plain, (plain, cost)
    assert logs[0][-1]["input_synops_per_window"] > 0
    metrics = train(TrainConfig(**TINY, synops_weight=1.0, synops_budget=1.0), tmp_path / "budget",
                    progress=False, verbose=True)
    assert metrics["synops_budget"]["met"] is False
    assert "synops budget 1 per window: NOT met; best reached" in capsys.readouterr().out


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_chip_aware_twin_cost_equals_the_simulator_on_its_own_spikes(seed):
    """Fold's quantized twin spikes as the chip does, so its own forward's cost is the simulator's
    synops for the same frames, exactly."""
    net, config = compiled(seed)
    shape = tuple(int(net.spec.input[k]) for k in ("channels", "height", "width"))
    lowered = lower(net, shape, bias_policy="drop")
    twin = ChipAwareNetwork(lowered, load_chip_spec("speck2f").numerics)
    meter = CostMeter(twin, lowered_fanouts(lowered))
    frames = torch.from_numpy(np.random.default_rng(seed).poisson(0.5, (3, 4, *shape))).float()
    twin(frames)
    network, inputs = meter.synops(frames)
    sim = run_frames(config, frames)
    input_synops = sum(sim["input_synops"].values())
    assert network.tolist() == (sum(sim["synops"].values()) - input_synops).astype(float).tolist()
    assert inputs.tolist() == input_synops.astype(float).tolist()


def test_finetune_with_a_synops_weight_logs_and_lowers_the_cost():
    from asa_deploy.data import FramedDataset, open_dataset, stratified_split

    dataset = open_dataset("synthetic:gesture-tiny")
    train_idx, val_idx = stratified_split(dataset.labels, n_val=6, seed=0)
    train_set = FramedDataset(dataset, train_idx, dataset.frame_spec, mode="rcs", seed=0)
    val_set = FramedDataset(dataset, val_idx, dataset.frame_spec, mode="test", n_windows=1)
    torch.manual_seed(0)
    spec = load_model_spec("speck-tiny").with_overrides(params={"c": 4, "fc": 8}, T=5)
    lowered = lower(build_network(spec, dataset.num_classes).eval(), (2, 32, 32), bias_policy="drop")
    numerics = load_chip_spec("speck2f").numerics
    logs = [finetune(lowered, train_set, val_set, numerics, epochs=2, lr=1e-2, batch_size=2,
                     synops_weight=weight)[1] for weight in (0.0, 100.0)]
    assert logs[0][0]["synops_per_window"] is None and logs[0][1]["synops_per_window"] > 0
    plain, cost = (log[-1]["network_synops_per_window"] for log in logs)
    assert cost < 0.8 * plain, (plain, cost)
