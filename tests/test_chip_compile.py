"""The compile stage: lowering, design rules, quantization and mapping, checked against sinabs's own
chip backend (loaded with a stand-in samna; see sinabs_reference.py) and against exact math."""

from __future__ import annotations

import json

import pytest
import sinabs.layers as sl
import torch
from sinabs_reference import iaf, load_dynapcnn, random_network
from torch import nn

from asa_deploy.chip.compile import SensorInput, compile_network
from asa_deploy.chip.config import ChipConfig
from asa_deploy.chip.lower import lower
from asa_deploy.chip.mapping import format_table, memory_words
from asa_deploy.chip.sim.fast import run_frames
from asa_deploy.chip.spec import list_chips, load_chip_spec
from asa_deploy.errors import ChipConfigError, ChipSpecError, CompileError
from asa_deploy.nn.network import build_network, load_model_spec

SEEDS = range(12)


@pytest.fixture(scope="module")
def sinabs_backend():
    return load_dynapcnn()


def speck_network(seed: int = 0, **options):
    """The Speck network of Yao et al. 2024 (models/speck-tiny), with non-trivial BN statistics."""
    torch.manual_seed(seed)
    spec = load_model_spec("speck-tiny")
    if options:
        spec = spec.with_overrides(neuron_options={**spec.neuron_options, **options})
    net = build_network(spec, 11).eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.1, 0.1)
    return net


def assert_equals_sinabs(net: nn.Sequential, shape, backend, bias_policy="leak"):
    dynapcnn_network, constraints = backend
    ours = compile_network(net, "speck2f", input_shape=shape, bias_policy=bias_policy)
    ref = dynapcnn_network(net, input_shape=shape, discretize=True)
    ref_layers = [ref.dynapcnn_layers[i] for i in sorted(ref.dynapcnn_layers)]
    assert len(ref_layers) == len(ours.config.cores)
    for core, lowered, theirs in zip(ours.config.cores, ours.lowered.layers, ref_layers, strict=True):
        assert torch.equal(torch.from_numpy(core.weights).float(), theirs.conv.weight.data)
        their_bias = theirs.conv.bias.data if theirs.conv.bias is not None else 0 * theirs.conv.weight[:, 0, 0, 0]
        assert torch.equal(torch.from_numpy(core.biases).float(), their_bias)
        assert core.threshold_high == int(theirs.spk.spike_threshold)
        assert core.threshold_low == int(theirs.spk.min_v_mem)
        assert memory_words(lowered) == {k: int(v) for k, v in theirs.memory_summary().items()}
        assert constraints[core.core].fits(theirs), f"{core.name} on core {core.core}"
    return ours, ref


@pytest.mark.parametrize("seed", SEEDS)
def test_quantization_memory_and_mapping_equal_sinabs(seed, sinabs_backend):
    net, shape = random_network(seed, batch_size=1)
    assert_equals_sinabs(net, shape, sinabs_backend)


