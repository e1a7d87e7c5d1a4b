"""Provenance across stages: every artifact names the files it was made from, stale ones are refused
or left out of the report, retraining moves the old artifacts aside, other data gets its own files,
and a silent network is wrong everywhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from asa_deploy import provenance, rundir
from asa_deploy.chip.simulate import simulate_run
from asa_deploy.cli import main
from asa_deploy.data import open_dataset, predict_classes, recording_accuracy
from asa_deploy.errors import AsaDeployError
from asa_deploy.pipeline import fold_run
from asa_deploy.report import build_report
from asa_deploy.train import TrainConfig, evaluate_run, train

TINY = dict(data="synthetic:gesture-tiny", model="speck-tiny", T=5, batch_size=4, eval_windows=2,
            seed=0, params={"c": 4, "fc": 8}, attention="none")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prov") / "run"
    train(TrainConfig(epochs=1, **TINY), out, progress=False, verbose=False)
    fold_run(out, "speck2f", finetune_epochs=0, eval_windows=1)
    simulate_run(out, engine="fast", windows=1)
    evaluate_run(out, windows=1)
    return out


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


# ---- the chain -------------------------------------------------------------------------------------

def test_every_artifact_names_the_hashes_it_was_made_from(run):
    model = provenance.content_hash(run / "model.pt")
    folded = provenance.content_hash(run / "folded.pt")
    config = provenance.content_hash(run / "chip_config.json")
    assert torch.load(run / "folded.pt", weights_only=False)["provenance"]["made_from"] == {
        "model.pt": model}
    assert json.loads((run / "chip_config.json").read_text())["meta"]["provenance"]["made_from"] \
        == {"folded.pt": folded}
    assert json.loads((run / "mapping.json").read_text())["provenance"]["made_from"] == {
        "folded.pt": folded}
    fold = json.loads((run / "fold.json").read_text())["provenance"]
    assert fold["made_from"] == {"model.pt": model, "folded.pt": folded, "chip_config.json": config}
    sim = json.loads((run / "sim.json").read_text())["fast"]["provenance"]
    assert sim["made_from"] == {"chip_config.json": config}
    assert (sim["engine"], sim["windows"], sim["data"]) == ("fast", 1, "synthetic:gesture-tiny")
    ev = json.loads((run / "eval.json").read_text())
    assert ev["provenance"]["made_from"] == {"model.pt": model}
    assert (ev["provenance"]["split"], ev["windows_per_recording"]) == ("validation", 1)
    for name in ("folded.pt", "chip_config.json", "mapping.json", "fold.json", "eval.json"):
        assert provenance.problems(run, name) == [], name


def test_a_changed_model_makes_everything_downstream_stale_and_is_refused(run, tmp_path):
    copy = _copy(run, tmp_path / "changed")
    artifact = torch.load(copy / "model.pt", weights_only=False)
    artifact["metrics"]["best_epoch"] += 1  # any change of the file's bytes
    torch.save(artifact, copy / "model.pt")
    assert provenance.problems(copy, "folded.pt") == [
        "folded.pt was made from an earlier model.pt (it has changed since)"]
    # two links away: the chip config is current with folded.pt, which is not current
    assert provenance.problems(copy, "chip_config.json") == [
        "folded.pt was made from an earlier model.pt (it has changed since)"]
    with pytest.raises(provenance.StaleArtifactError, match="earlier model.pt.*asa-deploy fold"):
        simulate_run(copy, engine="fast", windows=1)
    assert main(["export", str(copy)]) == 2
    assert main(["compile", str(copy), "--chip", "speck2f", "--bias", "drop"]) == 2


def test_report_leaves_out_stale_artifacts_and_says_why(run, tmp_path):
    copy = _copy(run, tmp_path / "stale-sim")
    config = json.loads((copy / "chip_config.json").read_text())
    config["meta"]["notes"].append("edited by hand")
    (copy / "chip_config.json").write_text(json.dumps(config))
    entry = build_report([copy])["runs"]["vanilla"]
    stale = [p for p in entry["problems"] if p["artifact"] == "sim.json 'fast' entry"]
    assert len(stale) == 1
    assert "made from an earlier chip_config.json" in stale[0]["problem"]
    assert stale[0]["command"] == f"asa-deploy simulate {copy} --engine fast"
    # fold.json's simulator rows describe the older config too: no chip figures at all
    assert any(p["artifact"] == "fold.json" and "earlier chip_config.json" in p["problem"]
               for p in entry["problems"])
    assert entry["simulation"] is None and entry["power"] is None


def test_sim_json_drops_another_engines_entry_of_an_older_config(run, tmp_path):
    copy = _copy(run, tmp_path / "two-engines")
    sim = json.loads((copy / "sim.json").read_text())
    sim["exact"] = {**sim["fast"], "provenance": {**sim["fast"]["provenance"],
                                                  "made_from": {"chip_config.json": "0" * 64}}}
    (copy / "sim.json").write_text(json.dumps(sim))
    simulate_run(copy, engine="fast", windows=1)
    assert set(json.loads((copy / "sim.json").read_text())) == {"fast"}


# ---- other data, retraining ------------------------------------------------------------------------

def test_evaluation_on_other_data_gets_its_own_file(run, tmp_path):
    copy = _copy(run, tmp_path / "other")
    before = (copy / "eval.json").read_bytes()
    result, path = evaluate_run(copy, "synthetic:gesture-clean", windows=1)
    assert (copy / "eval.json").read_bytes() == before
    assert path.name.startswith("eval-synthetic-gesture-clean-") and path.suffix == ".json"
    written = json.loads(path.read_text())
    assert written["provenance"]["data"] == "synthetic:gesture-clean"
    assert written["provenance"]["split"] == "all recordings"
    assert written["accuracy_recording"] == result["accuracy_recording"]
    assert build_report([copy])["runs"]["vanilla"]["accuracy"]["float"]["data"] \
        == "synthetic:gesture-tiny (validation split)"


def test_data_artifact_names_are_distinct_per_data_spec():
    assert rundir.data_artifact("sim.json", None, "a:x") == "sim.json"
    assert rundir.data_artifact("sim.json", "a:x", "a:x") == "sim.json"
    names = {rundir.data_artifact("sim.json", spec, "a:x")
             for spec in ("nmnist:/d/x", "nmnist:/e/x", "nmnist:d/x")}
    assert len(names) == 3 and all(n.startswith("sim-") and n.endswith(".json") for n in names)


def _write_every_other_artifact(run: Path) -> None:
    """What the module's run lacks, each by the command that writes it."""
    other = "synthetic:gesture-clean"
    evaluate_run(run, other, windows=1)
    assert main(["analyze", str(run), "--windows", "1", "--max-samples", "4"]) == 0
    assert main(["simulate", str(run), "--windows", "1", "--monitor", "0"]) == 0
    assert main(["simulate", str(run), "--windows", "1", "--engine", "exact", "--monitor", "0",
                 "--monitor-out", str(run / "monitor-exact.npz")]) == 0
    assert main(["simulate", str(run), "--windows", "1", "--data", other,
                 "--max-recordings", "6"]) == 0
    assert main(["compare", str(run / "monitor.npz"), str(run / "monitor-exact.npz")]) == 0
    assert main(["export", str(run)]) == 0
    events, _ = open_dataset(TINY["data"], seed=0)[0]
    np.save(run.parent / "recording.npy", events)
    assert main(["camera", str(run), "--replay", str(run.parent / "recording.npy")]) == 0
    assert main(["report", str(run)]) == 0


