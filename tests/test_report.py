"""The report stage: report.json / report.md / report.html from tiny trained, folded and simulated
runs (vanilla and ASA-2), missing artifacts, and a headless-browser rendering of the HTML."""

from __future__ import annotations

import html
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from asa_deploy.analysis.stage import analyze_runs
from asa_deploy.chip.config import ChipConfig
from asa_deploy.chip.simulate import simulate_run
from asa_deploy.chip.spec import load_chip_spec
from asa_deploy.data import open_dataset
from asa_deploy.errors import AsaDeployError
from asa_deploy.pipeline import fold_run
from asa_deploy.report import build_report, write_report
from asa_deploy.report.render import num
from asa_deploy.train import TrainConfig, train

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _tiny_run(out: Path, attention: str) -> Path:
    cfg = TrainConfig(data="synthetic:gesture-tiny", model="speck-tiny", T=5, epochs=1, batch_size=4,
                      eval_windows=2, seed=0, params={"c": 4, "fc": 8}, attention=attention)
    train(cfg, out, progress=False, verbose=False)
    fold_run(out, "speck2f", finetune_epochs=0, eval_windows=1)
    simulate_run(out, engine="exact", windows=1)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report")
    vanilla = _tiny_run(root / "vanilla", "none")
    asa2 = _tiny_run(root / "asa2", "asa2")
    simulate_run(asa2, engine="fast", windows=1)  # sim.json holds both engines: exact is preferred
    analyze_runs([vanilla, asa2], windows=1, progress=False)  # figures in vanilla/figures
    return {"vanilla": vanilla, "asa2": asa2, "root": root}


@pytest.fixture(scope="module")
def written(runs, tmp_path_factory) -> dict[str, Path]:
    return write_report([runs["vanilla"], runs["asa2"]], tmp_path_factory.mktemp("out"))


def _copy(run: Path, dest: Path, *, drop: tuple[str, ...] = (), keep_only: tuple[str, ...] = ()) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    if keep_only:
        dest.mkdir(parents=True)
        for name in keep_only:
            shutil.copy2(run / name, dest / name)
        return dest
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns(*drop))
    return dest


def test_report_has_both_runs_with_the_simulator_counts(runs, written):
    report = json.loads(written["json"].read_text())
    assert set(report["runs"]) == {"vanilla", "asa2"}
    for label in ("vanilla", "asa2"):
        run = report["runs"][label]
        sim = json.loads((runs[label] / "sim.json").read_text())["exact"]
        assert run["simulation"]["engine"] == "exact"
        cores = {str(c["core"]): c for c in run["activity"]["cores"]}
        assert set(cores) == set(sim["spikes_per_core"]["mean"])
        for core, row in cores.items():
            assert row["spikes_per_window"] == pytest.approx(sim["spikes_per_core"]["mean"][core])
            assert row["synops_per_window"] == pytest.approx(sim["synops_per_core"]["mean"][core])
            for part in ("input", "network"):
                assert row[f"{part}_synops_per_window"] == pytest.approx(
                    sim[f"{part}_synops_per_core"]["mean"][core])
        assert run["activity"]["input_synops_per_window"] > 0
        assert run["activity"]["input_synops_per_window"] == pytest.approx(
            sum(sim["input_synops_per_core"]["mean"].values()))
        assert run["activity"]["input_synops_per_window"] + run["activity"][
            "network_synops_per_window"] == pytest.approx(run["activity"]["synops_per_window"])
        assert run["activity"]["synops_per_window"] == pytest.approx(
            sum(sim["synops_per_core"]["mean"].values()))
        assert run["accuracy"]["chip"]["accuracy_window"] == sim["accuracy_window"]
        assert run["accuracy"]["chip"]["accuracy_recording"] == sim["accuracy_recording"]
        assert run["activity"]["bandwidth_limit_synops_per_s"] is None
    md = written["md"].read_text()
    assert "input-driven SynOps / window" in md and "of which input-driven" in md
    comparison = report["comparison"]
    assert comparison["baseline"] == "vanilla"
    synops = next(r for r in comparison["rows"] if r["key"] == "synops_per_window")
    assert synops["ratios"]["asa2"] == pytest.approx(
        synops["values"]["asa2"] / synops["values"]["vanilla"])
    for name in ("per_core_synops", "per_core_spikes", "power_split"):
        png = written[f"figure:{name}"].read_bytes()
        assert png[:8] == PNG_SIGNATURE and len(png) > 1000, name


