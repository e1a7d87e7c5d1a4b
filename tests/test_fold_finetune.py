"""Hardware-aware fine-tuning (fold/finetune.py): the trainable twin equals the float lowered network
and, with the chip's numerics, the compiled chip config run by the fast simulator, bit for bit;
gradients pass the fake quantization; fixed per-neuron parameters stay fixed and act as on chip."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sinabs_reference import random_network

from asa_deploy.chip.compile import compile_network
from asa_deploy.chip.lower import ChipLayer, LoweredNetwork, lower
from asa_deploy.chip.quantize import quantize_layer
from asa_deploy.chip.sim.fast import run_frames
from asa_deploy.chip.spec import load_chip_spec
from asa_deploy.data import FramedDataset, open_dataset, stratified_split
from asa_deploy.errors import CompileError
from asa_deploy.fold.finetune import ChipAwareNetwork, _round_ste, finetune
from asa_deploy.nn import build_network, load_model_spec
from asa_deploy.train.evaluation import evaluate
from asa_deploy.train.loop import per_sample_loss

NUMERICS = load_chip_spec("speck2f").numerics
SHAPE = (2, 32, 32)


@pytest.fixture(scope="module")
def data():
    dataset = open_dataset("synthetic:gesture-tiny")
    train_idx, val_idx = stratified_split(dataset.labels, n_val=6, seed=0)
    frames = dataset.frame_spec
    return {
        "dataset": dataset,
        "train": FramedDataset(dataset, train_idx, frames, mode="rcs", seed=0),
        "val": FramedDataset(dataset, val_idx, frames, mode="test", n_windows=2),
        "frames": torch.stack([FramedDataset(dataset, np.arange(len(dataset)), frames,
                                             mode="test", n_windows=1)[i][0] for i in range(12)]),
    }


def activate(lowered: LoweredNetwork, x: torch.Tensor, quantile: float = 0.8) -> LoweredNetwork:
    """Rescale each layer's weights so that 20% of its positive input currents on ``x`` reach
    the threshold: a randomly initialised network is otherwise silent after five layers."""
    layers: list[ChipLayer] = []
    for layer in lowered.layers:
        h = x
        if layers:
            upstream = LoweredNetwork(lowered.input_shape, lowered.input_pool, layers, [])
            model = ChipAwareNetwork(upstream, None)
            with torch.no_grad():
                for module, pool in zip(model.layers, model.pools, strict=True):
                    h = module(h)
                    if pool > 1:
                        h = F.avg_pool2d(h.flatten(0, 1), pool).unflatten(0, h.shape[:2]) * pool**2
        current = F.conv2d(h.flatten(0, 1), layer.weight, None, layer.stride, layer.padding)
        positive = current[current > 0]
        gain = layer.threshold / float(torch.quantile(positive, quantile))
        layers.append(replace(layer, weight=layer.weight * gain))
    return LoweredNetwork(lowered.input_shape, lowered.input_pool, layers, list(lowered.notes))


@pytest.fixture(scope="module")
def tiny(data):
    """speck-tiny (c=4, fc=8) lowered for 6 classes, made active on the synthetic frames."""
    torch.manual_seed(0)
    spec = load_model_spec("speck-tiny").with_overrides(params={"c": 4, "fc": 8}, T=5)
    net = build_network(spec, data["dataset"].num_classes).eval()
    return activate(lower(net, SHAPE, bias_policy="drop"), data["frames"])


def sim_spikes(config, frames):
    """The fast simulator's output spikes, [B, T, classes] (summed over the last map)."""
    return run_frames(config, frames)["spikes"][config.readout.source_core].sum(dim=(3, 4))


def random_frames(seed: int, batch: int, steps: int, shape) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 3, (batch, steps, *shape), generator=generator).float()
    return frames * (torch.rand(frames.shape, generator=generator) < 0.5)


# -- the forward pass ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_float_forward_equals_the_lowered_sequential(seed):
    batch, steps = 3, 6
    net, shape = random_network(seed, batch_size=batch)
    lowered = lower(net, shape, bias_policy="leak")
    frames = random_frames(seed, batch, steps, shape)
    expected = lowered.to_sequential(batch_size=batch)(frames.flatten(0, 1))
    got = ChipAwareNetwork(lowered, None)(frames)
    assert expected.sum() > 0
    assert torch.equal(got, expected.unflatten(0, (batch, steps)).flatten(2))