def test_speck_network_equals_sinabs(sinabs_backend):
    """Yao et al.'s network: our lowering (BN folded, AvgPool4 of spikes) fed to sinabs gives
    the integers we compute ourselves from the original network."""
    net = speck_network()
    ours = compile_network(net, "speck2f", input_shape=(2, 32, 32), bias_policy="leak")
    assert [c.core for c in ours.config.cores] == [0, 1, 2, 3, 4]
    _, ref = assert_equals_sinabs(ours.lowered.to_sequential(batch_size=2), (2, 32, 32),
                                  sinabs_backend)
    frames = (torch.rand(2, 10, 2, 32, 32, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    expected = ref(frames.flatten(0, 1)).unflatten(0, (2, 10))
    got = run_frames(ours.config, frames)["spikes"][4]
    assert expected.sum() > 0 and torch.equal(got, expected)


def test_batch_norm_and_pooling_folds_are_exact():
    net = speck_network()
    lowered = lower(net, (2, 32, 32), bias_policy="leak")
    x = torch.rand(4, 2, 32, 32)
    block = net.blocks[0].synapse  # conv -> BN
    folded = lowered.layers[0]
    expected = block(x)
    got = nn.functional.conv2d(x, folded.weight, folded.bias, folded.stride, folded.padding)
    assert torch.allclose(got, expected, atol=1e-5)
    # AvgPool of spikes: sum pooling, next weights / 16
    fc = lowered.layers[3]
    assert torch.allclose(fc.weight.flatten(1), net.blocks[5].synapse.weight / 16)


@pytest.mark.parametrize("pool", [nn.AvgPool2d(2), sl.SumPool2d(2)])
@pytest.mark.parametrize("stride,padding,size", [(1, 1, 16), (2, 0, 15), (1, 0, 17)])
def test_pooling_before_the_neuron_folds_into_the_conv(pool, stride, padding, size):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, stride, padding, bias=True)
    net = nn.Sequential(conv, pool, iaf(1, 1.0))
    layer = lower(net, (3, size, size), bias_policy="leak").layers[0]
    x = torch.rand(2, 3, size, size)
    got = nn.functional.conv2d(x, layer.weight, layer.bias, layer.stride, layer.padding)
    assert got.shape == pool(conv(x)).shape
    assert torch.allclose(got, pool(conv(x)), atol=1e-5)


def test_lif_becomes_iaf_with_the_dropped_leak_reported():
    lif_net = build_network(load_model_spec("nmnist-net"), 10).eval()
    lowered = lower(lif_net, (2, 34, 34), bias_policy="drop")
    assert any("LIF -> IAF" in n and "0.3" in n for n in lowered.notes)
    assert all(layer.min_v_mem < 0 for layer in lowered.layers)  # LIF's None floor made finite


def test_refusals_name_the_layer_and_the_reason():
    with pytest.raises(CompileError, match="block0.conv: has AdvancedSpatialAttention.*fold it first"):
        lower(build_network(load_model_spec("speck-tiny"), 11, attention="asa2").eval(), (2, 32, 32))
    with pytest.raises(CompileError, match="MaxPool2d has no chip equivalent"):
        lower(nn.Sequential(nn.Conv2d(2, 4, 3, bias=False), iaf(1, 1.0), nn.MaxPool2d(2)), (2, 8, 8))
    with pytest.raises(CompileError, match="0: has biases.*--bias drop or --bias leak"):
        lower(nn.Sequential(nn.Conv2d(2, 4, 3, bias=True), iaf(1, 1.0)), (2, 8, 8))
    with pytest.raises(CompileError, match="without a neuron"):
        lower(nn.Sequential(nn.Conv2d(2, 4, 3, bias=False)), (2, 8, 8))
    with pytest.raises(CompileError, match="groups=2"):
        lower(nn.Sequential(nn.Conv2d(2, 4, 3, groups=2, bias=False), iaf(1, 1.0)), (2, 8, 8))


def test_bias_policy_drop_removes_biases_and_says_how_large_they_were():
    net = nn.Sequential(nn.Conv2d(2, 4, 3, bias=True), iaf(1, 1.0))
    lowered = lower(net, (2, 8, 8), bias_policy="drop")
    assert lowered.layers[0].bias is None
    assert any("bias dropped" in n and "of the threshold" in n for n in lowered.notes)
    config = compile_network(net, "speck2f", input_shape=(2, 8, 8), bias_policy="leak").config
    assert config.cores[0].leak_enable


def test_a_layer_that_quantizes_to_zero_is_an_error():
    conv = nn.Conv2d(2, 4, 3, bias=False)
    conv.weight.data.zero_()
    with pytest.raises(CompileError, match="all weights are zero"):
        compile_network(nn.Sequential(conv, iaf(1, 1.0)), "speck2f", input_shape=(2, 8, 8))
    conv.weight.data.fill_(1e-6)  # 32767 / threshold 1 * 1e-6 rounds to 0
    with pytest.raises(CompileError, match="every weight quantizes to 0.*set min_v_mem near"):
        compile_network(nn.Sequential(conv, iaf(1, 1.0)), "speck2f", input_shape=(2, 8, 8))


def test_design_rule_violations_are_all_listed_with_limit_and_fix():
    net = nn.Sequential(nn.Conv2d(2, 4, 17, stride=3, padding=8, bias=False), iaf(1, 1.0),
                        sl.SumPool2d(8), nn.Flatten(), nn.Linear(4, 2, bias=False), iaf(1, 1.0))
    with pytest.raises(CompileError) as info:
        compile_network(net, "speck2f", input_shape=(2, 32, 32))
    message = str(info.value)
    for rule in ("kernel_size: 17 (limit 16)", "stride_y: 3", "stride_x: 3", "padding_y: 8 (limit 7)",
                 "pooling: 8"):
        assert rule in message, message
    assert "Fix:" in message


def test_a_network_that_does_not_fit_gets_the_shortfall_and_a_fix():
    net = nn.Sequential(nn.Conv2d(2, 32, 3, padding=1, bias=False), iaf(1, 1.0))
    with pytest.raises(CompileError) as info:
        compile_network(net, "speck2f", input_shape=(2, 64, 64))
    message = str(info.value)
    assert "131,072 neuron words" in message and "65,536" in message
    assert "stride 2" in message


def test_two_layers_competing_for_the_same_cores():
    """Kernel 32x32x3x3 needs the 32 Ki cores 3-6 and 64x64 outputs the 64 Ki neuron cores 0-2."""
    big = [nn.Conv2d(2, 16, 3, padding=1, bias=False), iaf(1, 1.0)] * 1
    net = nn.Sequential(*big, nn.Conv2d(16, 16, 3, padding=1, bias=False), iaf(1, 1.0),
                        nn.Conv2d(16, 16, 3, padding=1, bias=False), iaf(1, 1.0),
                        nn.Conv2d(16, 16, 3, padding=1, bias=False), iaf(1, 1.0))
    with pytest.raises(CompileError, match="fits only cores \\[0, 1, 2\\]"):
        compile_network(net, "speck2f", input_shape=(2, 64, 64))


def test_nine_layer_network_maps_onto_nine_cores():
    layers = [nn.Conv2d(2, 8, 3, padding=1, bias=False), iaf(1, 1.0)]
    for _ in range(8):
        layers += [nn.Conv2d(8, 8, 3, padding=1, bias=False), iaf(1, 1.0)]
    compiled = compile_network(nn.Sequential(*layers), "speck2f", input_shape=(2, 32, 32))
    assert sorted(compiled.mapping.assignment.values()) == list(range(9))
    table = format_table(compiled.mapping.table(load_chip_spec("speck2f")))
    assert "8,192/65,536" in table
    with pytest.raises(CompileError, match="10 layers.*9 cores"):
        compile_network(nn.Sequential(*layers, nn.Conv2d(8, 8, 3, padding=1, bias=False),
                                      iaf(1, 1.0)), "speck2f", input_shape=(2, 32, 32))


def test_dvs_input_layer_absorbs_pooling_and_merges_polarities():
    net = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(1, 4, 3, bias=False), iaf(1, 1.0))
    compiled = compile_network(net, "speck2f", input_shape=(1, 64, 64),
                               sensor=SensorInput((2, 128, 128), downsample=1))
    dvs = compiled.config.dvs
    assert dvs.pooling == (2, 2) and dvs.merge and dvs.cut == (31, 31)
    assert compiled.config.input_shape() == (2, 128, 128)
    with pytest.raises(CompileError, match="dvs_pooling: 8"):
        compile_network(net, "speck2f", input_shape=(1, 64, 64),
                        sensor=SensorInput((2, 128, 128), downsample=4))