def test_power_is_static_plus_dynamic_and_energy_is_power_times_window(runs, written):
    report = json.loads(written["json"].read_text())
    md, page = written["md"].read_text(), written["html"].read_text()
    spec = load_chip_spec("speck2f")
    for label in ("vanilla", "asa2"):
        run, power = report["runs"][label], report["runs"][label]["power"]
        frames = ChipConfig.load(runs[label] / "chip_config.json").meta["frame_spec"]
        window_s = frames["T"] * frames["dt_us"] * 1e-6
        sim = json.loads((runs[label] / "sim.json").read_text())["exact"]
        assert sim["recorded_seconds"] == pytest.approx(sim["n_windows"] * window_s)
        spikes_s = sum(sim["spikes_per_core"]["mean"].values()) / window_s
        synops_s = sum(sim["synops_per_core"]["mean"].values()) / window_s
        events_s = sim["input_events"] / sim["n_windows"] / window_s
        assert power["static_mw"] == spec.power.resting_mw
        assert power["total_mw"] == pytest.approx(power["static_mw"] + power["dynamic_mw"])
        assert power["total_mw"] == pytest.approx(spec.power.power_mw(spikes_s, synops_s, events_s))
        assert power["dynamic_mw"] == pytest.approx(sum(power["dynamic_terms_mw"].values()))
        assert power["window_s"] == pytest.approx(window_s)
        assert power["energy_per_inference_uj"] == pytest.approx(power["total_mw"] * window_s * 1e3)
        assert run["activity"]["cores"][0]["synops_per_s"] == pytest.approx(
            run["activity"]["cores"][0]["synops_per_window"] / window_s)
        low, high = spec.power.band_mw(spikes_s, synops_s, events_s)
        assert power["band_mw"] == pytest.approx([low, high]) and low < power["total_mw"] < high
        other = spec.power.other_rails_idle_mw  # IO + both pixel rails, at idle
        assert other == pytest.approx(0.0617 + 0.0789 + 0.6109)
        assert power["devkit"]["total_mw"] == pytest.approx(power["total_mw"] + other)
        assert power["devkit"]["band_mw"] == pytest.approx([low + other, high + other])
        for text in (f"{num(low, 4)}..{num(high, 4)}",
                     f"{num(low + other, 4)}..{num(high + other, 4)}"):
            assert text in md and text in page
    for source in (spec.power.resting_source, spec.power.dynamic_source,
                   spec.power.idle_rails_source, spec.sources["S3"], spec.sources["S6"]):
        assert source in md
        assert html.escape(source) in page
    for text in ("processor (VDD_RAM + VDD_LOGIC) total", "dev kit total (all rails)",
                 "band 2.91..7.59", "Measured idle power per rail"):
        assert text in md and html.escape(text) in page
    assert "not published" in md and "UNVERIFIED" in md
    assert "zero weights" in md and "NeuroBench" in md


def test_whole_recordings_rates_power_and_energy_per_their_own_duration(runs, tmp_path, caplog):
    """Whole recordings of 600 ms where T x dt is 500 ms: every rate is per the recordings' own
    duration, the other engine's entry is kept and the replaced one is said."""
    run = _copy(runs["asa2"], tmp_path / "whole")
    with caplog.at_level("WARNING", logger="asa_deploy.simulate"):
        simulate_run(run, engine="exact", whole_recordings=True)
    assert ("sim.json: the exact entry (1 window per recording of synthetic:gesture-tiny) is "
            "replaced by one on whole recordings of synthetic:gesture-tiny") in caplog.text
    sim = json.loads((run / "sim.json").read_text())
    assert set(sim) == {"exact", "fast"} and sim["fast"]["windows_per_recording"] == 1
    whole = sim["exact"]
    frames = ChipConfig.load(run / "chip_config.json").meta["frame_spec"]
    frame_window_s = frames["T"] * frames["dt_us"] * 1e-6
    spans = []
    dataset = open_dataset("synthetic:gesture-tiny")
    for i in torch.load(run / "model.pt", weights_only=False)["data"]["split"]["val"]:
        t = dataset[i][0]["t"]
        spans.append(math.ceil((t[-1] - t[0] + 1) / frames["dt_us"]) * frames["dt_us"] * 1e-6)
    assert whole["recorded_seconds"] == pytest.approx(sum(spans))
    window_s = whole["recorded_seconds"] / whole["n_windows"]
    assert window_s == pytest.approx(0.6) and frame_window_s == pytest.approx(0.5)
    entry = build_report([run])["runs"]["asa2"]
    spikes = sum(whole["spikes_per_core"]["total"].values())
    synops = sum(whole["synops_per_core"]["total"].values())
    assert entry["activity"]["spikes_per_s"] == pytest.approx(spikes / whole["recorded_seconds"])
    assert entry["power"]["rates"]["synops_per_s"] == pytest.approx(synops / whole["recorded_seconds"])
    assert entry["power"]["window_s"] == pytest.approx(window_s)
    assert entry["power"]["energy_per_inference_uj"] == pytest.approx(
        entry["power"]["total_mw"] * window_s * 1e3)
    chip = entry["accuracy"]["chip"]
    assert chip["accuracy_window"] is None and chip["accuracy_recording"] == whole["accuracy_recording"]
    assert not entry["notes"]


