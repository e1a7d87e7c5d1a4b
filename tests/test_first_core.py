"""The first core's kernel, stride and channels as spec params (k1, s1, c1), and the cuts compile
lists: the input-driven synops per event each would leave, checked against the chip's rules."""

from __future__ import annotations

import copy

import pytest

from asa_deploy.chip.spec import load_chip_spec
from asa_deploy.chip.synops import first_core_cuts
from asa_deploy.errors import CompileError
from asa_deploy.fold.stage import check_fits
from asa_deploy.nn import build_network, load_model_spec

# The first block of each chip-sized spec before k1/s1 existed (and speck-tiny's before c1).
TODAY = {
    "nmnist-speck": {"type": "conv", "out": "c1", "kernel": 3, "padding": 1, "pool": 2},
    "nmnist-speck-lif": {"type": "conv", "out": "c1", "kernel": 3, "padding": 1, "pool": 2},
    "dvs-small": {"type": "conv", "out": "c1", "kernel": 3, "padding": 1, "pool": 2},
    "speck-tiny": {"type": "conv", "out": "c", "kernel": 3, "stride": 1, "padding": 1},
}


def _shapes(spec, params=None):
    net = build_network(spec.with_overrides(params=params or {}), 10)
    return [tuple(p.shape) for p in net.parameters()], net.output_shape


def _input(spec):
    return spec.input["channels"], spec.input["height"], spec.input["width"]


@pytest.mark.parametrize("name", sorted(TODAY))
def test_default_params_build_todays_network(name):
    spec = load_model_spec(name)
    assert {"k1", "s1", "c1"} <= set(spec.params)
    today = copy.deepcopy(spec)
    today.blocks[0] = TODAY[name]
    assert _shapes(spec) == _shapes(today)
    if name == "speck-tiny":  # --param c=4 still narrows the first core (c1 follows c)
        assert _shapes(spec, {"c": 4}) == _shapes(today, {"c": 4})


def test_s1_and_k1_reach_the_first_conv():
    net = build_network(load_model_spec("nmnist-speck").with_overrides(params={"s1": 2, "k1": 5}), 10)
    conv = net.blocks[0].synapse[0]
    assert conv.stride == (2, 2) and conv.kernel_size == (5, 5) and conv.padding == (2, 2)


@pytest.mark.parametrize("params, rule", [({"k1": 17}, "kernel_size"), ({"s1": 3}, "stride_y")])
def test_a_first_core_no_core_maps_is_a_design_rule_error(params, rule):
    spec = load_model_spec("nmnist-speck").with_overrides(params=params)
    chip = load_chip_spec("speck2f")
    with pytest.raises(CompileError, match=rf"design-rule violation.*\n.*{rule}"):
        check_fits(build_network(spec, 10).eval(), chip, _input(spec), None, "drop")


def test_cuts_of_known_networks():
    """nmnist-speck: conv 3x3 + pool 2 lowers to a 4x4 stride-2 core, 16 x 2 x 2 = 64 per event;
    stride 2 makes it 5x5 stride 4: still 64 (the pooling already strides), kernel 1 (2x2 stride 2)
    16, 8 channels 32. speck-tiny: 32 x 3 x 3 = 288; stride 2: 32 x 2 x 2 = 128."""
    chip = load_chip_spec("speck2f")
    spec = load_model_spec("nmnist-speck")
    cuts = first_core_cuts(spec, 10, _input(spec), None, chip)
    assert [(c.param, c.was, c.value, c.synops_before, c.synops_after, c.maps) for c in cuts] == [
        ("s1", 1, 2, 64, 64, True), ("k1", 3, 1, 64, 16, True), ("c1", 16, 8, 64, 32, True)]
    spec = load_model_spec("speck-tiny")
    cuts = first_core_cuts(spec, 10, _input(spec), None, chip)
    assert [(c.param, c.synops_after) for c in cuts] == [("s1", 128), ("k1", 32), ("c1", 144)]
    assert cuts[0].line() == ("stride 1 -> 2 (--param s1=2): input-driven synops per event "
                              "288 -> 128 (x0.44)")
    assert cuts[0].to_dict()["factor"] == pytest.approx(128 / 288, abs=1e-4)


def test_a_cut_that_maps_onto_no_core_is_marked():
    """s1=8 -> 16: no core strides by 16, so the cut is kept out of the printout (maps False)."""
    chip = load_chip_spec("speck2f")
    spec = load_model_spec("speck-tiny").with_overrides(params={"s1": 8})
    stride = first_core_cuts(spec, 10, _input(spec), None, chip)[0]
    assert stride.param == "s1" and stride.value == 16
    assert not stride.maps and "stride" in stride.why


def test_quickstart_refuses_an_unmappable_first_core_before_training(tmp_path):
    from asa_deploy.pipeline import check_chip_fit
    from asa_deploy.train import TrainConfig

    config = TrainConfig(data="synthetic:gesture-tiny", model="speck-tiny", T=5, epochs=1,
                         params={"k1": 17, "c": 4, "fc": 8})
    with pytest.raises(CompileError, match=r"checked before training(.|\n)*kernel_size: 17 \(limit 16\)"):
        check_chip_fit(config, "speck2f", cache=False)
