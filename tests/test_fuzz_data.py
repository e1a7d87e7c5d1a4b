"""Property tests of the data layer's inputs (issue 9): every recording file and labels CSV either
gives exactly what was written, or a BadRecordingError / DataSpecError naming the file; never a
coerced value, never another exception.

Example counts keep the suite fast; ``HYPOTHESIS_PROFILE=fuzz`` (tests/conftest.py) runs thousands.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import re
from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from asa_deploy.data.datasets import _read_dataset_json, _read_label_csv
from asa_deploy.data.events import EVENT_DTYPE
from asa_deploy.data.readers import read_recording
from asa_deploy.errors import BadRecordingError, DataSpecError


def fuzz_settings(examples: int) -> settings:
    """``examples`` by default, more under a profile that asks for more (the fuzz profile)."""
    return settings(max_examples=max(examples, settings.default.max_examples), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """One folder reused by every example (function-scoped tmp_path does not mix with @given)."""
    return tmp_path_factory.mktemp("fuzz")


# --- .npy / .npz structured arrays ----------------------------------------------------------------

NUMERIC = ["?", "i1", "u1", "<i2", ">i2", "u2", "i4", ">u4", "i8", "u8", "f2", "f4", ">f8", "f8"]
DTYPES = [*NUMERIC, "U2", "S2", "c8", "m8[us]"]
LIMIT = {"x": 2**15 - 1, "y": 2**15 - 1, "t": 2**63 - 1}


@st.composite
def field_column(draw, name: str, n: int, plausible: bool) -> tuple[np.dtype, np.ndarray]:
    """A column for field ``name``: wild values of any dtype, or (``plausible``, or by chance)
    small whole numbers and 0/1 or -1/1 polarities of a numeric dtype, so that accepted
    recordings are exercised as much as refused ones."""
    dtype = np.dtype(draw(st.sampled_from(NUMERIC if plausible else DTYPES)))
    shape: tuple[int, ...] = (n,)
    if not plausible and draw(st.integers(0, 9)) == 0:
        shape = (n, 2)  # a sub-array field
    if dtype.kind in "iuf" and (plausible or draw(st.booleans())):
        signed = dtype.kind in "if"
        if name == "p":
            values = st.sampled_from([-1, 1] if signed and draw(st.booleans()) else [0, 1])
        else:
            values = st.integers(0, 40)
        array = draw(hnp.arrays(dtype, shape, elements=values))
    else:
        array = draw(hnp.arrays(dtype, shape))
    field_dtype = np.dtype((dtype, shape[1:])) if len(shape) > 1 else dtype
    return field_dtype, array


@st.composite
def structured_arrays(draw) -> np.ndarray:
    n = draw(st.integers(0, 12))
    plausible = draw(st.booleans())
    names = [f for f in ("x", "y", "t", "p") if plausible or draw(st.integers(0, 15)) > 0]
    names += draw(st.lists(st.sampled_from(["q", "é", "X", "time"]), unique=True, max_size=2))
    names = draw(st.permutations(names))
    columns = {name: draw(field_column(name, n, plausible and name in ("x", "y", "t", "p"))) for name in names}
    array = np.zeros(n, dtype=[(name, dt) for name, (dt, _) in columns.items()])
    for name, (_, values) in columns.items():
        array[name] = values
    return array


def expected_events(array: np.ndarray) -> dict[str, list] | None:
    """The events a reader must return for ``array``, or None when it must refuse it: an
    independent statement of the documented rules (asa_deploy/data/events.py)."""
    names = array.dtype.names or ()
    if not all(f in names for f in ("x", "y", "t", "p")):
        return None
    out = {}
    for field in ("x", "y", "t"):
        dtype = array.dtype[field]
        if dtype.shape or dtype.kind not in "iuf":
            return None
        values = array[field].tolist()  # Python ints / floats: exact comparisons
        if any(v != v or v in (float("inf"), float("-inf")) for v in values):
            return None
        if any(v != int(v) or not 0 <= int(v) <= LIMIT[field] for v in values):
            return None
        out[field] = [int(v) for v in values]
    dtype = array.dtype["p"]
    if dtype.shape or dtype.kind not in "biuf":
        return None
    values = array["p"].tolist()
    if dtype.kind == "b" or set(values) <= {0, 1}:
        out["p"] = [int(v) for v in values]
    elif set(values) <= {-1, 1}:
        out["p"] = [1 if v > 0 else 0 for v in values]
    else:
        return None
    return out


def save(path: Path, container: str, array: np.ndarray) -> None:
    """Write ``array`` as .npy, or in an .npz in one of the layouts the reader distinguishes
    (through a file object: numpy would otherwise append its own suffix)."""
    with path.open("wb") as f:
        if container == "npy":
            np.save(f, array)
        elif container == "npz-events":
            np.savez(f, events=array, other=np.arange(3))
        elif container == "npz-single":
            np.savez_compressed(f, recording=array)
        else:  # two arrays, neither named events: ambiguous
            np.savez(f, a=array, b=array)


def assert_read_matches(path: Path, expected: dict[str, list] | None) -> None:
    try:
        events = read_recording(path)
    except BadRecordingError as exc:
        assert exc.source == str(path)
        assert "allow_pickle" not in exc.problem
        assert expected is None, f"refused a valid recording: {exc.problem}"
        return
    assert expected is not None, "accepted a recording that needed coercion"
    assert events.dtype == EVENT_DTYPE
    for field in ("x", "y", "t", "p"):
        assert events[field].tolist() == expected[field], field


@fuzz_settings(300)
@given(array=structured_arrays(),
       container=st.sampled_from(["npy", "npz-events", "npz-single", "npz-two"]),
       suffix=st.sampled_from([".npy", ".npz"]))
@example(array=np.array([(1, 2, 0, 7)], dtype=[("x", "i2"), ("y", "i2"), ("t", "i8"), ("p", "i1")]),
         container="npy", suffix=".npy")  # polarity 7 used to become 1
@example(array=np.array([(16.5, 2, 0, 1)], dtype=[("x", "f8"), ("y", "i2"), ("t", "i8"),
                                                   ("p", "i1")]),
         container="npy", suffix=".npy")  # x = 16.5 used to become 16
@example(array=np.array([(40000, 2, 0, 1)], dtype=[("x", "i4"), ("y", "i2"), ("t", "i8"),
                                                    ("p", "i1")]),
         container="npz-single", suffix=".npz")  # x = 40000 used to wrap to -25536
@example(array=np.zeros(1, dtype=[("x", "i1", (2,)), ("y", "?"), ("t", "?"), ("p", "?")]),
         container="npy", suffix=".npy")  # a sub-array field crashed with a bare ValueError
def test_numpy_recordings_are_exact_or_refused(work, array, container, suffix):
    path = work / f"rec{suffix}"
    save(path, container, array)
    expected = None if container == "npz-two" else expected_events(array)
    assert_read_matches(path, expected)


@fuzz_settings(300)
@given(array=structured_arrays(), container=st.sampled_from(["npy", "npz-events"]),
       damage=st.one_of(
           st.tuples(st.just("truncate"), st.floats(0, 1)),
           st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)),
                                               min_size=1, max_size=4))),
       data=st.data())
def test_damaged_numpy_files_are_refused_by_name(work, array, container, damage, data):
    path = work / "damaged.npy"
    save(path, container, array)
    raw = bytearray(path.read_bytes())
    kind, how = damage
    if kind == "truncate":
        raw = raw[: int(how * len(raw))]
    else:
        for where, xor in how:
            raw[min(int(where * len(raw)), len(raw) - 1)] ^= xor
    path.write_bytes(bytes(raw))
    try:
        events = read_recording(path)
    except BadRecordingError as exc:
        assert exc.source == str(path) and "allow_pickle" not in exc.problem
    else:
        assert events.dtype == EVENT_DTYPE
        assert set(np.unique(events["p"]).tolist()) <= {0, 1}
        assert (events["x"] >= 0).all() and (events["y"] >= 0).all() and (events["t"] >= 0).all()


@fuzz_settings(200)
@given(content=st.binary(max_size=64))
@example(content=b"\x00garbage bytes")
@example(content=b"PK\x03\x04junk")
def test_arbitrary_bytes_are_not_a_numpy_recording(work, content):
    path = work / "junk.npy"
    path.write_bytes(content)
    with pytest.raises(BadRecordingError) as info:
        read_recording(path)
    assert info.value.source == str(path) and "allow_pickle" not in info.value.problem


# --- N-MNIST 40-bit .bin / .bs2 --------------------------------------------------------------------


def decode_bin40(raw: bytes) -> dict[str, list]:
    """The 40-bit format by its definition, one event at a time: x, y, p (bit 7 of byte 2) and a
    23-bit timestamp; y = 240 marks a timestamp overflow adding 2**13 us to later events."""
    out = {"x": [], "y": [], "t": [], "p": []}
    offset = 0
    for i in range(0, len(raw), 5):
        b = raw[i:i + 5]
        if b[1] == 240:
            offset += 2**13
            continue
        out["x"].append(b[0])
        out["y"].append(b[1])
        out["p"].append(b[2] >> 7)
        out["t"].append(((b[2] & 127) << 16 | b[3] << 8 | b[4]) + offset)
    return out


def valid_on_nmnist_sensor(ev: dict[str, list]) -> bool:
    t = ev["t"]
    return (len(t) > 0 and max(ev["x"]) < 34 and max(ev["y"]) < 34
            and all(a <= b for a, b in zip(t, t[1:], strict=False)))


bin40_contents = st.one_of(
    st.binary(max_size=120),
    st.integers(0, 24).flatmap(lambda n: st.binary(min_size=5 * n, max_size=5 * n)),
    # plausible N-MNIST events: small coordinates, increasing time
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(0, 1),
                       st.integers(0, 2**23 - 1)), max_size=24).map(
        lambda evs: b"".join(
            bytes([x, y, p << 7 | t >> 16, t >> 8 & 255, t & 255])
            for x, y, p, t in sorted(evs, key=lambda e: e[3]))),
)


@fuzz_settings(300)
@given(content=bin40_contents, cut=st.integers(0, 4), suffix=st.sampled_from([".bin", ".bs2"]),
       sensor=st.booleans())
@example(content=bytes([3, 4, 0, 0, 9]), cut=2, suffix=".bin", sensor=False)  # truncated
@example(content=bytes([3, 240, 0, 0, 9, 3, 4, 0, 0, 9]), cut=0, suffix=".bs2", sensor=True)
def test_bin40_recordings_are_exact_or_refused(work, content, cut, suffix, sensor):
    content = content[: max(0, len(content) - cut)]
    path = work / f"rec{suffix}"
    path.write_bytes(content)
    expected = decode_bin40(content) if content and len(content) % 5 == 0 else None
    if expected is not None and sensor and not valid_on_nmnist_sensor(expected):
        expected = None
    try:
        events = read_recording(path, sensor_size=(34, 34, 2) if sensor else None)
    except BadRecordingError as exc:
        assert exc.source == str(path)
        assert expected is None, f"refused a valid recording: {exc.problem}"
        if len(content) % 5:
            assert "truncated" in exc.problem
        return
    assert expected is not None
    for field in ("x", "y", "t", "p"):
        assert events[field].tolist() == expected[field], field


# --- labels.csv ------------------------------------------------------------------------------------

FILES = ["a.npy", "./a.npy", "b.npz", "sub/c.npy", "sub/../b.npz", "../up.npy", "/abs.npy", "", " ",
         "é ü.npy", "x,y.npy", 'q"uote.npy', "a.npy ", "./", "c.aedat4"]
LABELS = ["0", "1", "walk", "naïve", "", " ", "١", "1.5", "a,b", 'say "hi"', "x\ny"]
HEADERS = [("file", "label"), ("File", "LABEL"), ("path", "label"), ("file", "label", "notes"),
           ("label", "file")]
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\x00"),
               max_size=8)


@st.composite
def label_csvs(draw) -> tuple[bytes, tuple[str, ...], list[tuple[str, str, int]]]:
    """A labels CSV as Excel, pandas or a text editor might write it, and the rows in it with the
    line each starts on."""
    header = draw(st.sampled_from(HEADERS))
    rows = draw(st.lists(st.tuples(st.sampled_from(FILES) | text, st.sampled_from(LABELS) | text),
                         max_size=8))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator=newline,
                        quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])))
    writer.writerow(header)
    written = []
    for file, label in rows:
        if draw(st.integers(0, 5)) == 0:
            out.write(draw(st.sampled_from(["", ",", " , ", ",,"])) + newline)
        start = len(re.findall(r"\r\n|\r|\n", out.getvalue())) + 1
        cells = {"file": file, "path": file, "label": label, "notes": "n"}
        writer.writerow([cells[c.lower()] for c in header])
        written.append((file, label, start))
    bom = "\ufeff" if draw(st.booleans()) else ""
    return (bom + out.getvalue()).encode(), header, written


def expected_rows(written: list[tuple[str, str, int]]) -> dict | str:
    """``{name: (label, line)}`` the CSV means, or the start of the error it must raise: the
    documented rules (asa_deploy/data/datasets.py) applied row by row."""
    seen: dict[str, tuple[str, int]] = {}
    for file, label, line in written:
        file, label = file.strip(), label.strip()
        if not file:
            if label:
                return f"line {line}: label {label!r} but no file"
            continue
        name = posixpath.normpath(file)
        if posixpath.isabs(name) or name in (".", "..") or name.startswith("../"):
            return f"line {line}: file {file!r} is outside the folder"
        if name in seen and seen[name][0] != label:
            return (f"{name} is listed twice with different labels: line {seen[name][1]} says "
                    f"{seen[name][0]!r}, line {line} says {label!r}")
        seen.setdefault(name, (label, line))
    return seen


@fuzz_settings(300)
@given(csv_file=label_csvs())
@example(csv_file=(b"\xef\xbb\xbffile,label\na.npy,1\n", ("file", "label"),
                   [("a.npy", "1", 2)]))  # Excel's byte-order mark used to hide the file column
@example(csv_file=(b"file,label\na.npy,1\na.npy,7\n", ("file", "label"),
                   [("a.npy", "1", 2), ("a.npy", "7", 3)]))  # the later row used to win
def test_labels_csv_means_what_it_says_or_is_refused(work, csv_file):
    content, _, written = csv_file
    path = work / "labels.csv"
    path.write_bytes(content)
    expected = expected_rows(written)
    try:
        rows = _read_label_csv(path, ("label",))
    except DataSpecError as exc:
        assert str(exc).startswith(str(path))
        assert isinstance(expected, str), f"refused a valid labels.csv: {exc}"
        assert expected in str(exc)
        return
    assert not isinstance(expected, str), f"accepted a labels.csv that should fail: {expected}"
    assert {name: (row.label, row.line) for name, row in rows.items()} == expected


@fuzz_settings(300)
@given(content=st.binary(max_size=80) | text.map(str.encode))
@example(content=b"file,label\n\x00a.npy,1\n")
@example(content=b"file,label\n\"unterminated,1\n")
def test_any_labels_file_gives_rows_or_a_named_error(work, content):
    path = work / "labels.csv"
    path.write_bytes(content)
    try:
        rows = _read_label_csv(path, ("label",))
    except DataSpecError as exc:
        assert str(exc).startswith(str(path))
    else:
        assert all(isinstance(k, str) and isinstance(r.label, str) for k, r in rows.items())


# --- dataset.json ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2**16) | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
dataset_jsons = st.fixed_dictionaries({}, optional={
    "sensor_size": json_values | st.lists(st.integers(-2, 300), min_size=3, max_size=3),
    "class_names": json_values,
    "frame_spec": json_values | st.fixed_dictionaries(
        {"T": st.integers(-1, 20), "dt_us": json_values | st.integers(1, 10**6)},
        optional={"downsample": st.integers(0, 8), "binarize": json_values}),
})


@fuzz_settings(200)
@given(meta=dataset_jsons | json_values)
def test_dataset_json_gives_checked_values_or_a_named_error(work, meta):
    path = work / "dataset.json"
    path.write_text(json.dumps(meta))
    try:
        out = _read_dataset_json(path, "events:X")
    except DataSpecError as exc:
        assert str(exc).startswith(f"events:X: {path}: ")
        return
    if "sensor_size" in out:
        w, h, p = out["sensor_size"]
        assert [w, h, p] == meta["sensor_size"] and w >= 1 and h >= 1 and p in (1, 2)
    if "class_names" in out:
        assert len(set(out["class_names"])) == len(out["class_names"]) > 0
    if "frame_spec" in out:
        spec = out["frame_spec"]
        assert spec.T == meta["frame_spec"]["T"] >= 1 and spec.dt_us == meta["frame_spec"]["dt_us"]
