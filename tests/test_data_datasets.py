"""Datasets from specs: real folders, every kind of bad file skipped and counted, clear spec errors."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import sys
import types

import numpy as np
import pytest
from helpers import random_events

import asa_deploy.data
from asa_deploy.data import EVENT_DTYPE, EventDataset, FrameSpec, open_dataset, stratified_split
from asa_deploy.errors import DataSpecError


def _write_labels(folder, rows) -> None:
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label"])
        writer.writerows(rows)


# --- real data ---------------------------------------------------------------------------------


@pytest.mark.integration
def test_nmnist_small_opens_with_class_counts(shared_data):
    root = shared_data / "nmnist-small"
    ds = open_dataset(f"nmnist:{root}")
    assert len(ds) == 1000 and ds.skipped == []
    assert ds.sensor_size == (34, 34, 2) and ds.num_classes == 10
    counts = np.bincount(ds.labels, minlength=10).tolist()
    assert counts == [97, 116, 99, 93, 105, 92, 94, 117, 87, 100]
    assert ds.frame_spec == FrameSpec(T=10, dt_us=25_000)
    with open(root / "manifest.csv", newline="") as f:
        manifest = {str(root / r["path"]): r for r in csv.DictReader(f)}
    for i in (0, 500, 999):
        events, label = ds[i]
        row = manifest[ds.sources[i]]
        assert label == int(row["label"]) and len(events) == int(row["n_events"])
    assert ds[3][0] is ds[3][0]  # decoded once, served from memory
    assert not ds[3][0].flags.writeable
    train = open_dataset(f"nmnist:{root}/Train")
    assert len(train) == 1000 and set(train.splits) == {"train"}


@pytest.mark.integration
def test_dvsgesture_clips_open_with_manifest_labels(shared_data):
    ds = open_dataset(f"dvsgesture:{shared_data / 'dvsgesture-10'}")
    assert len(ds) == 10 and ds.num_classes == 11 and ds.class_names[-1] == "other"
    assert ds.sensor_size == (128, 128, 2)
    assert ds.frame_spec == FrameSpec(T=16, dt_us=50_000, downsample=4)
    assert [s.rsplit("/", 1)[1] for s in ds.sources[:3]] == ["1.bs2", "2.bs2", "3.bs2"]
    assert ds.labels.tolist() == list(range(10))
    assert len(ds[0][0]) == 63471 and ds.class_names[ds[0][1]] == "hand_clapping"


@pytest.mark.integration
def test_one_corrupt_shared_file_is_skipped(tmp_path, shared_data, caplog):
    src = shared_data / "nmnist-small" / "Train"
    for digit in ("3", "7"):
        (tmp_path / "Train" / digit).mkdir(parents=True)
        for f in sorted((src / digit).glob("*.bin"))[:3]:
            shutil.copy(f, tmp_path / "Train" / digit / f.name)
    bad = sorted((tmp_path / "Train" / "7").glob("*.bin"))[1]
    bad.write_bytes(bad.read_bytes()[:-1])
    with caplog.at_level(logging.WARNING, logger="asa_deploy.data"):
        ds = open_dataset(f"nmnist:{tmp_path}")
    assert len(ds) == 5 and ds.labels.tolist() == [3, 3, 3, 7, 7]
    assert len(ds.skipped) == 1 and ds.skipped[0][0] == str(bad)
    assert "truncated" in ds.skipped[0][1]
    assert any(str(bad) in r.getMessage() and "truncated" in r.getMessage() for r in caplog.records)


# --- built in tmp_path -------------------------------------------------------------------------


def test_nmnist_layout_skips_each_bad_file(tmp_path, bin40_writer):
    good = random_events(50)
    for digit in ("0", "1"):
        (tmp_path / "Test" / digit).mkdir(parents=True)
        for k in range(2):
            bin40_writer(
                tmp_path / "Test" / digit / f"{k}.bin", good["x"], good["y"], good["t"], good["p"]
            )
    (tmp_path / "Test" / "cat").mkdir()
    bin40_writer(tmp_path / "Test" / "cat" / "0.bin", good["x"], good["y"], good["t"], good["p"])
    bin40_writer(tmp_path / "Test" / "1" / "wide.bin", [40], [3], [5], [1])
    (tmp_path / "Test" / "0" / "cut.bin").write_bytes(b"\x01\x02\x03")
    (tmp_path / "Test" / "0" / "empty.bin").write_bytes(b"")
    ds = open_dataset(f"nmnist:{tmp_path}")
    assert len(ds) == 4 and ds.labels.tolist() == [0, 0, 1, 1] and set(ds.splits) == {"test"}
    reasons = {src.rsplit("/", 2)[-2] + "/" + src.rsplit("/", 1)[1]: why for src, why in ds.skipped}
    assert set(reasons) == {"cat/0.bin", "1/wide.bin", "0/cut.bin", "0/empty.bin"}
    assert "unknown label 'cat'" in reasons["cat/0.bin"]
    assert "outside the 34x34 sensor" in reasons["1/wide.bin"]
    assert "truncated" in reasons["0/cut.bin"]
    assert "empty" in reasons["0/empty.bin"]


def test_events_folder_with_metadata(tmp_path):
    for i in range(4):
        np.save(tmp_path / f"r{i}.npy", random_events(30, width=48, seed=i))
    _write_labels(
        tmp_path, [("r0.npy", "walk"), ("r1.npy", "run"), ("r2.npy", "1"), ("r3.npy", "0")]
    )
    meta = {
        "sensor_size": [64, 48, 2],
        "class_names": ["walk", "run"],
        "frame_spec": {"T": 4, "dt_us": 1000},
    }
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    ds = open_dataset(f"events:{tmp_path}")
    assert ds.sensor_size == (64, 48, 2) and ds.class_names == ["walk", "run"]
    assert ds.labels.tolist() == [0, 1, 1, 0]
    assert ds.frame_spec == FrameSpec(T=4, dt_us=1000)
    np.testing.assert_array_equal(ds[1][0], random_events(30, width=48, seed=1))


def test_events_folder_bad_files_are_skipped_and_counted(tmp_path, caplog):
    np.save(tmp_path / "good1.npy", random_events(40))
    np.save(tmp_path / "good2.npy", random_events(40, seed=1))
    backwards = random_events(40)
    backwards["t"][[5, 6]] = backwards["t"][[6, 5]] + np.array([0, 1])
    np.save(tmp_path / "backwards.npy", backwards)
    np.save(tmp_path / "empty.npy", np.zeros(0, dtype=EVENT_DTYPE))
    np.save(tmp_path / "unlabelled.npy", random_events(10))
    np.save(tmp_path / "strange.npy", random_events(10))
    np.save(tmp_path / "half.npy", random_events(10))
    _write_labels(
        tmp_path,
        [
            ("good1.npy", "2"),
            ("good2.npy", "0"),
            ("backwards.npy", "1"),
            ("empty.npy", "1"),
            ("strange.npy", "zebra"),
            ("half.npy", "1.5"),
            ("gone.npy", "1"),
        ],
    )
    (tmp_path / "dataset.json").write_text(json.dumps({"sensor_size": [34, 34, 2]}))
    with caplog.at_level(logging.WARNING, logger="asa_deploy.data"):
        ds = open_dataset(f"events:{tmp_path}")
    assert [s.rsplit("/", 1)[1] for s in ds.sources] == ["good1.npy", "good2.npy"]
    assert ds.class_names == ["0", "1", "2"] and ds.labels.tolist() == [2, 0]
    reasons = {src.rsplit("/", 1)[1]: why for src, why in ds.skipped}
    assert len(ds.skipped) == 6
    assert "timestamps go backwards" in reasons["backwards.npy"]
    assert "no events" in reasons["empty.npy"]
    assert "has no label" in reasons["unlabelled.npy"]
    assert "unknown label 'zebra'" in reasons["strange.npy"]
    assert "unknown label '1.5'" in reasons["half.npy"]
    assert "listed in labels.csv but the file does not exist" in reasons["gone.npy"]
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert f"skipping {tmp_path / 'strange.npy'}: unknown label" in logged
    assert "skipped 6 of 8 recordings" in logged


def test_events_folder_infers_sensor_and_frame_spec(tmp_path, caplog):
    ev = random_events(100, width=100)
    ev["x"][0], ev["y"][0] = 199, 149
    np.save(tmp_path / "a.npy", ev)
    np.savez(tmp_path / "b.npz", events=random_events(100, width=100, seed=2))
    _write_labels(tmp_path, [("a.npy", "left"), ("b.npz", "right")])
    with caplog.at_level(logging.WARNING, logger="asa_deploy.data"):
        ds = open_dataset(f"events:{tmp_path}")
    assert ds.sensor_size == (200, 150, 2)
    assert "inferred 200x150x2" in caplog.text
    assert ds.class_names == ["left", "right"] and ds.labels.tolist() == [0, 1]
    assert ds.frame_spec.T == 10 and ds.frame_spec.downsample == 4
    assert ds.frame_spec.dt_us * 10 >= 290_000


def test_all_bad_or_no_files_is_an_error_naming_the_folder(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros(0, dtype=EVENT_DTYPE))
    _write_labels(tmp_path, [("empty.npy", "0")])
    with pytest.raises(DataSpecError, match=f"none of the 1 recordings in {tmp_path} is usable"):
        open_dataset(f"events:{tmp_path}")
    (tmp_path / "sub").mkdir()
    _write_labels(tmp_path / "sub", [])
    with pytest.raises(DataSpecError, match=f"no recordings found in {tmp_path / 'sub'}"):
        open_dataset(f"events:{tmp_path / 'sub'}")


def test_official_dvsgesture_layout_through_tonic(tmp_path):
    user = tmp_path / "DVSGesture" / "ibmGestureTrain" / "user01_led"
    user.mkdir(parents=True)
    raw = np.array([[1, 2, 0, 5], [127, 3, 1, 7], [4, 5, 1, 9]], dtype=np.float64)  # x, y, p, t ms
    np.save(user / "3.npy", raw)
    np.save(user / "10.npy", raw[:2])
    ds = open_dataset(f"dvsgesture:{tmp_path}")
    assert len(ds) == 2 and sorted(ds.labels.tolist()) == [3, 10] and set(ds.splits) == {"train"}
    events, label = ds[ds.labels.tolist().index(3)]
    assert events["t"].tolist() == [5000, 7000, 9000] and events["x"].tolist() == [1, 127, 4]
    assert events["p"].tolist() == [0, 1, 1]


def test_dvsgesture_never_downloads(tmp_path):
    (tmp_path / "DVSGesture" / "ibmGestureTest").mkdir(parents=True)
    with pytest.raises(DataSpecError, match="never downloads"):
        open_dataset(f"dvsgesture:{tmp_path}")
    with pytest.raises(DataSpecError, match="neither the official release"):
        open_dataset(f"dvsgesture:{tmp_path / 'DVSGesture' / 'ibmGestureTest'}")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("mnist:/x", "unknown scheme 'mnist'; use one of:\n  nmnist:PATH"),
        ("just/a/path", "(?s)has no scheme; use one of:.*events:PATH"),
        ("events:", "names no folder"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(DataSpecError, match=message):
        open_dataset(spec)


def test_missing_folder_says_what_exists(tmp_path):
    (tmp_path / "nmnist-small").mkdir()
    with pytest.raises(DataSpecError) as info:
        open_dataset(f"nmnist:{tmp_path / 'nmnist'}")
    text = str(info.value)
    assert f"folder {tmp_path / 'nmnist'} does not exist" in text
    assert f"{tmp_path} exists and holds: nmnist-small" in text
    with pytest.raises(
        DataSpecError, match=r"has no scheme \(to read the folder .*write e.g. 'events:"
    ):
        open_dataset(str(tmp_path))


def test_synthetic_spec_uses_generator_with_seed(monkeypatch):
    calls = []

    def make_recordings(name, seed=0):
        calls.append((name, seed))
        recs = [random_events(20, width=128, seed=s) for s in range(4)]
        return types.SimpleNamespace(
            recordings=recs,
            labels=np.array([0, 1, 0, 1]),
            class_names=["a", "b"],
            sensor_size=(128, 128, 2),
            frame_spec=FrameSpec(T=3, dt_us=1000),
            name=name,
        )

    fake = types.SimpleNamespace(PRESETS={"gesture": None}, make_recordings=make_recordings)
    monkeypatch.setattr(asa_deploy.data, "synthetic", fake, raising=False)
    monkeypatch.setitem(sys.modules, "asa_deploy.data.synthetic", fake)
    ds = open_dataset("synthetic", seed=5)
    assert calls == [("gesture", 5)] and ds.spec == "synthetic:gesture"
    assert len(ds) == 4 and ds.labels.tolist() == [0, 1, 0, 1] and ds.frame_spec.T == 3
    with pytest.raises(DataSpecError, match="unknown synthetic set; available: gesture"):
        open_dataset("synthetic:nope")


# --- splits ------------------------------------------------------------------------------------


def test_stratified_split_proportions_and_determinism():
    labels = np.repeat(np.arange(4), [50, 30, 15, 5])
    train, val = stratified_split(labels, val_fraction=0.2, seed=3)
    assert len(val) == 20 and len(train) == 80
    assert np.bincount(labels[val]).tolist() == [10, 6, 3, 1]
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(100))
    assert np.all(np.diff(val) > 0) and np.all(np.diff(train) > 0)
    again = stratified_split(labels, val_fraction=0.2, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((train, val), again, strict=True))
    other = stratified_split(labels, val_fraction=0.2, seed=4)[1]
    assert not np.array_equal(val, other)


def test_stratified_split_every_class_on_both_sides():
    labels = np.array([0] * 40 + [1, 1] + [2])
    train, val = stratified_split(labels, n_val=3, seed=0)
    assert len(val) == 3
    assert set(labels[val]) == {0, 1} and set(labels[train]) == {0, 1, 2}
    tiny = stratified_split(labels, val_fraction=0.01, seed=0)[1]
    assert set(labels[tiny]) == {0, 1}  # raised to one per class with >= 2 recordings


@pytest.mark.parametrize("n_val", [1, 40])
def test_stratified_split_impossible_n_val(n_val):
    labels = np.array([0] * 10 + [1] * 30)
    with pytest.raises(DataSpecError, match=f"n_val={n_val} is impossible.*between 2 .* and 38"):
        stratified_split(labels, n_val=n_val, seed=0)


def test_files_are_decoded_once_across_epochs(tmp_path, bin40_writer, monkeypatch):
    from asa_deploy.data import FramedDataset
    from asa_deploy.data import datasets as datasets_module

    good = random_events(80)
    for digit in ("0", "1"):
        (tmp_path / "Train" / digit).mkdir(parents=True)
        for k in range(3):
            bin40_writer(tmp_path / "Train" / digit / f"{k}.bin", good["x"], good["y"], good["t"],
                         good["p"])
    calls = []
    real = datasets_module.read_bin40
    monkeypatch.setattr(datasets_module, "read_bin40", lambda p: calls.append(p) or real(p))
    ds = open_dataset(f"nmnist:{tmp_path}")
    framed = FramedDataset(ds, range(len(ds)), FrameSpec(T=4, dt_us=50_000), mode="rcs")
    for epoch in range(2):
        framed.set_epoch(epoch)
        assert all(framed[i][0].shape == (4, 2, 34, 34) for i in range(len(framed)))
    assert len(calls) == 6


# --- labels.csv (issue 9) -------------------------------------------------------------------------


def _two_recordings(folder) -> None:
    np.save(folder / "a.npy", random_events(30))
    np.save(folder / "b.npy", random_events(30, seed=1))


def test_labels_csv_with_excel_bom_blank_lines_and_quoting(tmp_path):
    _two_recordings(tmp_path)
    np.save(tmp_path / "c, d.npy", random_events(30, seed=2))
    (tmp_path / "labels.csv").write_bytes(
        "\ufeffFile,Label,notes\r\n\r\na.npy,marche,\r\n,,\r\nb.npy,\"naïve, slow\",x\r\n"
        "\"c, d.npy\",marche,\r\n".encode()
    )
    ds = open_dataset(f"events:{tmp_path}")
    assert ds.skipped == [] and ds.class_names == ["marche", "naïve, slow"]
    assert [s.rsplit("/", 1)[1] for s in ds.sources] == ["a.npy", "b.npy", "c, d.npy"]
    assert ds.labels.tolist() == [0, 1, 0]


def test_file_listed_twice_with_other_label_names_both_lines(tmp_path):
    _two_recordings(tmp_path)
    (tmp_path / "labels.csv").write_text("file,label\na.npy,1\nb.npy,0\n\n./a.npy,0\n")
    with pytest.raises(DataSpecError) as info:
        open_dataset(f"events:{tmp_path}")
    assert str(info.value) == (
        f"{tmp_path / 'labels.csv'}: a.npy is listed twice with different labels: line 2 says "
        "'1', line 5 says '0'; delete the wrong row"
    )


def test_file_listed_twice_with_same_label_is_used_once(tmp_path, caplog):
    _two_recordings(tmp_path)
    (tmp_path / "labels.csv").write_text("file,label\na.npy,1\nb.npy,0\na.npy, 1\n")
    with caplog.at_level(logging.WARNING, logger="asa_deploy.data"):
        ds = open_dataset(f"events:{tmp_path}")
    assert len(ds) == 2 and ds.labels.tolist() == [1, 0]
    assert "a.npy is listed twice with the same label (lines 2 and 4); using it once" in caplog.text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file,lable\na.npy,1\n", r"needs column 'label'; it has \['file', 'lable'\]; did you "
                                  r"mean 'lable' \(for 'label'\?\)"),
        ("a.npy,1\nb.npy,0\n", r"needs column 'file' \(or 'path'\) and 'label'.*looks like a data "
                               r"row: add the header line 'file,label'"),
        ("file,label,file\na.npy,1,a\n", r"names column\(s\) \['file'\] twice"),
        ("", r"labels.csv is empty; its first line must be the header 'file,label'"),
        ("file,label\na.npy,1\nb,c.npy,0\n", r"labels.csv line 3: 3 fields but the header "
                                             r"\(line 1\) has 2; put a file name holding a comma "
                                             r"in double quotes"),
        ("file,label\n,1\n", r"labels.csv line 2: label '1' but no file"),
        ("file,label\n../a.npy,1\n", r"labels.csv line 2: file '../a.npy' is outside the folder"),
        ("file,label\na.npy,1\n/etc/b.npy,0\n", r"line 3: file '/etc/b.npy' is outside"),
        ("file,label\nsub/../../b.npy,0\n", r"line 2: file 'sub/../../b.npy' is outside"),
    ],
)
def test_labels_csv_problems_are_named_errors(tmp_path, text, message):
    _two_recordings(tmp_path)
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(DataSpecError, match=message) as info:
        open_dataset(f"events:{tmp_path}")
    assert str(tmp_path / "labels.csv") in str(info.value)


def test_labels_csv_not_utf8(tmp_path):
    _two_recordings(tmp_path)
    (tmp_path / "labels.csv").write_text("file,label\na.npy,été\n", encoding="utf-16")
    with pytest.raises(DataSpecError, match=r"labels.csv: not UTF-8 text .*save it as 'CSV UTF-8'"):
        open_dataset(f"events:{tmp_path}")


def test_empty_and_unknown_labels_are_skipped_with_their_line(tmp_path):
    _two_recordings(tmp_path)
    np.save(tmp_path / "c.npy", random_events(30, seed=2))
    np.save(tmp_path / "d.npy", random_events(30, seed=3))
    (tmp_path / "labels.csv").write_text("file,label\na.npy,walk\nb.npy,\nc.npy,swim\nd.npy,١\n")
    (tmp_path / "dataset.json").write_text(json.dumps({"class_names": ["walk", "run"]}))
    ds = open_dataset(f"events:{tmp_path}")
    assert [s.rsplit("/", 1)[1] for s in ds.sources] == ["a.npy"]
    reasons = {src.rsplit("/", 1)[1]: why for src, why in ds.skipped}
    assert reasons["b.npy"] == "its label is empty (labels.csv line 3); fill in the class"
    assert reasons["c.npy"].startswith("unknown label 'swim' (labels.csv line 4): neither a class "
                                       "name (walk, run)")
    assert reasons["d.npy"].startswith("unknown label '١' (labels.csv line 5)")


def test_empty_label_is_no_inferred_class(tmp_path):
    _two_recordings(tmp_path)
    (tmp_path / "labels.csv").write_text("file,label\na.npy,walk\nb.npy, \n")
    ds = open_dataset(f"events:{tmp_path}")
    assert ds.class_names == ["walk"] and len(ds.skipped) == 1


def test_fractional_label_from_arrays_is_not_truncated():
    ds = EventDataset.from_arrays(
        "mem", [random_events(10), random_events(10, seed=1)], [1, 1.5],
        class_names=["a", "b"], sensor_size=(34, 34, 2), frame_spec=FrameSpec(T=2, dt_us=1000),
    )
    assert ds.labels.tolist() == [1]
    assert ds.skipped == [("mem#1", "label 1.5 is neither a class name nor an index")]


# --- dataset.json (issue 9) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{\"sensor_size\": [34, 34, 2],}", r"not valid JSON \(Expecting property name enclosed "
                                            r"in double quotes at line 1 column 29\)"),
        ("[34, 34, 2]", r"holds a JSON list, not an object"),
        ('"sensor_size"', r"holds a JSON str, not an object"),
        ('{"sensor-size": [34, 34, 2]}', r"unknown key 'sensor-size' \(did you mean "
                                         r"'sensor_size'\?\)"),
        ('{"sensor_size": [34.5, 34, 2]}', r"sensor_size \[34.5, 34, 2\] is not three integers"),
        ('{"sensor_size": ["34", 34, 2]}', r"sensor_size \['34', 34, 2\] is not three integers"),
        ('{"sensor_size": [34, 34]}', r"is not three integers \[W, H, P\]"),
        ('{"sensor_size": [0, 34, 2]}', r"sensor_size \[0, 34, 2\] is impossible"),
        ('{"sensor_size": [34, 34, 3]}', r"P \(polarity channels\) 1 or 2"),
        ('{"sensor_size": [true, 34, 2]}', r"is not three integers"),
        ('{"class_names": "abc"}', r"class_names 'abc' is not a non-empty list of names"),
        ('{"class_names": ["a", ""]}', r"is not a non-empty list of names"),
        ('{"class_names": ["a", "b", "a"]}', r"class_names lists \['a'\] more than once"),
        ('{"frame_spec": {"T": "10", "dt_us": 1000}}', r"frame_spec.T '10' is not an integer >= 1"),
        ('{"frame_spec": {"T": 0, "dt_us": 1000}}', r"frame_spec.T 0 is not an integer >= 1"),
        ('{"frame_spec": {"T": 4}}', r"frame_spec needs 'dt_us'"),
        ('{"frame_spec": {"T": 4, "dt_ms": 1}}', r"unknown key 'frame_spec.dt_ms' \(did you "
                                                 r"mean 'frame_spec.dt_us'\?\); known: T, dt_us"),
        ('{"frame_spec": {"T": 4, "dt_us": 9, "binarize": "yes"}}', r"binarize 'yes' is not true"),
        ('{"frame_spec": [4, 1000]}', r"frame_spec \[4, 1000\] is not an object"),
    ],
)
def test_bad_dataset_json_is_a_named_error(tmp_path, text, message):
    _two_recordings(tmp_path)
    _write_labels(tmp_path, [("a.npy", "0"), ("b.npy", "1")])
    (tmp_path / "dataset.json").write_text(text)
    with pytest.raises(DataSpecError, match=message) as info:
        open_dataset(f"events:{tmp_path}")
    assert f"events:{tmp_path}: {tmp_path / 'dataset.json'}: " in str(info.value)
    assert 'expected e.g. {"sensor_size": [128, 128, 2]' in str(info.value)


def test_dataset_json_with_bom_and_integer_class_names(tmp_path):
    _two_recordings(tmp_path)
    _write_labels(tmp_path, [("a.npy", "0"), ("b.npy", "1")])
    (tmp_path / "dataset.json").write_bytes(
        '\ufeff{"class_names": [0, 1], "sensor_size": [34, 34, 2]}'.encode()
    )
    ds = open_dataset(f"events:{tmp_path}")
    assert ds.class_names == ["0", "1"] and ds.labels.tolist() == [0, 1]


# --- inferred sensor size (issue 9) ---------------------------------------------------------------


def test_one_far_out_coordinate_does_not_make_a_huge_sensor(tmp_path, caplog):
    for i in range(5):
        np.save(tmp_path / f"r{i}.npy", random_events(200, seed=i))
    corrupt = random_events(200, seed=9)
    corrupt["x"][17] = 30000
    np.save(tmp_path / "r5.npy", corrupt)
    _write_labels(tmp_path, [(f"r{i}.npy", str(i % 2)) for i in range(6)])
    with caplog.at_level(logging.WARNING, logger="asa_deploy.data"):
        ds = open_dataset(f"events:{tmp_path}")
    assert ds.sensor_size == (34, 34, 2) and len(ds) == 5
    [(source, why)] = ds.skipped
    assert source == str(tmp_path / "r5.npy")
    assert why == (
        "its coordinates reach 30001x34 (x up to 30000, y up to 33), beyond 1280 pixels, larger "
        "than any common event camera, so the sensor size is not inferred from it; if the sensor "
        f'really is that large, write {tmp_path / "dataset.json"} with "sensor_size": [W, H, 2], '
        "else the file is corrupt"
    )
    assert "inferred 34x34x2" in caplog.text


def test_recording_far_beyond_the_median_extent_is_refused(tmp_path):
    for i in range(4):
        np.save(tmp_path / f"r{i}.npy", random_events(200, seed=i))
    wide = random_events(200, seed=7)
    wide["y"][3] = 400
    np.save(tmp_path / "wide.npy", wide)
    _write_labels(tmp_path, [(f"r{i}.npy", "0") for i in range(4)] + [("wide.npy", "0")])
    ds = open_dataset(f"events:{tmp_path}")
    assert ds.sensor_size == (34, 34, 2)
    assert "more than 4x the extent of the median recording (34x34)" in ds.skipped[0][1]
    (tmp_path / "dataset.json").write_text(json.dumps({"sensor_size": [34, 401, 2]}))
    assert len(open_dataset(f"events:{tmp_path}")) == 5  # a declared sensor is trusted


def test_single_recording_beyond_the_cap_asks_for_dataset_json(tmp_path):
    ev = random_events(50)
    ev["x"][0] = 30000
    np.save(tmp_path / "a.npy", ev)
    _write_labels(tmp_path, [("a.npy", "0")])
    with pytest.raises(DataSpecError, match=r"none of the 1 recordings .* is usable \(first "
                                            r"problems: .*a.npy: its coordinates reach 30001x34"
                                            r".*dataset.json"):
        open_dataset(f"events:{tmp_path}")


# --- a scheme that does not match the folder --------------------------------------------------


def _clips(folder, bin40_writer, side: int, header: str = "file,label", n: int = 6):
    """``n`` 40-bit clips whose events reach exactly ``side`` x ``side``, with a labels CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [header]
    for i in range(n):
        xs = [0, side - 1, 3]
        bin40_writer(folder / f"{i}.bs2", xs, xs, [10, 20, 30], [0, 1, 1])
        rows.append(f"{i}.bs2,{i % 2}" + ",x" * (header.count(",") - 1))
    name = "manifest.csv" if "INFERRED" in header else "labels.csv"
    (folder / name).write_text("\n".join(rows) + "\n")
    return folder


