"""Every artifact is read through one guarded loader (asa_deploy/io.py): a missing, empty, truncated,
corrupt or foreign file is an AsaDeployError naming the file and what to do, through the Python API
and the CLI (exit 2); training falls back to the previous checkpoint; the report names the stage
that really rewrites an unreadable file."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from asa_deploy.chip.config import ChipConfig
from asa_deploy.chip.lower import lower
from asa_deploy.chip.spec import load_chip_spec
from asa_deploy.cli import main
from asa_deploy.errors import ArtifactError, AsaDeployError, ChipConfigError
from asa_deploy.export import lowered_to_nir, read_nir, write_nir
from asa_deploy.fold.stage import FOLD_FORMAT, load_folded
from asa_deploy.io import load_json, load_torch, save_torch
from asa_deploy.pipeline import compile_run, load_network_for_compile
from asa_deploy.report import build_report
from asa_deploy.train import TrainConfig, load_run, train
from asa_deploy.train.loop import PREVIOUS_CHECKPOINT

TINY = dict(data="synthetic:gesture-tiny", model="speck-tiny", T=5, epochs=1, batch_size=4,
            eval_windows=2, seed=0, params={"c": 4, "fc": 8})
CLI_TINY = ["--data", "synthetic:gesture-tiny", "--model", "speck-tiny", "--T", "5", "--epochs", "1",
            "--batch-size", "4", "--eval-windows", "2", "--seed", "0", "--param", "c=4",
            "--param", "fc=8", "--no-progress"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """One valid file of every artifact kind (a trained, compiled speck-tiny run and friends)."""
    run = tmp_path_factory.mktemp("run")
    train(TrainConfig(**TINY), run, progress=False, verbose=False)
    compile_run(run, "speck2f", bias_policy="drop", use_folded=False)
    extra = tmp_path_factory.mktemp("extra")
    model, _, input_shape, _ = load_network_for_compile(run)
    lowered = lower(model, input_shape, bias_policy="drop")
    save_torch(extra / "folded.pt", {"format_version": FOLD_FORMAT, "chip": "speck2f",
                                     "strategy": "none", "lowered": lowered,
                                     "input_shape": input_shape})
    write_nir(lowered_to_nir(lowered), extra / "model.nir")
    shutil.copy(load_chip_spec("speck2f").path, extra / "mychip.toml")
    return {"run": run, "model.pt": run / "model.pt", "checkpoint.pt": run / "checkpoint.pt",
            "chip_config.json": run / "chip_config.json", "folded.pt": extra / "folded.pt",
            "model.nir": extra / "model.nir", "mychip.toml": extra / "mychip.toml"}


# ---- every kind x every corruption -----------------------------------------------------------------

def _load_checkpoint(folder: Path):
    train(TrainConfig(**TINY), folder, progress=False, verbose=False)


LOADERS = {  # file name -> (load the folder's file, what the message must say to do)
    "model.pt": (lambda d: load_run(d), "asa-deploy train --out"),
    "checkpoint.pt": (_load_checkpoint, "delete it to start training over"),
    "folded.pt": (lambda d: load_folded(d), "asa-deploy fold"),
    "chip_config.json": (lambda d: ChipConfig.load(d / "chip_config.json"), "asa-deploy compile"),
    "model.nir": (lambda d: read_nir(d / "model.nir"), "asa-deploy export"),
    "mychip.toml": (lambda d: load_chip_spec(d / "mychip.toml"), None),
}


def _torch_without(key):
    def corrupt(path: Path) -> None:
        record = torch.load(path, weights_only=False)
        del record[key]
        torch.save(record, path)
    return corrupt


def _json_without(key):
    def corrupt(path: Path) -> None:
        raw = json.loads(path.read_text())
        del raw[key]
        path.write_text(json.dumps(raw))
    return corrupt


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(max(path.stat().st_size, 64)))


def _bare_state_dict(path: Path) -> None:
    torch.save(torch.load(path, weights_only=False)["weights"], path)


def _weights_of_another_network(path: Path) -> None:
    record = torch.load(path, weights_only=False)
    name = next(k for k, v in record["weights"].items() if v.ndim == 4)
    record["weights"][name] = torch.zeros(1, 1, 1, 1)
    torch.save(record, path)


def _checkpoint_with_bad_config(path: Path) -> None:
    record = torch.load(path, weights_only=False)
    record["train_config"]["epochs"] = "many"
    torch.save(record, path)


def _other_hdf5(path: Path) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(3))


COMMON = {"empty": lambda p: p.write_bytes(b""), "truncated": _truncate, "random bytes": _random_bytes}
CASES = [(kind, name, fn) for kind in LOADERS for name, fn in COMMON.items()] + [
    ("model.pt", "a tensor", lambda p: torch.save(torch.zeros(3), p)),
    ("model.pt", "a bare state_dict", _bare_state_dict),
    ("model.pt", "no model_spec", _torch_without("model_spec")),
    ("model.pt", "weights of another network", _weights_of_another_network),
    ("checkpoint.pt", "a list", lambda p: torch.save([1, 2], p)),
    ("checkpoint.pt", "no optimizer state", _torch_without("optimizer")),
    ("checkpoint.pt", "a train_config of wrong values", _checkpoint_with_bad_config),
    ("folded.pt", "a tensor", lambda p: torch.save(torch.zeros(3), p)),
    ("folded.pt", "no lowered network", _torch_without("lowered")),
    ("chip_config.json", "a JSON array", lambda p: p.write_text("[1, 2]")),
    ("chip_config.json", "no readout", _json_without("readout")),
    ("model.nir", "another HDF5 file", _other_hdf5),
    ("mychip.toml", "JSON, not TOML", lambda p: p.write_text('{"name": "x"}')),
    ("mychip.toml", "no [power]", lambda p: p.write_text(p.read_text().split("[power]")[0])),
]


@pytest.mark.parametrize("kind,corruption,corrupt", CASES, ids=[f"{k}-{c}" for k, c, _ in CASES])
def test_a_corrupt_artifact_is_an_error_naming_the_file(sources, tmp_path, kind, corruption, corrupt):
    shutil.copy(sources[kind], tmp_path / kind)
    corrupt(tmp_path / kind)
    load, remedy = LOADERS[kind]
    with pytest.raises(AsaDeployError) as info:
        load(tmp_path)
    message = str(info.value)
    assert str(tmp_path / kind) in message, message
    if remedy is not None:
        assert remedy in message, message
    assert "Traceback" not in message and "\n" not in message


def test_the_valid_files_load(sources, tmp_path):
    """The matrix above is not vacuous: every source loads before it is corrupted."""
    for kind, (load, _) in LOADERS.items():
        if kind != "checkpoint.pt":
            shutil.copy(sources[kind], tmp_path / kind)
            load(tmp_path)
    assert ChipConfig.load(sources["chip_config.json"]).chip == "speck2f"


def test_messages_say_what_is_wrong(sources, tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"")
    with pytest.raises(ArtifactError, match=r"model.pt: the trained model is empty \(0 bytes"):
        load_run(tmp_path)
    torch.save(torch.load(sources["model.pt"], weights_only=False)["weights"], path)
    with pytest.raises(ArtifactError, match="a bare state_dict .tensors only. without model_spec"):
        load_run(tmp_path)
    record = torch.load(sources["model.pt"], weights_only=False)
    torch.save({**record, "data": [1]}, path)
    with pytest.raises(ArtifactError, match=r"not the trained model: a dict without data \(not a "
                                            r"dict\); retrain"):
        load_run(tmp_path)
    del record["data"]["split"]["val"]
    torch.save(record, path)
    with pytest.raises(ArtifactError, match="a dict without data.split.val; retrain"):
        load_run(tmp_path)
    torch.save(torch.zeros(2), path)
    with pytest.raises(ArtifactError, match="holds a Tensor, not the trained model"):
        load_run(tmp_path)
    path.write_bytes(sources["model.pt"].read_bytes()[:5000])
    with pytest.raises(ArtifactError, match="truncated, corrupt or not a torch file"):
        load_run(tmp_path)
    with pytest.raises(ArtifactError, match=r"absent.pt not found \(the thing\); do this"):
        load_torch(tmp_path / "absent.pt", "thing", remedy="do this")
    (tmp_path / "x.json").write_text('{"a": [1, 2')
    with pytest.raises(ArtifactError, match=r"x.json: the results is not valid JSON: truncated or "
                                            r"corrupt \(.* at line 1, column 12\); rerun"):
        load_json(tmp_path / "x.json", "results", remedy="rerun")
    (tmp_path / "x.json").write_text("[" * 100_000)
    with pytest.raises(ArtifactError, match="x.json"):
        load_json(tmp_path / "x.json", "results", remedy="rerun")


# ---- the CLI ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["evaluate"], ["compile", "--bias", "drop"], ["export"],
                                     ["analyze"], ["report"], ["fold"]])
def test_cli_on_a_truncated_model_exits_2_naming_the_file(sources, tmp_path, capsys, command):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(sources["model.pt"].read_bytes()[:8000])
    assert main([command[0], str(run), *command[1:]]) == 2
    err = capsys.readouterr().err
    assert f"asa-deploy {command[0]}: error: {run / 'model.pt'}: the trained model cannot be read" \
        in err
    assert "asa-deploy train --out" in err and "Traceback" not in err


def test_cli_train_on_a_truncated_checkpoint_without_a_previous_one(sources, tmp_path, capsys):
    (tmp_path / "checkpoint.pt").write_bytes(sources["checkpoint.pt"].read_bytes()[:8000])
    assert main(["train", *CLI_TINY, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'checkpoint.pt'}: the training checkpoint cannot be read" in err
    assert "delete it to start training over" in err


def test_cli_export_on_a_corrupt_folded_network(sources, tmp_path, capsys):
    shutil.copy(sources["model.pt"], tmp_path / "model.pt")
    (tmp_path / "folded.pt").write_bytes(b"\x80\x02garbage")
    assert main(["export", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'folded.pt'}: the folded network cannot be read" in err
    assert f"rerun `asa-deploy fold {tmp_path}`" in err


# ---- training keeps and falls back to the previous checkpoint ---------------------------------------

@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory) -> tuple[Path, dict]:
    """A complete 2-epoch run and its final weights (read before any test damages it)."""
    run = tmp_path_factory.mktemp("two")
    train(TrainConfig(**{**TINY, "epochs": 2}), run, progress=False, verbose=False)
    return run, torch.load(run / "checkpoint.pt", weights_only=False)["weights"]


def _epoch(path: Path) -> int:
    return torch.load(path, weights_only=False)["state"]["epoch"]


def test_the_previous_checkpoint_is_kept(two_epochs):
    run, _ = two_epochs
    assert _epoch(run / "checkpoint.pt") == 2 and _epoch(run / PREVIOUS_CHECKPOINT) == 1


def test_resume_falls_back_to_the_previous_checkpoint_and_ends_with_the_same_weights(
        two_epochs, tmp_path, caplog):
    run, final = two_epochs
    shutil.copytree(run, tmp_path, dirs_exist_ok=True)
    current = tmp_path / "checkpoint.pt"
    current.write_bytes(current.read_bytes()[:current.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="asa_deploy.train"):
        train(TrainConfig(**{**TINY, "epochs": 2}), tmp_path, progress=False, verbose=False)
    warning = caplog.text
    assert f"{current} is unreadable (the training checkpoint cannot be read" in warning
    assert f"falling back to {tmp_path / PREVIOUS_CHECKPOINT} (epoch 1)" in warning
    resumed = torch.load(current, weights_only=False)["weights"]
    assert final.keys() == resumed.keys()
    assert all(torch.equal(final[k], resumed[k]) for k in final)
    _, artifact = load_run(tmp_path)
    assert all(torch.equal(artifact["weights"][k], load_run(run)[1]["weights"][k]) for k in final)
    # the unreadable file was replaced, not kept as the previous checkpoint
    assert _epoch(current) == 2 and _epoch(tmp_path / PREVIOUS_CHECKPOINT) == 1


def test_a_missing_checkpoint_falls_back_too(two_epochs, tmp_path, caplog):
    run, final = two_epochs
    shutil.copytree(run, tmp_path, dirs_exist_ok=True)
    (tmp_path / "checkpoint.pt").unlink()
    with caplog.at_level(logging.WARNING, logger="asa_deploy.train"):
        train(TrainConfig(**{**TINY, "epochs": 2}), tmp_path, progress=False, verbose=False)
    assert "checkpoint.pt is missing; falling back to" in caplog.text
    resumed = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["weights"]
    assert all(torch.equal(final[k], resumed[k]) for k in final)


def test_both_checkpoints_unreadable_names_both_and_says_to_delete_them(two_epochs, tmp_path):
    run, _ = two_epochs
    shutil.copytree(run, tmp_path, dirs_exist_ok=True)
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    _truncate(tmp_path / PREVIOUS_CHECKPOINT)
    with pytest.raises(ArtifactError) as info:
        train(TrainConfig(**{**TINY, "epochs": 2}), tmp_path, progress=False, verbose=False)
    message = str(info.value)
    assert f"{tmp_path / 'checkpoint.pt'}: the training checkpoint is empty" in message
    assert f"{tmp_path / PREVIOUS_CHECKPOINT}: the training checkpoint cannot be read" in message
    assert "Delete both files to start training over" in message


# ---- chip config contents ----------------------------------------------------------------------------

def _edited_config(sources, tmp_path, edit) -> Path:
    raw = json.loads(sources["chip_config.json"].read_text())
    edit(raw)
    path = tmp_path / "chip_config.json"
    path.write_text(json.dumps(raw))
    return path


def test_weights_with_a_wrong_shape_are_blamed_not_the_biases(sources, tmp_path):
    path = _edited_config(sources, tmp_path, lambda r: r["cores"][0].update(
        weights=r["cores"][0]["weights"][:-1]))
    with pytest.raises(AsaDeployError, match=r"chip_config.json: core \d+ \(block0.conv\): weights "
                                             r"\(\d+, 2, 3, 3\) have \d+ output channels, but "
                                             r"biases and neurons_initial_value have \d+"):
        ChipConfig.load(path)


def test_a_weight_that_is_not_an_integer_is_named(sources, tmp_path):
    def edit(raw):
        raw["cores"][1]["weights"][0][0][0][0] = True
    with pytest.raises(AsaDeployError, match=r"chip_config.json: cores\[1\] \(core \d+, block\d.conv\): "
                                             r"weights: holds True; expected ints only"):
        ChipConfig.load(_edited_config(sources, tmp_path, edit))


def test_an_unknown_chip_is_refused_with_the_known_ones(sources, tmp_path):
    def edit(raw):  # a config that does not say which hw_config compiled it
        raw["chip"] = "speck9"
        del raw["meta"]["hw_config"]
    path = _edited_config(sources, tmp_path, edit)
    with pytest.raises(ChipConfigError, match=r"chip_config.json: unknown chip 'speck9'; known: "
                                              r"\['dynapcnn', 'speck2e', 'speck2f'\]"):
        ChipConfig.load(path)
    assert main(["simulate", str(tmp_path)]) == 2


def test_a_built_in_chip_renamed_after_compiling_is_told_to_recompile(sources, tmp_path):
    def edit(raw):
        raw["chip"] = "speck9"
        raw["meta"]["hw_config"] = load_chip_spec("speck2f").path
    with pytest.raises(ChipConfigError, match=r"unknown chip 'speck9', but it was compiled with the "
                                              r"built-in .*speck2f.toml \(chip speck2f\): its "
                                              r"'chip' field was changed after compiling"):
        ChipConfig.load(_edited_config(sources, tmp_path, edit))


def test_a_config_compiled_from_a_custom_hw_config_says_how_to_pass_it(sources, tmp_path,
                                                                       monkeypatch):
    toml = tmp_path / "hw" / "custom.toml"
    toml.parent.mkdir()
    toml.write_text(Path(load_chip_spec("speck2f").path).read_text()
                    .replace('name = "speck2f"', 'name = "mychip"'))
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(sources["model.pt"], run / "model.pt")
    compile_run(run, str(toml), bias_policy="drop")
    with pytest.raises(ChipConfigError, match=rf"unknown chip 'mychip'.*compiled from "
                                              rf"{re.escape(str(toml.resolve()))}: copy that file "
                                              rf"to .*mychip.toml, or set ASA_DEPLOY_HW_CONFIGS"):
        ChipConfig.load(run / "chip_config.json")
    (toml.parent / "mychip.toml").write_text(toml.read_text())
    monkeypatch.setenv("ASA_DEPLOY_HW_CONFIGS", str(toml.parent))
    assert ChipConfig.load(run / "chip_config.json").chip == "mychip"


# ---- the report --------------------------------------------------------------------------------------

def _report_problems(run: Path) -> list[dict]:
    report = build_report([run])
    return next(iter(report["runs"].values()))["problems"]


@pytest.mark.parametrize("folded", [False, True])
def test_report_on_an_unreadable_chip_config_names_the_stage_that_wrote_it(sources, tmp_path,
                                                                           folded):
    for name in ("model.pt", "mapping.json"):
        shutil.copy(sources["run"] / name, tmp_path / name)
    (tmp_path / "chip_config.json").write_bytes(sources["chip_config.json"].read_bytes()[:300])
    if folded:
        (tmp_path / "fold.json").write_text(json.dumps({"chip": "speck2f"}))
    problem = next(p for p in _report_problems(tmp_path) if p["artifact"] == "chip_config.json")
    assert "not valid JSON" in problem["problem"]
    stage = "fold" if folded else "compile"
    assert problem["command"].startswith(f"asa-deploy {stage} {tmp_path}")


@pytest.mark.parametrize("name", ["eval.json", "analysis.json", "mapping.json", "sim.json",
                                  "fold.json", "device.json"])
@pytest.mark.parametrize("content", [b"", b'{"truncated": [1, 2', b"[1, 2]", b"\xff\xfe\x00garbage"])
def test_report_lists_an_unreadable_json_artifact_as_a_problem(sources, tmp_path, name, content):
    shutil.copy(sources["model.pt"], tmp_path / "model.pt")
    (tmp_path / name).write_bytes(content)
    problem = next(p for p in _report_problems(tmp_path) if p["artifact"] == name)
    assert problem["problem"].startswith("unreadable (the ") and problem["command"]


def test_simulate_replaces_an_unreadable_sim_json_with_a_warning(sources, tmp_path, caplog):
    from asa_deploy.chip.simulate import simulate_run

    for name in ("model.pt", "chip_config.json", "mapping.json"):
        shutil.copy(sources["run"] / name, tmp_path / name)
    (tmp_path / "sim.json").write_text("[1, 2]")
    with caplog.at_level(logging.WARNING, logger="asa_deploy.simulate"):
        simulate_run(tmp_path, engine="fast", windows=1, max_recordings=2)
    assert f"{tmp_path / 'sim.json'}: the simulation results holds a JSON array" in caplog.text
    assert set(json.loads((tmp_path / "sim.json").read_text())) == {"fast"}