def test_float_forward_equals_the_sequential_on_speck_tiny(tiny, data):
    frames = data["frames"]
    expected = tiny.to_sequential(batch_size=len(frames))(frames.flatten(0, 1))
    got = ChipAwareNetwork(tiny, None)(frames)
    assert got.shape == (len(frames), 5, 6) and got.sum() > 0
    assert torch.equal(got, expected.unflatten(0, frames.shape[:2]).flatten(2))


@pytest.mark.parametrize("seed", range(6))
def test_quantized_forward_equals_the_fast_simulator(seed):
    """Random chip-valid networks (biases kept as leak, zero and subtract resets, pooling)."""
    batch, steps = 3, 6
    net, shape = random_network(seed, batch_size=batch)
    lowered = lower(net, shape, bias_policy="leak")
    compiled = compile_network(net, "speck2f", input_shape=shape, bias_policy="leak")
    frames = random_frames(seed, batch, steps, shape)
    model = ChipAwareNetwork(lowered, NUMERICS)
    expected = sim_spikes(compiled.config, frames)
    assert expected.sum() > 0
    assert torch.equal(model(frames), expected)
    assert model.scales() == [core.scale for core in compiled.config.cores]


def test_quantized_forward_equals_the_fast_simulator_on_speck_tiny(tiny, data):
    compiled = compile_network(tiny.to_sequential(), "speck2f", input_shape=SHAPE)
    frames = data["frames"]
    got = ChipAwareNetwork(tiny, NUMERICS)(frames)
    expected = sim_spikes(compiled.config, frames)
    assert expected.sum() > 20
    assert torch.equal(got, expected)
    # and the quantization is not a no-op: the float network's outputs differ
    assert not torch.equal(ChipAwareNetwork(tiny, None)(frames), got)


def test_initial_states_and_kill_bits_equal_the_fast_simulator(tiny, data):
    """Per-neuron initial states (which enter the scale) and kill bits, as compile + quantize_layer
    put them in a core (kill bits patched in: speck2f itself has none)."""
    generator = torch.Generator().manual_seed(1)
    layers = list(tiny.layers)
    shape0, shape1 = layers[0].neuron_shape, layers[1].neuron_shape
    layers[0] = replace(layers[0], initial_state=-3.0 * torch.rand(shape0, generator=generator),
                        kill=torch.rand(shape0, generator=generator) < 0.2)
    layers[1] = replace(layers[1], initial_state=torch.rand(shape1, generator=generator) - 0.5)
    lowered = replace(tiny, layers=layers)
    config = compile_network(tiny.to_sequential(), "speck2f", input_shape=SHAPE).config
    for i, layer in enumerate(layers):
        q = quantize_layer(layer, NUMERICS)
        config.cores[i] = replace(
            config.cores[i], weights=q.weight.numpy(), threshold_high=q.threshold_high,
            threshold_low=q.threshold_low, neurons_initial_value=q.initial_state.numpy(),
            neurons_kill=None if layer.kill is None else layer.kill.numpy(), scale=q.scale)
    frames = data["frames"]
    model = ChipAwareNetwork(lowered, NUMERICS)
    got = model(frames)
    expected = sim_spikes(config, frames)
    assert expected.sum() > 0 and torch.equal(got, expected)
    assert model.scales() == [core.scale for core in config.cores]


def make_single_layer(initial_state=None, kill=None, weight=0.45) -> LoweredNetwork:
    layer = ChipLayer(name="l0", input_shape=(1, 2, 2), weight=torch.full((2, 1, 1, 1), weight),
                      bias=None, stride=(1, 1), padding=(0, 0), threshold=1.0, min_v_mem=-1.0,
                      return_to_zero=False, initial_state=initial_state, kill=kill)
    return LoweredNetwork((1, 2, 2), 1, [layer])


