"""Folding attention: calibration, exact static folding (LIF and IAF), lowering strategies per chip
capability, and the fold stage end to end on a tiny trained run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from asa_deploy.chip.config import ChipConfig
from asa_deploy.chip.spec import load_chip_spec
from asa_deploy.cli import main
from asa_deploy.errors import AsaDeployError
from asa_deploy.fold.calibrate import MIN_CALIBRATION_WINDOWS, attention_gain, calibrate
from asa_deploy.fold.static import fold_static, lower_folded, static_network
from asa_deploy.fold.strategies import apply_strategy, input_mask, supported_strategies
from asa_deploy.nn import build_network, load_model_spec
from asa_deploy.train import TrainConfig, load_run, train

TINY = dict(data="synthetic:gesture-tiny", T=5, epochs=2, batch_size=4, eval_windows=2, seed=0)


def windows(n: int, seed: int = 0, density: float = 0.3) -> list:
    generator = torch.Generator().manual_seed(seed)
    return [((torch.rand(5, 2, 32, 32, generator=generator) < density).float() * 3, 0, i)
            for i in range(n)]


def network(neuron: str, attention: str = "asa2"):
    torch.manual_seed(0)
    if neuron == "lif":
        spec = load_model_spec("dvs-small").with_overrides(
            params={"c1": 8, "c2": 8, "c3": 8, "fc": 16}, T=5)
    else:
        spec = load_model_spec("speck-tiny").with_overrides(params={"c": 8, "fc": 16}, T=5)
    net = build_network(spec, 6, attention).eval()
    for module in net.modules():  # enough drive that every layer spikes
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data *= 4
            module.bias.data.uniform_(0, 0.5)
    return net


@torch.no_grad()
def layer_spikes(net, x) -> list[torch.Tensor]:
    out = []
    handles = [n.register_forward_hook(lambda m, i, o: out.append(o.clone()))
               for _, n in net.spiking_layers()]
    net.reset_states()
    net(x)
    for h in handles:
        h.remove()
    return out


@pytest.mark.parametrize("neuron", ["lif", "iaf"])
@pytest.mark.parametrize("attention", ["asa2", "asa1", "sa"])
def test_folded_network_spikes_equal_the_static_attention_network(neuron, attention):
    net = network(neuron, attention)
    calibration = calibrate(net, windows(12))
    static, folded = static_network(net, calibration), fold_static(net, calibration).folded
    x = torch.stack([w[0] for w in windows(4, seed=1)])
    expected, got = layer_spikes(static, x), layer_spikes(folded, x)
    assert sum(float(s.sum()) for s in expected) > 100, "too little activity to compare"
    for a, b in zip(expected, got, strict=True):
        assert torch.equal(a, b)


def test_attention_gain_reproduces_the_module():
    net = network("lif")
    module = net.blocks[0].attention
    x = torch.rand(2, 5, 8, 32, 32)
    gain, m1, maps = attention_gain(module, x)
    assert torch.allclose(gain * x, module(x), atol=1e-6)
    assert m1.shape == (2, 5, 8) and maps.shape == (2, 2, 32, 32)


def test_calibration_refuses_too_few_windows_and_vanilla_networks():
    with pytest.raises(AsaDeployError, match=f"at least {MIN_CALIBRATION_WINDOWS}"):
        calibrate(network("lif"), windows(3))
    with pytest.raises(AsaDeployError, match="no attention layer"):
        calibrate(network("lif", "none"), windows(12))


def test_strategies_keep_what_each_chip_can_hold():
    net = network("iaf")
    calibration = calibrate(net, windows(12))
    lowered = lower_folded(fold_static(net, calibration), (2, 32, 32), bias_policy="drop")
    assert any(layer.per_neuron_threshold is not None for layer in lowered.layers)
    speck, dynapcnn = load_chip_spec("speck2f"), load_chip_spec("dynapcnn")
    assert supported_strategies(speck) == ["channel", "offset", "kill", "offset+kill"]
    channel, report = apply_strategy(lowered, "channel", speck)
    assert all(layer.per_neuron_threshold is None and layer.initial_state is None
               for layer in channel.layers)
    # without offsets every neuron needs theta instead of theta / R: relative error 1 - R
    assert report and all(entry["residual"] == pytest.approx(1 - entry["R_mean"], abs=1e-5)
                          for entry in report.values())
    offset, report = apply_strategy(lowered, "offset", speck)
    layer = offset.layers[0]
    R = calibration[layer.name].gain_mean / calibration[layer.name].gain_mean.amax((1, 2), keepdim=True)
    expected = (-layer.threshold * (1 / R - 1)).clamp_min(-8 * layer.threshold)
    assert torch.allclose(layer.initial_state, expected, atol=1e-5)
    assert layer.min_v_mem <= float(layer.initial_state.min())
    # residual: mean relative error of the input needed to spike, theta / R against theta - state
    needed = layer.threshold / R.clamp_min(1e-6)
    residual = ((layer.threshold - expected - needed).abs() / needed).mean()
    assert report[layer.name]["residual"] == pytest.approx(float(residual), abs=1e-6)
    killed, _ = apply_strategy(lowered, "kill", dynapcnn, kill_below=0.9)
    assert killed.layers[0].kill is not None and killed.layers[0].kill.any()
    on_speck, _ = apply_strategy(lowered, "kill", speck, kill_below=0.9)
    assert on_speck.layers[0].kill is None and on_speck.layers[0].initial_state.min() < 0


def test_a_strategy_the_chip_cannot_hold_names_the_alternatives(tmp_path):
    text = Path(load_chip_spec("dynapcnn").path).read_text()
    path = tmp_path / "nokill.toml"
    path.write_text(text.replace("per_neuron_kill = true", "per_neuron_kill = false")
                    .replace("per_neuron_initial_value = true", "per_neuron_initial_value = false"))
    bare = load_chip_spec(path)
    net = network("iaf")
    lowered = lower_folded(fold_static(net, calibrate(net, windows(12))), (2, 32, 32),
                           bias_policy="drop")
    with pytest.raises(AsaDeployError, match="supports \\['channel'\\]"):
        apply_strategy(lowered, "offset", bare)


def test_input_mask_keeps_where_the_first_layer_attends():
    gain = torch.ones(4, 16, 16)
    gain[:, :4] = 0.01
    mask = input_mask(gain, (2, 32, 32), keep=0.75)
    assert mask.shape == (32, 32) and not mask[:8].any() and mask[8:].all()
    ranked = torch.arange(16 * 16, dtype=torch.float32).reshape(16, 16).expand(4, 16, 16)
    half = input_mask(ranked, (2, 32, 32), keep=0.5)  # the share asked for, highest gain first
    assert int(half.sum()) == 512 and half[16:].all() and not half[:16].any()


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> dict:
    runs = {}
    for attention in ("none", "asa2"):
        out = tmp_path_factory.mktemp(attention)
        train(TrainConfig(**TINY, model="speck-tiny", params={"c": 4, "fc": 8},
                          attention=attention), out, progress=False, verbose=False)
        runs[attention] = out
    return runs


def test_fold_cli_writes_the_ladder_and_compile_uses_folded_layers(tiny_runs, capsys):
    run = tiny_runs["asa2"]
    assert main(["fold", str(run), "--chip", "speck2f", "--finetune-epochs", "1",
                 "--eval-windows", "1", "--no-progress"]) == 0
    report = json.loads((run / "fold.json").read_text())
    steps = [row["step"] for row in report["ladder"]]
    assert steps[:3] == ["dynamic float", "static (mean gain)", "folded (per-neuron thresholds)"]
    assert steps[-2:] == ["quantized, fast simulator", "quantized, exact simulator"]
    assert report["ladder"][1]["accuracy_recording"] == report["ladder"][2]["accuracy_recording"]
    assert report["ladder"][1]["accuracy_window"] == report["ladder"][2]["accuracy_window"]  # exact
    for row in report["ladder"][-2:]:  # simulator rows split synops by cause; core 0 takes the input
        fed, network = row["input_synops_per_core"], row["network_synops_per_core"]
        assert row["input_synops_per_window"] == pytest.approx(sum(fed.values())) == fed["0"] > 0
        assert row["input_synops_per_window"] + row["network_synops_per_window"] == pytest.approx(
            row["synops_per_window"])
        assert {c: fed[c] + network[c] for c in fed} == pytest.approx(row["synops_per_core"])
    assert "input-driven" in capsys.readouterr().out
    assert set(report["strategies"]) == {"channel", "offset", "kill", "offset+kill"}
    if report["strategies"]["kill"]["layers"]["block0.conv"]["killed"] == 0:
        assert report["strategies"]["kill"]["same_as"] == "channel"  # not trained twice
    maps_png = (run / "fold_maps.png").read_bytes()
    assert maps_png[:8] == b"\x89PNG\r\n\x1a\n" and len(maps_png) > 1000
    from matplotlib.image import imread

    height, width = imread(run / "fold_maps.png").shape[:2]  # 12 x 2.8 inches per layer at 100 dpi
    assert (width, height) == (1200, 280 * len(report["calibration"]))
    capsys.readouterr()
    assert main(["compile", str(run), "--chip", "speck2f", "--bias", "drop"]) == 0
    config = ChipConfig.load(run / "chip_config.json")
    assert config.meta["source"].endswith("folded.pt")
    assert main(["compile", str(run), "--chip", "dynapcnn", "--bias", "drop"]) == 2
    assert "lowered for speck2f" in capsys.readouterr().err


def test_fold_of_a_vanilla_run_has_no_folding_steps(tiny_runs):
    from asa_deploy.pipeline import fold_run

    report = fold_run(tiny_runs["none"], "dynapcnn", finetune_epochs=0, eval_windows=1)
    steps = [row["step"] for row in report["ladder"]]
    assert "static (mean gain)" not in steps and steps[0] == "dynamic float"
    assert report["strategy"] == "none" and report["calibration"] is None


def test_threshold_balancing_brings_iaf_rates_to_the_lif_rates():
    from asa_deploy.chip.lower import lower
    from asa_deploy.fold.balance import _layer_spikes, balance_thresholds
    from asa_deploy.fold.finetune import ChipAwareNetwork

    net = network("lif", "none")
    data = windows(16)
    lowered = lower(net, (2, 32, 32), bias_policy="drop")
    balanced, multipliers = balance_thresholds(lowered, net, data, windows=16)
    assert len(multipliers) == len(lowered.layers) and multipliers != [1.0] * len(multipliers)
    frames = torch.stack([w[0] for w in data])
    target = _layer_spikes(net, [m for _, m in net.spiking_layers()], frames)

    def error(low):
        chip = ChipAwareNetwork(low, None)
        got = _layer_spikes(chip, [m for _, m in chip.spiking_layers()], frames)
        return sum(abs(a - b) for a, b in zip(got, target, strict=True))

    assert error(balanced) < error(lowered)
    assert balanced.layers[0].threshold == lowered.layers[0].threshold * multipliers[0]


def test_the_input_mask_reaches_fine_tuning_and_the_simulators():
    from asa_deploy.chip.lower import lower
    from asa_deploy.fold.finetune import ChipAwareNetwork

    net = network("iaf", "none")
    lowered = lower(net, (2, 32, 32), bias_policy="drop")
    x = torch.stack([w[0] for w in windows(2)])
    assert ChipAwareNetwork(lowered, None)(x).sum() > 0
    lowered.input_mask = torch.zeros(32, 32, dtype=torch.bool)
    assert ChipAwareNetwork(lowered, None)(x).sum() == 0


def test_fold_input_mask_reaches_the_chip_after_fine_tuning(tiny_runs, tmp_path):
    """The mask survives fine-tuning into chip_config.json's killed pixels (it once did not) and
    cuts the input-driven synops the simulators count."""
    import shutil

    from asa_deploy.pipeline import fold_run

    run, source = tmp_path / "masked", tmp_path / "plain"
    for copy in (run, source):  # the fixture's run stays as other tests left it
        shutil.copytree(tiny_runs["asa2"], copy)
    plain = fold_run(source, "speck2f", finetune_epochs=1, eval_windows=1, strategy="channel")
    masked = fold_run(run, "speck2f", finetune_epochs=1, eval_windows=1, strategy="channel",
                      use_input_mask=True, input_mask_keep=0.25)
    config = ChipConfig.load(run / "chip_config.json")
    pool = config.dvs.pooling[0] * config.dvs.pooling[1]
    kept = masked["input_mask_kept"]
    assert 0.25 <= kept < 1
    assert len(config.dvs.killed_pixels) == round((1 - kept) * 32 * 32) * pool
    exact = {r["step"]: r for r in plain["ladder"]}["quantized, exact simulator"]
    exact_masked = {r["step"]: r for r in masked["ladder"]}["quantized, exact simulator"]
    assert exact_masked["input_synops_per_window"] < exact["input_synops_per_window"]


def test_chip_comparison_splits_synops_by_cause_with_ratios_to_vanilla():
    from asa_deploy.pipeline import chip_comparison

    def exact(accuracy, spikes, synops, inputs):
        return [{"step": "dynamic float", "accuracy_window": 1.0, "accuracy_recording": 1.0},
                {"step": "quantized, exact simulator", "accuracy_window": accuracy,
                 "accuracy_recording": accuracy,
                 "spikes_per_window": spikes, "synops_per_window": synops,
                 "input_synops_per_window": inputs, "network_synops_per_window": synops - inputs}]

    text = chip_comparison({"vanilla": exact(0.9, 2000, 1000, 750),
                            "ASA": exact(0.8, 1000, 850, 750)}, "speck2f", 5)
    lines = {line.strip().split("  ")[0]: line for line in text.splitlines() if line}
    assert lines["spikes / window"].split()[-1] == "x0.50"
    assert lines["synops / window"].split()[-1] == "x0.85"
    assert lines["input-driven"].split()[-1] == "x1.00"
    assert lines["network-driven"].split()[-1] == "x0.40"
    assert "75% of vanilla's synops are input-driven" in text


def test_fold_fine_tunes_at_finer_bins_over_the_same_windows(tiny_runs, tmp_path):
    import shutil

    from asa_deploy.pipeline import fold_run

    run = tmp_path / "substeps"
    shutil.copytree(tiny_runs["none"], run)
    frames = load_run(run)[1]["data"]["frame_spec"]
    report = fold_run(run, "speck2f", finetune_epochs=1, eval_windows=1, finetune_substeps=5)
    fine = report["finetune_frames"]
    assert (fine["T"], fine["dt_us"] * 5) == (frames["T"] * 5, frames["dt_us"])
    step = next(r["step"] for r in report["ladder"] if r["step"].startswith("fine-tuned"))
    assert step.endswith(f"{fine['T']} bins of {fine['dt_us'] / 1000:g} ms)")
    bad = next(k for k in range(2, 1000) if frames["dt_us"] % k)
    with pytest.raises(AsaDeployError, match=f"--finetune-substeps {bad} does not divide"):
        fold_run(run, "speck2f", finetune_epochs=1, eval_windows=1, finetune_substeps=bad)
