"""The compile and simulate stages through the CLI on a trained run, and both engines on the real
recordings of ../shared/data (skipped when absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from asa_deploy.chip.compile import SensorInput, compile_network
from asa_deploy.chip.config import ChipConfig
from asa_deploy.chip.sim import EventWindow, simulate
from asa_deploy.chip.simulate import agreement
from asa_deploy.cli import main
from asa_deploy.data import open_dataset
from asa_deploy.nn import build_network, load_model_spec
from asa_deploy.train import TrainConfig, train

TINY_SPECK = dict(data="synthetic:gesture-tiny", model="speck-tiny", T=5, epochs=1, batch_size=4,
                  eval_windows=2, seed=0, params={"c": 4, "fc": 8})


@pytest.fixture(scope="module")
def speck_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("speck")
    train(TrainConfig(**TINY_SPECK), out, progress=False, verbose=False)
    return out


def test_compile_check_then_compile_then_simulate_both_engines(speck_run, capsys):
    assert main(["compile", str(speck_run), "--chip", "speck2f", "--bias", "drop", "--check"]) == 0
    assert "fits speck2f" in capsys.readouterr().out
    assert not (speck_run / "chip_config.json").exists()  # --check writes nothing

    assert main(["compile", str(speck_run), "--chip", "speck2f", "--bias", "drop"]) == 0
    out = capsys.readouterr().out
    assert "block0.conv" in out and "wrote" in out
    assert "core 0 (block0.conv) takes the input events" in out
    assert "core 0: one input event ->" in out and "core 1: one spike of core 0 ->" in out
    assert "pixel kill / ROI" in out and "input pooling (DVS layer, now 4x4, the chip's maximum)" in out
    # the run's first core: c=4 channels (c1 follows c), 3x3, stride 1: 4 x 3 x 3 = 36 per event
    assert "cheaper first core (cuts that still map onto speck2f" in out
    assert "stride 1 -> 2 (--param s1=2): input-driven synops per event 36 -> 16 (x0.44)" in out
    assert "kernel 3 -> 1 (--param k1=1): input-driven synops per event 36 -> 4 (x0.11)" in out
    assert "channels 4 -> 2 (--param c1=2): input-driven synops per event 36 -> 18 (x0.50)" in out
    config = ChipConfig.load(speck_run / "chip_config.json")
    mapping = json.loads((speck_run / "mapping.json").read_text())
    assert [a["core"] for a in mapping["assignment"]] == [c.core for c in config.cores]
    assert [(c["param"], c["synops_per_input_event"], c["maps"])
            for c in mapping["first_core_cuts"]] == [
        ("s1", [36, 16], True), ("k1", [36, 4], True), ("c1", [36, 18], True)]
    assert config.dvs.pooling == (4, 4) and config.dvs.sensor_shape == (2, 128, 128)

    printed = {}
    for engine in ("fast", "exact"):
        assert main(["simulate", str(speck_run), "--engine", engine, "--windows", "1", "--json"]) == 0
        printed[engine] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert printed[engine]["engine"] == engine and printed[engine]["input_events"] > 0
    sim = json.loads((speck_run / "sim.json").read_text())
    assert set(sim) == {"fast", "exact"}
    for engine, summary in printed.items():  # what --json printed is what sim.json keeps
        assert Path(summary.pop("file")) == speck_run / "sim.json"
        assert {k: sim[engine][k] for k in summary} == summary
    assert printed["fast"]["input_events"] == printed["exact"]["input_events"]  # the same windows
    assert sim["fast"]["synops_per_core"]["total"]["0"] == sim["exact"]["synops_per_core"]["total"]["0"]
    for summary in sim.values():  # the split adds up; the input core takes every input-driven synop
        fed, network = (summary[k]["total"] for k in ("input_synops_per_core", "network_synops_per_core"))
        assert {c: fed[c] + network[c] for c in fed} == summary["synops_per_core"]["total"]
        assert fed["0"] == summary["synops_per_core"]["total"]["0"] > 0
        assert not any(v for c, v in fed.items() if c != "0")

    assert main(["simulate", str(speck_run), "--engine", "exact", "--windows", "1"]) == 0
    out = capsys.readouterr().out
    fed = sim["exact"]["input_synops_per_core"]["total"]["0"]
    assert f"({fed:,} input-driven, 0 network-driven)" in out
    assert "input-driven (events entering the chip)" in out and "dominates with" in out


def test_compile_errors_are_one_clear_line(speck_run, tmp_path, capsys):
    assert main(["compile", str(speck_run), "--chip", "speck2f"]) == 2
    assert "--bias drop or --bias leak" in capsys.readouterr().err
    assert main(["compile", str(tmp_path), "--chip", "speck2f", "--bias", "drop"]) == 2
    assert "model.pt not found" in capsys.readouterr().err
    assert main(["simulate", str(tmp_path)]) == 2
    assert "run `asa-deploy compile` first" in capsys.readouterr().err
    assert main(["compile", str(speck_run), "--chip", "nochip"]) == 2
    assert "unknown chip 'nochip'" in capsys.readouterr().err


def random_config(model: str, sensor, downsample: int, classes: int) -> ChipConfig:
    torch.manual_seed(0)
    net = build_network(load_model_spec(model), classes).eval()
    spec = net.spec.input
    shape = (int(spec["channels"]), int(spec["height"]), int(spec["width"]))
    return compile_network(net, "speck2f", input_shape=shape, sensor=SensorInput(sensor, downsample),
                           bias_policy="drop").config


def whole_recordings(spec: str, count: int, dt_us: int) -> list[EventWindow]:
    dataset = open_dataset(spec)
    recordings = [dataset[i] for i in range(count)]
    n_bins = max(-(-(int(e["t"][-1]) - int(e["t"][0]) + 1) // dt_us) for e, _ in recordings)
    return [EventWindow(e, int(e["t"][0]), n_bins, dt_us, int(label), str(i))
            for i, (e, label) in enumerate(recordings)]


@pytest.mark.parametrize("name,model,sensor,downsample,count", [
    ("dvsgesture-10", "speck-tiny", (2, 128, 128), 4, 4),
    ("nmnist-small", "nmnist-speck", (2, 34, 34), 1, 30),
])
def test_exact_and_fast_agree_on_real_recordings(shared_data, name, model, sensor, downsample, count):
    """Same synops (a property of the input) and nearly the same per-core activity; the exact
    engine differs only where the chip does (one spike per update, firing before later negative
    inputs of the same bin)."""
    scheme = "dvsgesture" if name.startswith("dvs") else "nmnist"
    config = random_config(model, sensor, downsample, 11 if scheme == "dvsgesture" else 10)
    windows = whole_recordings(f"{scheme}:{shared_data / name}", count, dt_us=10_000)
    fast, exact = simulate(config, windows, "fast"), simulate(config, windows, "exact")
    assert np.array_equal(fast.synops_per_core[:, 0], exact.synops_per_core[:, 0])
    assert fast.spikes_per_core.sum() > 0
    measured = agreement(fast, exact)
    assert min(measured["activity_cosine_per_core"].values()) > 0.9, measured
    assert measured["classification_agreement"] >= 0.75, measured
