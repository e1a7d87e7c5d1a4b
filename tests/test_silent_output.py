"""An output layer that never fires is said loudly by every stage that scores it (issue 19 item 5):
each silent window is class -1, always wrong, so its accuracy measures no network at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from asa_deploy import io
from asa_deploy.cli import main
from asa_deploy.data.framing import SILENT_FLOAT_REMEDY, silent_output_warning
from asa_deploy.train import TrainConfig, train

TINY_SPECK = dict(data="synthetic:gesture-tiny", model="speck-tiny", T=5, epochs=1, batch_size=4,
                  eval_windows=2, seed=0, params={"c": 4, "fc": 8})
OUTPUT = "blocks.6.synapse"  # speck-tiny's last fc layer


@pytest.fixture(scope="module")
def silent_run(tmp_path_factory) -> Path:
    """A trained run whose output layer is then turned off: only negative weights and a negative
    bias (dropped on the chip), so it never fires in the float network nor on the chip."""
    out = tmp_path_factory.mktemp("silent")
    train(TrainConfig(**TINY_SPECK), out, progress=False, verbose=False)
    artifact = torch.load(out / "model.pt", weights_only=False)
    weight = artifact["weights"][f"{OUTPUT}.weight"]
    weight.copy_(-weight.abs() - 0.1)
    artifact["weights"][f"{OUTPUT}.bias"].fill_(-1.0)
    io.save_torch(out / "model.pt", artifact)
    return out


def test_the_warning_counts_silent_windows_from_half_of_them():
    assert silent_output_warning(0, 250, SILENT_FLOAT_REMEDY) is None
    assert silent_output_warning(124, 250, SILENT_FLOAT_REMEDY) is None
    assert silent_output_warning(None, None, SILENT_FLOAT_REMEDY) is None  # an older artifact
    line = silent_output_warning(250, 250, SILENT_FLOAT_REMEDY, "validation split")
    assert line.startswith("WARNING: the output layer never fired on 250 of 250 windows "
                           "(validation split): a silent window has no class and counts as wrong; "
                           "the network has not learned to spike at its output: train longer")


# A network that cannot fire: its threshold far above what unit-scale BN outputs reach in 5 steps,
# and no bias into the output layer.
DEAF_SPEC = """name: deaf
description: never fires
input: {channels: 2, height: 32, width: 32}
T: 5
neuron: iaf
bn_init: one
neuron_options: {threshold: 1000.0, min_v_mem: -1.0}
params: {c: 4}
blocks:
  - {type: conv, out: c, kernel: 3, stride: 2, padding: 1}
  - {type: flatten}
  - {type: fc, out: classes, bias: false}
"""


def test_train_ends_with_the_warning(tmp_path, capsys):
    (tmp_path / "deaf.yaml").write_text(DEAF_SPEC)
    assert main(["train", "--data", "synthetic:gesture-tiny", "--model", str(tmp_path / "deaf.yaml"),
                 "--epochs", "1", "--batch-size", "4", "--eval-windows", "2", "--no-progress",
                 "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    val = torch.load(tmp_path / "run" / "model.pt", weights_only=False)["metrics"]["val"]
    assert val["silent_windows"] == val["windows"] == 12
    assert ("WARNING: the output layer never fired on 12 of 12 windows (validation split, epoch "
            "1): a silent window has no class and counts as wrong") in out


def test_evaluate_simulate_and_report_say_it(silent_run, capsys):
    run = str(silent_run)
    assert main(["evaluate", run, "--windows", "2"]) == 0
    err = capsys.readouterr().err
    eval_json = json.loads((silent_run / "eval.json").read_text())
    assert eval_json["silent_windows"] == eval_json["windows"] == 12
    assert "WARNING: the output layer never fired on 12 of 12 windows: " in err

    assert main(["compile", run, "--chip", "speck2f", "--bias", "drop"]) == 0
    assert main(["simulate", run, "--engine", "fast", "--windows", "1", "--json"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])  # stdout stays one JSON object
    assert summary["silent_windows"] == summary["n_windows"] == 6
    assert ("WARNING: the output layer never fired on 6 of 6 windows: a silent window has no "
            "class and counts as wrong; if the float network fires") in err

    assert main(["report", run]) == 0
    err = capsys.readouterr().err
    report = json.loads((silent_run / "report.json").read_text())
    warnings = next(iter(report["runs"].values()))["warnings"]
    assert [w.split(":")[0] for w in warnings] == ["WARNING"] * 2
    assert "12 of 12 windows (float network, eval.json)" in warnings[0]
    assert "6 of 6 windows (chip, sim.json (fast engine))" in warnings[1]
    assert all(f"{w} [{run}]" in err for w in warnings)
    assert warnings[1] in (silent_run / "report.md").read_text()


def test_fold_names_the_first_silent_step(silent_run, capsys):
    assert main(["fold", str(silent_run), "--finetune-epochs", "0", "--eval-windows", "1",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    fold = json.loads((silent_run / "fold.json").read_text())
    first = fold["ladder"][0]
    assert first["silent_windows"] == first["windows"] == 6
    assert ("WARNING: the output layer never fired on 6 of 6 windows (fold step 'dynamic float'): "
            "a silent window has no class and counts as wrong; the network has not learned") in err
