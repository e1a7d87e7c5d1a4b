"""One pair of accuracy names: what an older version wrote under other names is read under
``accuracy_window`` / ``accuracy_recording``, whichever way its bare ``accuracy`` was meant."""

from __future__ import annotations

import pytest

from asa_deploy.metrics import current_names


def test_a_bare_accuracy_means_what_its_artifact_meant():
    eval_json = {"accuracy": 0.8, "window_accuracy": 0.7, "nasfr": 0.1}  # eval.json, fold.json
    assert current_names(eval_json, "recording") == {
        "accuracy_recording": 0.8, "accuracy_window": 0.7, "nasfr": 0.1}
    sim_entry = {"accuracy": 0.7, "recording_accuracy": 0.8}  # sim.json
    assert current_names(sim_entry, "window") == {"accuracy_window": 0.7, "accuracy_recording": 0.8}
    assert current_names({"accuracy": None}, "window") == {"accuracy_window": None}
    assert eval_json == {"accuracy": 0.8, "window_accuracy": 0.7, "nasfr": 0.1}  # not changed


def test_analysis_json_and_the_train_log():
    analysis = {"accuracy": {"window": 0.6, "recording": 0.75, "n_recordings": 4}}
    assert current_names(analysis, "recording") == {
        "accuracy_window": 0.6, "accuracy_recording": 0.75, "n_recordings": 4}
    line = {"epoch": 3, "val_accuracy": 0.5, "val_window_accuracy": 0.4}
    assert current_names(line, "recording", prefix="val_") == {
        "epoch": 3, "val_accuracy_recording": 0.5, "val_accuracy_window": 0.4}


def test_current_names_pass_through_and_win():
    now = {"accuracy_window": None, "accuracy_recording": 0.9}  # whole recordings: its None kept
    assert current_names(now, "window") == now
    assert current_names({**now, "window_accuracy": 0.1}, "recording") == now
    with pytest.raises(ValueError, match="'window' or 'recording'"):
        current_names(now, "windows")