def test_retraining_moves_every_artifact_of_the_old_model_aside(run, tmp_path, capsys):
    copy = _copy(run, tmp_path / "retrain")
    _write_every_other_artifact(copy)
    written = sorted(p.name for p in copy.iterdir())
    assert [n for n in written if rundir.artifact(n) is None] == []  # the table knows every one
    for name in written:  # and what each is made from
        record = provenance.read(copy / name)
        if record is not None and name not in rundir.ROOTS:
            assert set(record["made_from"]) <= set(rundir.artifact(name).made_from), name
    kinds = {rundir.artifact(n).name for n in written}
    # all but what a board, an import, a second epoch or folding attention writes
    assert {a.name for a in rundir.ARTIFACTS} - kinds == {
        rundir.IMPORTED, rundir.DEVICE_JSON, rundir.PREVIOUS_CHECKPOINT, rundir.FOLD_MAPS}
    (copy / "checkpoint.pt").unlink()
    old_hash = provenance.content_hash(copy / "model.pt")
    capsys.readouterr()
    train(TrainConfig(epochs=1, lr=5e-3, **TINY), copy, progress=False)
    assert "the previous model's artifacts" in capsys.readouterr().out
    moved = list((copy / "superseded").iterdir())
    assert len(moved) == 1
    assert sorted(p.name for p in moved[0].iterdir()) == [n for n in written if n != "checkpoint.pt"]
    assert provenance.content_hash(moved[0] / "model.pt") == old_hash
    assert sorted(p.name for p in copy.iterdir()) == [
        "checkpoint.pt", "model.pt", "superseded", "train_log.jsonl"]