def _nothing_cached(cache) -> bool:
    """No file in the decoded-event cache folder (its data set's folder may have been probed)."""
    return not [p for p in cache.rglob("*") if p.is_file()]


def test_dvsgesture_on_an_nmnist_folder_names_the_scheme_to_use(tmp_path, bin40_writer):
    (tmp_path / "Train" / "3").mkdir(parents=True)
    bin40_writer(tmp_path / "Train" / "3" / "00001.bin", [1, 30], [2, 33], [10, 20], [0, 1])
    (tmp_path / "manifest.csv").write_text("path,split,label\nTrain/3/00001.bin,train,3\n")
    for root in (tmp_path, tmp_path / "Train"):
        with pytest.raises(DataSpecError) as err:
            open_dataset(f"dvsgesture:{root}", cache=tmp_path / "cache")
        assert str(err.value) == (
            f"dvsgesture:{root}: {root} is N-MNIST data, not DVS Gesture: it holds "
            f"{'Train/' if root == tmp_path else ''}<digit>/*.bin, N-MNIST's layout (a 34x34 "
            f"sensor); read it with nmnist:{root}"
        )
    assert not (tmp_path / "cache").exists()
    assert len(open_dataset(f"nmnist:{tmp_path}")) == 1  # the scheme it names opens it