@pytest.mark.parametrize("numerics", [None, NUMERICS], ids=["float", "quantized"])
def test_initial_state_applies_at_every_sample_start_and_killed_neurons_never_spike(numerics):
    state = torch.zeros(2, 2, 2)
    state[0, 0, 0] = -8.0  # far below threshold_low: clamped to it after the first step
    kill = torch.zeros(2, 2, 2, dtype=torch.bool)
    kill[1, 1, 1] = True
    model = ChipAwareNetwork(make_single_layer(state, kill), numerics)
    (_, layer), = model.spiking_layers()
    seen = []
    layer.register_forward_hook(lambda _m, _i, out: seen.append(out))
    frames = torch.ones(2, 5, 1, 2, 2)  # weak input: 0.45 per step, two spikes in 5 steps
    with torch.no_grad():
        first = model(frames)
        model.reset_states()
        second = model(frames)
        model(frames[:1])
        model(10 * frames)
    counts = seen[0].sum(1)  # [B, C, H, W]
    free = torch.ones(2, 2, 2, dtype=torch.bool)
    free[0, 0, 0] = free[1, 1, 1] = False
    assert torch.equal(counts[:, 0, 0, 0], torch.zeros(2))  # the deep initial state
    assert torch.equal(counts[:, 1, 1, 1], torch.zeros(2))  # killed
    assert bool((counts[:, free] == 2).all())
    # every call, and every sample of a batch, starts again from the initial states
    assert torch.equal(first, second) and torch.equal(first[0], first[1])
    assert torch.equal(seen[2][0], seen[0][0])
    # with strong input the killed neuron stays silent; the deep one fires once it climbs out
    assert float(seen[-1][:, :, 1, 1, 1].sum()) == 0 and float(seen[-1][:, :, 0, 0, 0].sum()) > 0


def test_quantized_thresholds_are_the_chips_rounded_ones():
    """Where the float network and the chip must differ: the chip rounds the threshold with the
    weights. With w = 0.1999 (the largest weight, so 127) the scale is 127 / 0.1999 = 635.3 and
    threshold 1 -> 635: five steps of 127 reach it and the neuron spikes, where the float neuron
    reaches 5 * 0.1999 = 0.9995 < 1 and stays silent. The quantized twin follows the chip."""
    frames = torch.ones(1, 5, 1, 2, 2)
    lowered = make_single_layer(weight=0.1999)
    with torch.no_grad():
        float_out = ChipAwareNetwork(lowered, None)(frames)
        quant_out = ChipAwareNetwork(lowered, NUMERICS)(frames)
    config = compile_network(lowered.to_sequential(), "speck2f", input_shape=(1, 2, 2)).config
    assert config.cores[0].threshold_high == 635 and int(config.cores[0].weights.max()) == 127
    assert torch.equal(quant_out, sim_spikes(config, frames))
    assert float(float_out.sum()) == 0
    assert torch.equal(quant_out[0, :4], torch.zeros(4, 2))
    assert torch.equal(quant_out[0, 4], torch.full((2,), 4.0))  # 4 positions per channel


def test_per_neuron_thresholds_are_refused(tiny):
    layer = replace(tiny.layers[0], per_neuron_threshold=torch.ones(tiny.layers[0].neuron_shape))
    with pytest.raises(CompileError, match="per-neuron thresholds"):
        ChipAwareNetwork(replace(tiny, layers=[layer, *tiny.layers[1:]]), NUMERICS)


# -- gradients ----------------------------------------------------------------------------------

def test_round_ste_rounds_forward_and_passes_gradients():
    x = torch.tensor([-2.5, -0.5, 0.49, 0.5, 1.5, 126.6], requires_grad=True)
    y = _round_ste(x)
    assert torch.equal(y, torch.round(x.detach()))
    (y * torch.arange(6.0)).sum().backward()
    assert torch.equal(x.grad, torch.arange(6.0))


def test_gradients_reach_every_weight_and_bias_through_the_quantization(data):
    net, shape = random_network(5, batch_size=1)  # a seed with a bias and no saturated layer
    lowered = lower(net, shape, bias_policy="leak")
    assert any(layer.bias is not None for layer in lowered.layers)
    model = ChipAwareNetwork(lowered, NUMERICS)
    frames = random_frames(5, 4, 6, shape)
    out = model(frames)
    labels = torch.arange(4) % out.shape[-1]
    per_sample_loss(out, labels, "mse").mean().backward()
    params = model.trainable_parameters()
    assert len(params) == sum(1 + (layer.bias is not None) for layer in lowered.layers)
    for p in params:
        assert p.grad is not None and torch.isfinite(p.grad).all() and bool((p.grad != 0).any())
    assert all(not b.requires_grad for b in model.buffers())
    assert {id(p) for p in model.parameters()} == {id(p) for p in params}


