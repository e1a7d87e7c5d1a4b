"""Data that does not fit a model: a clear error before any forward pass, from the data package's
checks and through evaluate, analyze, fold's calibration and simulate (issue 9)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import random_events

from asa_deploy.cli import main
from asa_deploy.data import check_class_names, check_input_shape
from asa_deploy.errors import DataSpecError, ModelSpecError
from asa_deploy.train import TrainConfig, train

TINY_SPECK = dict(data="synthetic:gesture-tiny", model="speck-tiny", T=5, epochs=1, batch_size=4,
                  eval_windows=2, seed=0, params={"c": 4, "fc": 8})


def test_check_input_shape_message():
    check_input_shape((128, 128, 2), 4, (2, 32, 32), target="m", data="d", fix="f")
    with pytest.raises(ModelSpecError) as info:
        check_input_shape((34, 34, 2), 1, (2, 32, 32), target="model 'speck-tiny'",
                          data="nmnist:/x", fix="do this")
    assert str(info.value) == ("model 'speck-tiny' takes 2x32x32 input but nmnist:/x framed with "
                               "downsample 1 gives 2x34x34; do this")
    with pytest.raises(ModelSpecError, match="but d gives events on a sensor of 1x34x34; f"):
        check_input_shape((34, 34, 1), None, (2, 128, 128), target="chip", data="d", fix="f")


def test_check_class_names():
    check_class_names(["a", "b"], ["a", "b", "c"], data="d", target="m")  # fewer classes: fine
    with pytest.raises(DataSpecError) as info:
        check_class_names(["b", "c"], ["a", "b", "c"], data="events:/x", target="model 'm'")
    assert str(info.value) == (
        "events:/x has classes ['b', 'c'] but model 'm' was trained on ['a', 'b', 'c']: label 0 "
        "is 'b' in the data and 'a' in the model; for an events: folder, write its dataset.json "
        "with the model's class_names")
    with pytest.raises(DataSpecError, match="label 3 is 'x' in the data and no class in the model"):
        check_class_names(["a", "b", "c", "x"], ["a", "b", "c"], data="d", target="m")


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory) -> Path:
    """A speck-tiny run trained on synthetic:gesture-tiny (128x128 sensor, downsample 4: 2x32x32)."""
    out = tmp_path_factory.mktemp("synthetic-run")
    train(TrainConfig(**TINY_SPECK), out, progress=False, verbose=False)
    return out


@pytest.fixture
def nmnist_folder(tmp_path, bin40_writer) -> Path:
    """A small N-MNIST-layout folder (34x34 sensor) in the 40-bit format."""
    for digit in ("0", "1"):
        (tmp_path / "nm" / "Train" / digit).mkdir(parents=True)
        for k in range(2):
            ev = random_events(60, seed=k)
            bin40_writer(tmp_path / "nm" / "Train" / digit / f"{k}.bin", ev["x"], ev["y"], ev["t"],
                         ev["p"])
    return tmp_path / "nm"


NMNIST_ON_SYNTHETIC = (
    "error: model 'speck-tiny' takes 2x32x32 input but nmnist:{folder} framed with downsample 4 "
    "gives 2x8x8; this run was trained on synthetic:gesture-tiny (sensor 128x128x2); test it on "
    "data from that sensor, or train a model for this data\n"
)


@pytest.mark.parametrize("command", ["evaluate", "analyze"])
def test_evaluate_and_analyze_refuse_data_of_another_sensor(synthetic_run, nmnist_folder, command,
                                                            capsys):
    code = main([command, str(synthetic_run), "--data", f"nmnist:{nmnist_folder}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.endswith(NMNIST_ON_SYNTHETIC.format(folder=nmnist_folder))
    assert "mat1" not in err and "Traceback" not in err


def test_evaluate_refuses_data_whose_labels_mean_other_classes(synthetic_run, tmp_path, capsys):
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", random_events(80, width=128))
    (tmp_path / "labels.csv").write_text("file,label\na.npy,walk\nb.npy,run\n")
    (tmp_path / "dataset.json").write_text(json.dumps({"sensor_size": [128, 128, 2]}))
    assert main(["evaluate", str(synthetic_run), "--data", f"events:{tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert f"error: events:{tmp_path} has classes ['run', 'walk'] but model 'speck-tiny' was " \
           "trained on [" in err
    assert "label 0 is 'run' in the data" in err


def test_fold_calibration_and_simulate_refuse_data_of_another_sensor(synthetic_run, nmnist_folder,
                                                                      capsys):
    code = main(["fold", str(synthetic_run), "--calib", f"nmnist:{nmnist_folder}",
                 "--finetune-epochs", "0", "--bias", "drop"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert (f"error: model 'speck-tiny' takes 2x32x32 input but nmnist:{nmnist_folder} framed "
            "with downsample 4 gives 2x8x8; calibrate on data from the run's sensor "
            "(synthetic:gesture-tiny)") in err

    assert main(["compile", str(synthetic_run), "--chip", "speck2f", "--bias", "drop"]) == 0
    capsys.readouterr()
    code = main(["simulate", str(synthetic_run), "--data", f"nmnist:{nmnist_folder}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.endswith(
        f"error: the chip config of model 'speck-tiny' takes 2x128x128 input but "
        f"nmnist:{nmnist_folder} gives events on a sensor of 2x34x34; it was compiled for "
        "synthetic:gesture-tiny; simulate it on data from that sensor, or compile a model trained "
        "on this data\n")
