"""Training recipes (``--recipe``) and the authors' release masks (``--release-masks``)."""

import pytest
import torch

from asa_deploy.cli import _config, build_parser
from asa_deploy.errors import ModelSpecError
from asa_deploy.nn import (
    AdvancedSpatialAttention,
    ModelSpec,
    apply_recipe,
    build_network,
    load_model_spec,
    make_neuron,
)
from asa_deploy.nn.neurons import Rectangular
from asa_deploy.train import TrainConfig


def network(recipe: str, model: str = "dvs-small", attention: str = "none", **kw):
    spec = apply_recipe(load_model_spec(model), recipe, **kw)
    # rebuilt from the stored dict, as load_run does from model.pt
    return build_network(ModelSpec.from_dict(spec.to_dict()), 4, attention)


def batch_norms(net):
    return [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]


@pytest.mark.parametrize("recipe, weight", [("default", 0.3), ("paper", 1.0)])
def test_recipe_sets_the_batch_norm_start(recipe, weight):
    bns = batch_norms(network(recipe))
    assert bns
    for bn in bns:
        assert torch.allclose(bn.weight, torch.full_like(bn.weight, weight))


@pytest.mark.parametrize("recipe, width", [("default", 1.0), ("paper", 0.5)])
def test_recipe_sets_the_surrogate_shape_and_width(recipe, width):
    for _, neuron in network(recipe).spiking_layers():
        surrogate = neuron.surrogate_grad_fn
        assert isinstance(surrogate, Rectangular) and surrogate.width == width
        threshold = torch.tensor(0.3)
        inside = surrogate(torch.tensor([0.3, 0.3 + 0.49 * width, 0.3 - 0.49 * width]), threshold)
        outside = surrogate(torch.tensor([0.3 + 0.51 * width, 0.3 - 0.51 * width]), threshold)
        assert torch.allclose(inside, torch.full((3,), 1 / width))  # paper: height 2
        assert torch.equal(outside, torch.zeros(2))


def gradient_through_reset(reset_grad: bool) -> float:
    """d(spike at t=1) / d(input at t=0) when the neuron spiked at t=0 and reset: only the reset
    links them (the membrane after the reset is 0 either way)."""
    neuron = make_neuron("lif", reset_grad=reset_grad, surrogate_width=0.5)
    x = torch.tensor([[[0.35], [0.3]]], requires_grad=True)  # [B=1, T=2, 1]
    out = neuron(x)
    assert out[0, :, 0].tolist() == [1.0, 1.0]
    out[0, 1, 0].backward()
    return float(x.grad[0, 0, 0])


def test_reset_gradient_flows_with_paper_and_is_cut_by_default():
    # paper: v_after = v (1 - s) -> d v_after / d x0 = -v0 * surrogate(v0) = -0.35 * 2, times
    # decay 0.3 and surrogate(u1) = 2 at t=1
    assert gradient_through_reset(True) == pytest.approx(-0.35 * 2 * 0.3 * 2)
    assert gradient_through_reset(False) == 0.0
    paper = {type(n.reset_fn).__name__ for _, n in network("paper").spiking_layers()}
    default = {type(n.reset_fn).__name__ for _, n in network("default").spiking_layers()}
    assert paper == {"SpikeGradReset"} and default == {"MembraneReset"}


def test_paper_recipe_adds_arch_a_dropout_where_the_spec_sets_none():
    def dropouts(recipe, model):
        return [(b.kind, b.dropout.p if b.dropout is not None else 0.0)
                for b in network(recipe, model).blocks if b.kind in ("conv", "fc")]

    default, paper = dropouts("default", "dvs-small"), dropouts("paper", "dvs-small")
    convs = [i for i, (kind, _) in enumerate(paper) if kind == "conv"]
    assert paper[convs[-1]][1] == 0.1 and default[convs[-1]][1] == 0.0
    assert all(p == 0.1 for kind, p in paper if kind == "fc")
    assert all(p == 0.5 for _, p in dropouts("paper", "arch-d")[-3:])  # explicit spec values win


def test_recipe_settings_for_training_and_explicit_values_win(tmp_path):
    parser = build_parser()

    def config(*argv):
        return _config(parser.parse_args(["train", "--out", str(tmp_path / "run"), *argv]))

    assert (config().lr, config().recipe) == (1e-3, "default")
    paper = config("--recipe", "paper")
    assert (paper.lr, paper.loss, paper.lr_min, paper.recipe) == (1e-4, "mse", 1e-6, "paper")
    assert config("--recipe", "paper", "--lr", "5e-3").lr == 5e-3
    assert config("--recipe", "paper", "--loss", "ce").loss == "ce"
    assert config("--release-masks").release_masks is True
    stored = TrainConfig.from_dict(paper.to_dict())
    assert (stored.recipe, stored.lr) == ("paper", 1e-4)
    old = {k: v for k, v in config().to_dict().items() if k not in ("recipe", "release_masks")}
    assert TrainConfig.from_dict(old).differences(config()) == []  # older checkpoints still resume