def test_an_older_versions_artifacts_are_read_under_the_current_names(runs, tmp_path):
    """sim.json's bare accuracy was per window, eval.json's and fold.json's per recording; an older
    whole-recordings entry has no durations: its rates are said to be wrong."""
    run = _copy(runs["vanilla"], tmp_path / "old")
    expected = build_report([run])["runs"]["vanilla"]["accuracy"]
    sim = json.loads((run / "sim.json").read_text())
    entry = sim["exact"]
    entry["accuracy"], entry["recording_accuracy"] = entry.pop("accuracy_window"), entry.pop(
        "accuracy_recording")
    del entry["recorded_seconds"]
    (run / "sim.json").write_text(json.dumps(sim))
    fold = json.loads((run / "fold.json").read_text())
    for row in fold["ladder"]:
        row["accuracy"], row["window_accuracy"] = row.pop("accuracy_recording"), row.pop(
            "accuracy_window")
    (run / "fold.json").write_text(json.dumps(fold))
    old = build_report([run])["runs"]["vanilla"]
    assert old["accuracy"] == expected and expected["chip"]["accuracy_window"] is not None
    assert old["fold"]["ladder"][0]["accuracy_recording"] == fold["ladder"][0]["accuracy"]
    assert not old["notes"]
    entry["whole_recordings"] = True
    (run / "sim.json").write_text(json.dumps(sim))
    (note,) = build_report([run])["runs"]["vanilla"]["notes"]
    assert "made by an older version" in note and "--whole-recordings" in note


def test_neurobench_metrics_follow_the_chip_config(runs, written):
    report = json.loads(written["json"].read_text())
    config = ChipConfig.load(runs["asa2"] / "chip_config.json")
    weights = np.concatenate([c.weights.ravel() for c in config.cores])
    footprint = sum(c.weights.size + 2 * c.biases.size + 2 * c.neurons_initial_value.size
                    for c in config.cores)
    neurons = sum(math.prod(c.neuron_shape) for c in config.cores)
    run = report["runs"]["asa2"]
    nb = run["neurobench"]
    assert nb["connection_sparsity"] == pytest.approx(float(np.mean(weights == 0)))
    assert nb["footprint_bytes"]["total"] == footprint
    assert nb["effective_acs_per_inference"] == pytest.approx(run["activity"]["synops_per_window"])
    T = config.meta["frame_spec"]["T"]
    assert nb["activation_sparsity"] == pytest.approx(
        1 - run["activity"]["spikes_per_window"] / (neurons * T))


def test_figures_and_ladder_are_in_both_renderings(runs, written):
    md, page = written["md"].read_text(), written["html"].read_text()
    for name in ("spike_features", "t_sfr", "mpd", "layer_sfr"):
        assert f"{name}.png" in md
    assert "fold_maps.png" in md  # the ASA run's calibrated maps
    assert "report_figures/per_core_synops.png" in md
    assert "Fidelity ladder" in md and "quantized, exact simulator" in md
    assert page.count('src="data:image/png;base64,') >= 3 + 4 + 1
    assert "asa2 / vanilla" in md and "asa2 / vanilla" in page


def test_html_is_self_contained(written):
    page = written["html"].read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:|//)""", page, re.I)
    assert "<link" not in page and "<script" not in page and "url(" not in page
    assert "<style>" in page


def test_missing_sim_json_names_the_command_and_the_report_still_renders(runs, tmp_path):
    run = _copy(runs["vanilla"], tmp_path / "vanilla-nosim", drop=("sim.json",))
    paths = write_report([run])
    assert paths["html"].parent == run  # default out_dir: the first run
    md, page = paths["md"].read_text(), paths["html"].read_text()
    command = f"asa-deploy simulate {run} --engine exact"
    assert f"sim.json missing: run `{command}`" in md
    assert html.escape(command) in page
    entry = json.loads(paths["json"].read_text())["runs"]["vanilla"]
    assert entry["simulation"]["source"].startswith("fold.json")  # the ladder's exact rows
    assert entry["power"]["energy_per_inference_uj"] > 0