def test_nmnist_on_a_gesture_folder_names_the_scheme_to_use(tmp_path, bin40_writer):
    clips = _clips(tmp_path / "clips", bin40_writer, 128,
                   header="file,label_0based_INFERRED,gesture_INFERRED")
    with pytest.raises(DataSpecError, match=(
        "is DVS Gesture data, not N-MNIST: its manifest.csv has DVS Gesture's column[(]s[)] "
        f"label_0based_INFERRED, gesture_INFERRED [(]a 128x128 sensor[)]; read it with "
        f"dvsgesture:{clips}$"
    )):
        open_dataset(f"nmnist:{clips}", cache=tmp_path / "cache")
    release = tmp_path / "release" / "DVSGesture" / "ibmGestureTrain"
    release.mkdir(parents=True)
    with pytest.raises(DataSpecError, match="it holds the official release"):
        open_dataset(f"nmnist:{tmp_path / 'release'}", cache=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_gesture_clips_in_a_small_corner_are_refused_before_caching(tmp_path, bin40_writer):
    clips = _clips(tmp_path / "digits", bin40_writer, 34)
    with pytest.raises(DataSpecError) as err:
        open_dataset(f"dvsgesture:{clips}", cache=tmp_path / "cache")
    assert str(err.value) == (
        f"dvsgesture:{clips}: all 5 recordings sampled across {clips} use only the top-left "
        "34x34 corner of the 128x128 sensor (every x < 34, y < 34); they fit N-MNIST's 34x34 "
        f"sensor: read them with nmnist:{clips}"
    )
    assert _nothing_cached(tmp_path / "cache")
    with pytest.raises(DataSpecError, match="top-left 50x50 corner .* read them with events:"):
        open_dataset(f"dvsgesture:{_clips(tmp_path / 'small', bin40_writer, 50)}")
    assert len(open_dataset(f"dvsgesture:{_clips(tmp_path / 'half', bin40_writer, 65)}")) == 6


def test_recordings_beyond_the_sensor_name_the_one_they_fit(tmp_path, bin40_writer):
    clips = _clips(tmp_path / "wide", bin40_writer, 100)
    with pytest.raises(DataSpecError, match=(
        "all 5 recordings sampled across .* reach beyond the 34x34 sensor [(]up to 100x100[)]; "
        f"they fit DVS Gesture's 128x128 sensor: read them with dvsgesture:{clips}$"
    )):
        open_dataset(f"nmnist:{clips}")
    bin40_writer(clips / "0.bs2", [1], [1], [5], [1])  # one that fits: the rest are bad files
    ds = open_dataset(f"nmnist:{clips}")
    assert len(ds) == 1 and len(ds.skipped) == 5
