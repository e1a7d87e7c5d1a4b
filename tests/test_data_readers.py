"""Decoders: exact event counts on real files, and a clear error naming the file for bad ones."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from helpers import random_events

from asa_deploy.data import readers
from asa_deploy.data.events import EVENT_DTYPE, check_events
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
    with pytest.raises(BadRecordingError, match="junk.npy: not a NumPy recording") as info:
        read_recording(tmp_path / "junk.npy")
    assert "allow_pickle" not in str(info.value)


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


# --- values are never coerced (issue 9) ----------------------------------------------------------


def _save_fields(path, **fields):
    """Save a structured array whose fields have the given values (and their own dtypes)."""
    columns = {k: np.asarray(v) for k, v in fields.items()}
    array = np.zeros(len(next(iter(columns.values()))),
                     dtype=[(k, v.dtype) for k, v in columns.items()])
    for k, v in columns.items():
        array[k] = v
    np.save(path, array)
    return path


GOOD = dict(x=[1, 2, 3], y=[4, 5, 6], t=[0, 10, 20], p=[0, 1, 0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(p=[0, 7, 1]), r"polarity 7 at event 1 is not 0 or 1 \(1 of 3 events\); "
                            r"values found: 0, 1, 7"),
        (dict(p=[-1, 0, 1]), r"polarity -1 at event 0 is not 0 or 1"),
        (dict(p=[0.0, 0.5, 1.0]), r"polarity 0.5 at event 1 is not 0 or 1"),
        (dict(x=[3.0, 16.5, 4.0]), r"x coordinate 16.5 at event 1 is not a whole number "
                                   r"\(1 of 3 events\); coordinates must be whole pixels"),
        (dict(t=[0.0, 1.5, 3.0]), r"timestamp 1.5 at event 1 is not a whole number .*whole "
                                  r"microseconds"),
        (dict(y=[-2, 3, 4]), r"y coordinate -2 at event 0 is negative"),
        (dict(t=[0.0, np.nan, 5.0]), r"timestamp nan at event 1 is not a finite number"),
        (dict(x=[1.0, np.inf, 2.0]), r"x coordinate inf at event 1 is not a finite number"),
        (dict(x=np.array([1, 40000, 3], dtype=np.int32)),
         r"x coordinate 40000 at event 1 is beyond the largest supported 32767"),
        (dict(t=np.array([0, 2**63, 2**64 - 1], dtype=np.uint64)),
         r"timestamp 9223372036854775808 at event 1 is beyond the largest supported"),
        (dict(x=np.array(["1", "2", "3"])), r"field 'x' has type <U1; events need integer"),
        (dict(t=np.array([0, 1, 2], dtype="m8[us]")), r"field 't' has type timedelta64"),
    ],
)
def test_values_are_never_coerced(tmp_path, change, message):
    path = _save_fields(tmp_path / "bad.npy", **{**GOOD, **change})
    with pytest.raises(BadRecordingError, match=message) as info:
        read_recording(path)
    assert info.value.source == str(path)


def test_whole_floats_and_minus_one_polarity_are_kept_exactly(tmp_path):
    path = _save_fields(tmp_path / "f.npy", x=[1.0, 2.0, 3.0], y=[4, 5, 6],
                        t=[0.0, 1e6, 2**40], p=[-1, 1, -1])
    ev = read_recording(path)
    assert ev["x"].tolist() == [1, 2, 3] and ev["t"].tolist() == [0, 1_000_000, 2**40]
    assert ev["p"].tolist() == [0, 1, 0]


def test_bad_polarity_of_an_event_array_is_refused_by_check_events():
    ev = random_events(5)
    ev["p"][3] = 7
    with pytest.raises(BadRecordingError, match="rec: polarity 7 at event 3"):
        check_events(ev, (34, 34, 2), "rec")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"PK\x03\x04not a zip at all", r"not a NumPy recording \(truncated or corrupt"),
        (b"\x93NUMPY\x01\x00\x10\x00{'descr': 'junk", r"not a NumPy recording \(truncated or"),
        (b"hello, I am a CSV\n1,2,3,4\n", r"not a NumPy recording \(it starts with b'hello,'"),
    ],
)
def test_garbage_numpy_file_says_not_a_numpy_recording(tmp_path, content, message):
    path = tmp_path / "garbage.npz"
    path.write_bytes(content)
    with pytest.raises(BadRecordingError, match=message) as info:
        read_recording(path)
    assert info.value.source == str(path) and "allow_pickle" not in str(info.value)


def test_pickled_objects_are_refused_without_allow_pickle_advice(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BadRecordingError, match="holds pickled Python objects") as info:
        read_recording(tmp_path / "obj.npy")
    assert "allow_pickle" not in str(info.value)


def test_truncated_npy(tmp_path):
    np.save(tmp_path / "cut.npy", random_events(100))
    data = (tmp_path / "cut.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadRecordingError, match=r"cut.npy: not a NumPy recording \(truncated"):
        read_recording(tmp_path / "cut.npy")