def test_a_bare_run_lists_every_missing_artifact(runs, tmp_path):
    run = _copy(runs["asa2"], tmp_path / "bare", keep_only=("model.pt",))
    md = write_report([run])["md"].read_text()
    for needed in (f"asa-deploy simulate {run} --engine exact", f"asa-deploy fold {run}",
                   f"asa-deploy analyze {run}", f"asa-deploy evaluate {run}"):
        assert needed in md
    for artifact in ("sim.json missing", "fold.json missing", "chip_config.json missing",
                     "analysis.json missing", "fold_maps.png missing", "device.json missing"):
        assert artifact in md
    assert "not computed" in md


def test_engine_choice_and_measured_power(runs, tmp_path):
    fast = build_report([runs["asa2"]], engine="fast")["runs"]["asa2"]
    sim = json.loads((runs["asa2"] / "sim.json").read_text())["fast"]
    assert fast["simulation"]["engine"] == "fast"
    assert fast["activity"]["spikes_per_window"] == pytest.approx(
        sum(sim["spikes_per_core"]["mean"].values()))
    run = _copy(runs["asa2"], tmp_path / "board")
    (run / "device.json").write_text(json.dumps({"power_mw": {"vdd_core": 0.6, "vdd_io": 0.4}}))
    paths = write_report([run])
    measured = json.loads(paths["json"].read_text())["runs"]["asa2"]["measured"]
    assert measured["total_mw"] == pytest.approx(1.0)
    assert "vdd_core" in paths["md"].read_text() and "device.json missing" not in paths["md"].read_text()
    assert "are not the hw_config's" in paths["md"].read_text()  # other rails: totals not compared


def test_measured_rails_stand_beside_the_model_per_rail(runs, tmp_path):
    run = _copy(runs["asa2"], tmp_path / "board-rails")
    rails = {"VDD_IO": 0.07, "VDD_RAM": 0.06, "VDD_LOGIC": 0.5, "VDD_PIXEL_DIGITAL": 0.08,
             "VDD_PIXEL_ANALOG": 0.6}  # the names deploy writes (device.samna_adapter.POWER_RAILS)
    (run / "device.json").write_text(json.dumps({"power_mw": rails}))
    paths = write_report([run])
    entry = json.loads(paths["json"].read_text())["runs"]["asa2"]
    rows = {row["rail"]: row for row in entry["measured"]["side_by_side"]}
    assert rows["VDD_IO"]["model_mw"] == 0.0617 and rows["VDD_IO"]["measured_mw"] == 0.07
    processor = rows["processor (VDD_RAM + VDD_LOGIC)"]
    assert processor["measured_mw"] == pytest.approx(0.56)
    assert processor["model_mw"] == entry["power"]["total_mw"]
    assert processor["band_mw"] == entry["power"]["band_mw"]
    devkit = rows["dev kit (all rails)"]
    assert devkit["measured_mw"] == pytest.approx(sum(rails.values()))
    assert devkit["model_mw"] == pytest.approx(entry["power"]["devkit"]["total_mw"])
    assert devkit["measured_over_model"] == pytest.approx(sum(rails.values()) / devkit["model_mw"])
    md, page = paths["md"].read_text(), paths["html"].read_text()
    for text in ("beside the model", "measured / model", "no source splits the dynamic term",
                 f"{num(devkit['band_mw'][0], 4)}..{num(devkit['band_mw'][1], 4)}"):
        assert text in md and html.escape(text) in page


def test_labels_fall_back_to_folder_names_and_model_pt_is_required(runs, tmp_path):
    other = _copy(runs["asa2"], tmp_path / "asa2-seed1", keep_only=("model.pt",))
    report = build_report([runs["asa2"], other])
    assert list(report["runs"]) == ["asa2", "asa2-seed1"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(AsaDeployError, match="asa-deploy train"):
        build_report([tmp_path / "empty"])


# ---- headless browser ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chromium() -> str:
    """A Chromium binary on PATH; the test is skipped without one (tests never install anything)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    pytest.skip("no Chromium binary on PATH (chromium, chromium-browser or google-chrome); "
                "install one (e.g. apt-get install chromium) to render report.html")


def test_html_renders_in_a_headless_browser(chromium, written, tmp_path):
    shot = tmp_path / "report.png"
    done = subprocess.run(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--screenshot={shot}", "--window-size=1280,2400", written["html"].resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert shot.is_file(), f"no screenshot; chromium said: {done.stderr[-500:]}"
    assert shot.read_bytes()[:8] == PNG_SIGNATURE
    from matplotlib.image import imread

    image = imread(shot)
    assert image.shape[:2] == (2400, 1280)  # the --window-size asked for
    pixels = (image[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    colours = np.unique(pixels, axis=0)
    assert len(colours) > 200, f"screenshot looks blank ({len(colours)} colours)"
    assert (pixels < 200).any(axis=1).mean() > 0.02  # text, tables and plots, not a white page