# -- fine-tuning --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tuned(tiny, data):
    layers = list(tiny.layers)
    generator = torch.Generator().manual_seed(2)
    shape0, shape1 = layers[0].neuron_shape, layers[1].neuron_shape
    layers[0] = replace(layers[0], kill=torch.rand(shape0, generator=generator) < 0.1)
    layers[1] = replace(layers[1], initial_state=-0.5 * torch.rand(shape1, generator=generator))
    start = replace(tiny, layers=layers, notes=list(tiny.notes))
    options = dict(epochs=4, lr=2e-3, batch_size=4, seed=0)
    result, history = finetune(start, data["train"], data["val"], NUMERICS, **options)
    again = finetune(start, data["train"], data["val"], NUMERICS, **options)
    return start, result, history, again


def test_finetune_log_and_best_epoch_selection(tuned, data):
    start, result, history, _ = tuned
    assert [h["epoch"] for h in history] == [0, 1, 2, 3, 4]
    assert history[0]["loss"] is None and all(h["loss"] > 0 for h in history[1:])
    best = max(history, key=lambda h: (h["val_accuracy_recording"], h["val_accuracy_window"]))
    assert best["val_accuracy_recording"] >= history[0]["val_accuracy_recording"]
    # the returned network is the best epoch's: evaluating it gives the logged numbers
    metrics = evaluate(ChipAwareNetwork(result, NUMERICS), data["val"])
    assert metrics["accuracy_recording"] == best["val_accuracy_recording"]
    assert metrics["accuracy_window"] == best["val_accuracy_window"]
    assert f"best epoch {best['epoch']}" in result.notes[-1]
    assert result.notes[:-1] == start.notes


def test_finetune_keeps_everything_but_weights_and_biases(tuned):
    start, result, history, _ = tuned
    assert history[-1]["loss"] < history[1]["loss"]  # the training loss goes down
    assert result.input_shape == start.input_shape and result.input_pool == start.input_pool
    for a, b in zip(start.layers, result.layers, strict=True):
        for name in ("name", "input_shape", "stride", "padding", "threshold", "min_v_mem",
                     "return_to_zero", "pool", "per_neuron_threshold"):
            assert getattr(a, name) == getattr(b, name), name
        for name in ("initial_state", "kill"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None and y is None) or torch.equal(x, y), name
        assert b.weight.shape == a.weight.shape and (b.bias is None) == (a.bias is None)


def test_finetune_returns_the_best_epochs_weights(tiny, data, monkeypatch):
    """Selection alone, with a stand-in validation score: epoch 2 is best, so its weights come
    back, not the last epoch's nor the starting ones."""
    from asa_deploy.fold import finetune as module

    scores = iter([0.2, 0.3, 0.5, 0.4])
    snapshots = []

    def fake_evaluate(model, dataset, **_):
        snapshots.append([layer.weight.detach().clone() for layer in model.layers])
        accuracy = next(scores)
        return {"accuracy_recording": accuracy, "accuracy_window": accuracy, "nasfr": 0.0}

    monkeypatch.setattr(module, "evaluate", fake_evaluate)
    result, history = finetune(tiny, data["train"], data["val"], NUMERICS, epochs=3, lr=2e-3,
                               batch_size=4)
    assert [h["val_accuracy_recording"] for h in history] == [0.2, 0.3, 0.5, 0.4]
    assert "best epoch 2" in result.notes[-1]
    for i, layer in enumerate(result.layers):
        assert torch.equal(layer.weight, snapshots[2][i])
    assert all(not torch.equal(a, b) for a, b in zip(snapshots[0], snapshots[2], strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(snapshots[2], snapshots[3], strict=True))


def test_finetune_is_deterministic(tuned):
    _, result, history, (result2, history2) = tuned
    assert history == history2
    for a, b in zip(result.layers, result2.layers, strict=True):
        assert torch.equal(a.weight, b.weight)


def test_finetuned_network_still_compiles_and_killed_neurons_stay_silent(tuned, data):
    _, result, _, _ = tuned
    compiled = compile_network(result.to_sequential(), "speck2f", input_shape=SHAPE)
    assert all(int((core.weights != 0).sum()) > 0 for core in compiled.config.cores)
    model = ChipAwareNetwork(result, NUMERICS)
    seen = []
    model.spiking_layers()[0][1].register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        model(data["frames"] * 10)
    kill = result.layers[0].kill
    assert float(seen[0][:, :, kill].sum()) == 0 and float(seen[0][:, :, ~kill].sum()) > 0
