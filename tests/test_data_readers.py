"""Decoders: exact event counts on real files, and a clear error naming the file for bad ones."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from helpers import random_events

from asa_deploy.data import readers
from asa_deploy.data.events import EVENT_DTYPE
from asa_deploy.data.readers import read_bin40, read_numpy, read_recording
from asa_deploy.errors import BadRecordingError


@pytest.mark.integration
def test_nmnist_file_matches_manifest(shared_data):
    root = shared_data / "nmnist-small"
    with open(root / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:5]
    for row in rows:
        ev = read_recording(root / row["path"], sensor_size=(34, 34, 2))
        assert ev.dtype == EVENT_DTYPE
        assert len(ev) == int(row["n_events"])
        assert int(ev["t"].max()) == int(row["t_max_us"])
        assert set(np.unique(ev["p"])) <= {0, 1}


@pytest.mark.integration
def test_gesture_clip_matches_manifest(shared_data):
    root = shared_data / "dvsgesture-10"
    with open(root / "manifest.csv", newline="") as f:
        row = next(csv.DictReader(f))
    ev = read_recording(root / row["file"], sensor_size=(128, 128, 2))
    assert len(ev) == int(row["n_events"]) == 63471
    assert int(ev["t"].max()) == int(row["t_max_us"])
    assert ev["x"].max() < 128 and ev["y"].max() < 128


def test_bin40_round_trip(tmp_path, bin40_writer):
    ev = random_events(500)
    path = bin40_writer(tmp_path / "a.bin", ev["x"], ev["y"], ev["t"], ev["p"])
    out = read_bin40(path)
    np.testing.assert_array_equal(out, ev)


def test_truncated_bin_names_file(tmp_path, bin40_writer):
    ev = random_events(10)
    path = bin40_writer(tmp_path / "cut.bin", ev["x"], ev["y"], ev["t"], ev["p"])
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(BadRecordingError, match="truncated") as info:
        read_recording(path)
    assert info.value.source == str(path)
    assert "48 bytes" in info.value.problem


@pytest.mark.integration
def test_truncated_shared_file(tmp_path, shared_data):
    path = tmp_path / "00001.bin"
    shutil.copy(shared_data / "nmnist-small" / "Train" / "5" / "00001.bin", path)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(BadRecordingError, match="00001.bin: file is truncated"):
        read_recording(path)


def test_corrupt_bin_is_outside_sensor(tmp_path, bin40_writer):
    path = bin40_writer(tmp_path / "junk.bin", [3, 200, 5], [4, 6, 7], [10, 20, 30], [0, 1, 0])
    with pytest.raises(BadRecordingError, match="1 of 3 events lie outside the 34x34 sensor"):
        read_recording(path, sensor_size=(34, 34, 2))


def test_empty_bin(tmp_path):
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    with pytest.raises(BadRecordingError, match="empty.bin: file is empty"):
        read_recording(path)


def test_npy_and_npz(tmp_path):
    ev = random_events(50)
    np.save(tmp_path / "a.npy", ev)
    np.savez(tmp_path / "b.npz", events=ev, other=np.arange(3))
    np.savez(tmp_path / "c.npz", ev)
    for name in ("a.npy", "b.npz", "c.npz"):
        np.testing.assert_array_equal(read_recording(tmp_path / name), ev)


def test_npy_other_field_order_and_bool_polarity(tmp_path):
    ev = random_events(20)
    other = np.zeros(20, dtype=[("t", "<u8"), ("x", "<u2"), ("y", "<u2"), ("p", "?")])
    for field in ("t", "x", "y"):
        other[field] = ev[field]
    other["p"] = ev["p"] > 0
    np.save(tmp_path / "o.npy", other)
    np.testing.assert_array_equal(read_numpy(tmp_path / "o.npy"), ev)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (np.zeros((5, 4)), "expected a structured array with fields x, y, t, p"),
        (np.zeros(3, dtype=[("x", "i2"), ("y", "i2")]), "missing \\['t', 'p'\\]"),
    ],
)
def test_npy_wrong_layout(tmp_path, content, message):
    path = tmp_path / "bad.npy"
    np.save(path, content)
    with pytest.raises(BadRecordingError, match=message) as info:
        read_recording(path)
    assert str(path) in str(info.value)


def test_npz_ambiguous_and_corrupt(tmp_path):
    np.savez(tmp_path / "two.npz", a=random_events(3), b=random_events(3))
    with pytest.raises(BadRecordingError, match="name the events array 'events'"):
        read_recording(tmp_path / "two.npz")
    (tmp_path / "junk.npy").write_bytes(b"\x00garbage bytes")
    with pytest.raises(BadRecordingError, match="junk.npy: not a readable numpy file"):
        read_recording(tmp_path / "junk.npy")


def test_validation_failures(tmp_path):
    np.save(tmp_path / "none.npy", np.zeros(0, dtype=EVENT_DTYPE))
    with pytest.raises(BadRecordingError, match="none.npy: the recording holds no events"):
        read_recording(tmp_path / "none.npy", sensor_size=(34, 34, 2))
    ev = random_events(30)
    ev["t"][10] = ev["t"][9] - 5
    np.save(tmp_path / "back.npy", ev)
    with pytest.raises(BadRecordingError, match="back.npy: timestamps go backwards at event 10"):
        read_recording(tmp_path / "back.npy", sensor_size=(34, 34, 2))


def test_unknown_suffix_and_missing_file(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(BadRecordingError, match="unknown file type '.txt'; supported: .aedat4"):
        read_recording(tmp_path / "a.txt")
    with pytest.raises(BadRecordingError, match="nothere.bin: cannot read the file"):
        read_recording(tmp_path / "nothere.bin")


def test_aedat4_without_package_says_how_to_install(tmp_path, monkeypatch):
    path = tmp_path / "rec.aedat4"
    path.write_bytes(b"#!AER-DAT4.0\r\n")
    monkeypatch.setattr(readers.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BadRecordingError, match="pip install aedat") as info:
        read_recording(path)
    assert info.value.source == str(path)