# ---- one meaning of accuracy -----------------------------------------------------------------------

def test_a_silent_window_is_wrong_in_float_and_on_the_chip(run, tmp_path):
    counts = np.array([[0, 0, 0], [0, 2, 2], [1, 0, 3]])
    assert predict_classes(counts).tolist() == [-1, 1, 2]
    assert predict_classes(torch.tensor(counts)).tolist() == [-1, 1, 2]
    copy = _copy(run, tmp_path / "silent")
    artifact = torch.load(copy / "model.pt", weights_only=False)
    artifact["weights"] = {k: torch.zeros_like(v) if k.endswith(("weight", "bias")) else v
                           for k, v in artifact["weights"].items()}  # no synapse: silent
    torch.save(artifact, copy / "model.pt")
    result, _ = evaluate_run(copy, windows=1)
    assert result["accuracy_recording"] == 0.0 and result["accuracy_window"] == 0.0
    assert recording_accuracy(np.array([-1, -1]), np.array([0, 0]), np.array([0, 1])) == 0.0


def test_the_python_api_refuses_what_the_cli_refuses():
    with pytest.raises(AsaDeployError, match=r"batch_size=-4 .*lr=nan .*params\['c1'\]=-5"):
        TrainConfig(batch_size=-4, lr=float("nan"), params={"c1": -5})
    assert TrainConfig(n_val=0, val_fraction=0.0).n_val == 0


def test_without_a_validation_split_the_last_epoch_is_kept(tmp_path, capsys):
    out = tmp_path / "noval"
    metrics = train(TrainConfig(epochs=2, **{**TINY, "n_val": 0}), out, progress=False)
    assert "no model selection, model.pt keeps the last epoch" in capsys.readouterr().out
    assert metrics["val"] is None and metrics["best_epoch"] == 2
    artifact = torch.load(out / "model.pt", weights_only=False)
    assert artifact["data"]["split"]["val"] == [] and len(artifact["data"]["split"]["train"]) > 0
    assert artifact["provenance"]["selection"] == "last epoch (no validation split)"
    with pytest.raises(AsaDeployError, match="without a validation split.*--data"):
        evaluate_run(out)
    result, path = evaluate_run(out, TINY["data"], windows=1)
    assert path.name == "eval.json" and result["provenance"]["split"] == "all recordings"


def test_rerunning_a_finished_training_keeps_model_pt_and_its_artifacts_current(run, tmp_path):
    copy = _copy(run, tmp_path / "rerun")
    before = provenance.content_hash(copy / "model.pt")
    train(TrainConfig(epochs=1, **TINY), copy, progress=False, verbose=False)
    assert provenance.content_hash(copy / "model.pt") == before
    assert provenance.problems(copy, "chip_config.json") == []