def test_chip_config_json_round_trip_is_exact():
    config = compile_network(speck_network(), "speck2f", input_shape=(2, 32, 32),
                             sensor=SensorInput((2, 128, 128), 4), bias_policy="leak").config
    again = ChipConfig.from_json(config.to_json())
    assert again == config and again.to_json() == config.to_json()
    assert again.cores[0].weights.dtype.name == "int8"
    assert again.cores[0].neurons_initial_value.dtype.name == "int16"


@pytest.mark.parametrize("edit,match", [
    (lambda r: r.update(schema_version=99), "schema_version 99"),
    (lambda r: r["cores"][0]["weights"][0][0][0].__setitem__(0, 200), "weights: values .*200"),
    (lambda r: r["cores"][0].update(biases=[0, 0]), "biases shape"),
    (lambda r: r["cores"][0].update(threshold_low=0), "threshold_low 0"),
    (lambda r: r["cores"][0].update(threshold_high=40000), "threshold_high 40000"),
    (lambda r: r["cores"][0]["destinations"][0].update(pooling=2), "sends 32x16x16 .* 32x32x32"),
    (lambda r: r["dvs"].update(pooling=[3, 3]), "pooling"),
    (lambda r: r["cores"][0].pop("weights"), "malformed.*weights"),
    (lambda r: r["readout"].update(num_classes=40), "readout needs channels"),
])
def test_bad_chip_config_json_is_refused_with_a_specific_error(edit, match):
    config = compile_network(speck_network(), "speck2f", input_shape=(2, 32, 32),
                             sensor=SensorInput((2, 128, 128), 4), bias_policy="drop").config
    raw = json.loads(config.to_json())
    edit(raw)
    with pytest.raises(ChipConfigError, match=match):
        ChipConfig.from_json(json.dumps(raw), "bad.json")