def test_unknown_recipe_lists_the_valid_ones(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["train", "--out", str(tmp_path), "--recipe", "papper"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--recipe" in err and "'default'" in err and "'paper'" in err
    with pytest.raises(ModelSpecError, match=r"recipe 'papper' unknown; use one of \['default', 'paper'\]"):
        TrainConfig(recipe="papper")
    with pytest.raises(ModelSpecError, match="recipe 'x' unknown"):
        apply_recipe(load_model_spec("dvs-small"), "x")


def hand_made_batch() -> torch.Tensor:
    """N=2, T=2, C=4, constant over space (avg = max = score); lambda 0.5 -> top-2 channels per
    step, top-1 step per channel."""
    scores = torch.tensor([[[4.0, 3.0, 2.0, 1.0],      # sample 0, t=0: channels 0, 1
                            [1.0, 5.0, 6.0, 0.5]],     #           t=1: channels 1, 2
                           [[0.5, 4.0, 3.0, 1.0],      # sample 1, t=0: channels 1, 2
                            [1.0, 2.0, 5.0, 6.0]]])    #           t=1: channels 2, 3
    return scores[..., None, None].expand(2, 2, 4, 3, 3).clone()


@pytest.mark.parametrize("variant", ["asa1", "asa2"])
def test_release_masks_are_the_batch_union_of_top_k(variant):
    x = hand_made_batch()
    per_sample = AdvancedSpatialAttention(T=2, variant="asa2", lam=0.5)
    m1, _ = per_sample.masks(x)
    assert not torch.equal(m1[0], m1[1])
    release = AdvancedSpatialAttention(T=2, variant="asa2", lam=0.5, release_masks=True)
    m1, m2 = release.masks(x)
    # over channels, union: t0 {0, 1, 2}, t1 {1, 2, 3}; over time, union: channel 2 only t1,
    # every other channel both steps; M1 = XOR of the two
    expected = torch.tensor([[0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    for sample in range(2):
        assert torch.equal(m1[sample, :, :, 0, 0], expected)
    assert torch.equal(m1 + m2, torch.ones_like(m1))
    # a sample's mask depends on its batch mates: alone, sample 0 gets its own marks
    alone, _ = release.masks(x[:1])
    assert torch.equal(alone, per_sample.masks(x[:1])[0])
    assert not torch.equal(alone[0], m1[0])


def test_release_masks_freeze_the_scoring_mlp():
    torch.manual_seed(0)
    x = torch.randn(3, 6, 8, 5, 5)
    for release, learns in ((True, False), (False, True)):
        asa = AdvancedSpatialAttention(T=6, variant="asa1", r=2, release_masks=release)
        asa(x).pow(2).sum().backward()
        scoring = [asa.a, asa.b, *asa.mlp.parameters()]
        got = [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in scoring]
        assert got == [learns] * len(scoring)
        assert all(p.grad.abs().sum() > 0 for p in asa.spatial.parameters())


def test_release_masks_reach_the_network_and_its_record():
    net = network("default", attention="asa1", release_masks=True)
    layers = net.attention_layers()
    assert layers and all(layer.release_masks for _, layer in layers)
    assert not any(layer.release_masks for _, layer in network("default", attention="asa1")
                   .attention_layers())


def test_neuron_override_trains_the_chip_neuron_from_the_start():
    """`train --neuron iaf`: a LIF spec built with the chip's IAF, the LIF's options dropped."""
    args = build_parser().parse_args(["train", "--out", "x", "--model", "nmnist-speck-lif",
                                      "--neuron", "iaf"])
    config = _config(args)
    assert config.neuron == "iaf"
    spec = load_model_spec("nmnist-speck-lif").with_overrides(neuron=config.neuron)
    assert spec.neuron == "iaf" and spec.neuron_options == {}
    net = build_network(spec, 10, "asa2")
    neurons = [n for _, n in net.spiking_layers()]
    assert neurons and all(type(n).__name__.startswith("IAF") for n in neurons)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--out", "x", "--neuron", "alif"])
    paper = apply_recipe(load_model_spec("nmnist-speck-lif").with_overrides(neuron="iaf"), "paper")
    assert paper.neuron == "iaf"  # the paper recipe's surrogate for IAF, not LIF's options