def test_chip_specs_load_and_differ_where_the_chips_differ():
    assert set(list_chips()) >= {"speck2e", "speck2f", "dynapcnn"}
    speck, dynapcnn = load_chip_spec("speck2f"), load_chip_spec("dynapcnn")
    assert not speck.has("per_neuron_kill") and dynapcnn.has("per_neuron_kill")
    assert speck.has("readout") and not dynapcnn.has("readout")
    assert sum(speck.cores.neuron_memory) == 327_680
    assert speck.power.resting_mw == 0.42 and "0.42" in speck.power.resting_source


def test_hw_config_with_a_missing_field_names_file_section_and_field(tmp_path):
    text = (load_chip_spec("speck2f").path and open(load_chip_spec("speck2f").path).read())
    bad = tmp_path / "mychip.toml"
    bad.write_text(text.replace("max_padding = 7", ""))
    with pytest.raises(ChipSpecError, match="mychip.toml: \\[limits\\] is missing field 'max_padding'"):
        load_chip_spec(bad)
    bad.write_text(text.replace("fan_out = 2", 'fan_out = "two"'))
    with pytest.raises(ChipSpecError, match="fan_out: expected int"):
        load_chip_spec(bad)
    with pytest.raises(ChipSpecError, match="unknown chip 'speck9'"):
        load_chip_spec("speck9")


@pytest.mark.parametrize("seed", SEEDS)
def test_fast_simulator_equals_sinabs_forward_per_time_bin(seed, sinabs_backend):
    batch, steps = 2, 10
    net, shape = random_network(seed, batch_size=batch)
    ours, ref = assert_equals_sinabs(net, shape, sinabs_backend)
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 3, (batch, steps, *shape), generator=generator).float()
    frames *= torch.rand(frames.shape, generator=generator) < 0.5
    expected = ref(frames.flatten(0, 1)).unflatten(0, (batch, steps))
    got = run_frames(ours.config, frames)["spikes"][ours.config.readout.source_core]
    assert expected.sum() > 0, "a silent output would make the comparison vacuous"
    assert torch.equal(got, expected)
