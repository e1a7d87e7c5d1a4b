"""The decoded-event disk cache (asa_deploy.data.cache): the same data as in memory, decoded once,
never trusted when it cannot be verified, and a clear word when it cannot be written."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import SUBPROCESS_TIMEOUT_S, random_events

from asa_deploy.cli import build_parser, main
from asa_deploy.data import EVENT_DTYPE, open_dataset
from asa_deploy.data import cache as cache_module
from asa_deploy.data import datasets as datasets_module
from asa_deploy.errors import DataSpecError


def _nmnist_folder(root, bin40_writer):
    """Two digits of good 40-bit files plus a truncated, an empty, an off-sensor and an unlabelled
    one (a folder that is no digit)."""
    for digit in ("0", "1"):
        (root / "Train" / digit).mkdir(parents=True)
        for k in range(3):
            ev = random_events(60, seed=10 * int(digit) + k)
            bin40_writer(root / "Train" / digit / f"{k}.bin", ev["x"], ev["y"], ev["t"], ev["p"])
    (root / "Train" / "0" / "cut.bin").write_bytes(b"\x01\x02\x03")
    (root / "Train" / "0" / "empty.bin").write_bytes(b"")
    bin40_writer(root / "Train" / "1" / "wide.bin", [40], [3], [5], [1])
    (root / "Train" / "cat").mkdir()
    bin40_writer(root / "Train" / "cat" / "0.bin", [1], [1], [5], [1])
    return f"nmnist:{root}"


def _events_folder(root):
    """An events: folder without dataset.json (sensor and frame spec inferred) with bad files."""
    root.mkdir()
    for i in range(4):
        np.save(root / f"r{i}.npy", random_events(80, width=48, seed=i))
    backwards = random_events(40)
    backwards["t"][[5, 6]] = backwards["t"][[6, 5]] + np.array([0, 1])
    np.save(root / "backwards.npy", backwards)
    np.save(root / "empty.npy", np.zeros(0, dtype=EVENT_DTYPE))
    far = random_events(40)
    far["x"][3] = 3000  # beyond any camera: refused while inferring the sensor
    np.save(root / "far.npy", far)
    (root / "garbage.npy").write_bytes(b"not numpy at all")
    rows = [f"r{i}.npy,{i % 2}" for i in range(4)] + [
        "backwards.npy,0", "empty.npy,1", "far.npy,0", "garbage.npy,1", "gone.npy,0"]
    (root / "labels.csv").write_text("file,label\n" + "\n".join(rows) + "\n")
    return f"events:{root}"


def _same(a, b) -> None:
    """Two datasets that serve the same recordings, labels, skipped files and metadata."""
    assert a.sources == b.sources and a.labels.tolist() == b.labels.tolist()
    assert a.skipped == b.skipped and a.splits == b.splits
    assert a.sensor_size == b.sensor_size and a.frame_spec == b.frame_spec
    assert a.class_names == b.class_names
    for i in range(len(a)):
        (ev_a, label_a), (ev_b, label_b) = a[i], b[i]
        assert label_a == label_b and ev_a.dtype == ev_b.dtype == EVENT_DTYPE
        np.testing.assert_array_equal(ev_a, ev_b)
        assert type(ev_b) is np.ndarray and not ev_b.flags.writeable


def _count_decoding(monkeypatch, name: str) -> list:
    """Calls of the datasets module's reader ``name`` (read_bin40 or read_recording)."""
    calls = []
    real = getattr(datasets_module, name)
    monkeypatch.setattr(datasets_module, name, lambda *a: calls.append(a[0]) or real(*a))
    return calls


def _entries(cache_dir):
    (folder,) = [p for p in cache_dir.iterdir() if p.is_dir()]
    return folder, json.loads((folder / "index.json").read_text())["recordings"]


# --- the same data -------------------------------------------------------------------------------


@pytest.mark.integration
def test_shared_nmnist_same_with_and_without_cache(shared_data, tmp_path, monkeypatch):
    spec = f"nmnist:{shared_data / 'nmnist-small'}"
    memory = open_dataset(spec)
    first = open_dataset(spec, cache=tmp_path)
    calls = _count_decoding(monkeypatch, "read_bin40")
    second = open_dataset(spec, cache=tmp_path)
    assert calls == [] and len(second) == 1000
    _same(memory, first)
    _same(memory, second)


@pytest.mark.parametrize("make", ["nmnist", "events"])
def test_same_events_labels_and_skips_with_and_without_cache(make, tmp_path, bin40_writer,
                                                              monkeypatch):
    data = tmp_path / "data"
    spec = _nmnist_folder(data, bin40_writer) if make == "nmnist" else _events_folder(data)
    memory = open_dataset(spec)
    assert len(memory.skipped) == (4 if make == "nmnist" else 5)
    first = open_dataset(spec, cache=tmp_path / "cache")
    calls = _count_decoding(monkeypatch, "read_bin40" if make == "nmnist" else "read_recording")
    checks = []
    real_check = cache_module.check_events
    monkeypatch.setattr(cache_module, "check_events", lambda *a: checks.append(a) or real_check(*a))
    second = open_dataset(spec, cache=tmp_path / "cache")
    _same(memory, first)
    _same(memory, second)
    assert calls == []  # good and bad files alike come from the cache
    assert checks == []  # and so do the results of checking them against the sensor
    if make == "events":
        assert memory.sensor_size == (48, 48, 2)  # inferred, without the far-out recording


def test_official_dvsgesture_layout_same_through_the_cache(tmp_path):
    user = tmp_path / "DVSGesture" / "ibmGestureTrain" / "user01_led"
    user.mkdir(parents=True)
    raw = np.array([[1, 2, 0, 5], [127, 3, 1, 7], [4, 5, 1, 9]], dtype=np.float64)  # x, y, p, t ms
    np.save(user / "3.npy", raw)
    np.save(user / "10.npy", raw[:2])
    spec = f"dvsgesture:{tmp_path}"
    _same(open_dataset(spec), open_dataset(spec, cache=tmp_path / "cache"))
    _same(open_dataset(spec), open_dataset(spec, cache=tmp_path / "cache"))


def test_training_with_and_without_cache_gives_the_same_run(tmp_path, bin40_writer):
    import torch

    from asa_deploy.train import TrainConfig, train

    spec = _nmnist_folder(tmp_path / "data", bin40_writer)
    config = TrainConfig(data=spec, model="nmnist-net", epochs=1, T=4, batch_size=2, n_val=2)
    runs = {}
    for name, cache in (("memory", None), ("cache", tmp_path / "cache"), ("cached", tmp_path / "cache")):
        train(config, tmp_path / name, progress=False, cache=cache)
        runs[name] = torch.load(tmp_path / name / "model.pt", weights_only=False)
    assert len(_entries(tmp_path / "cache")[1]) == 9  # the cache was used (and the bad files kept)
    for name in ("cache", "cached"):
        assert runs[name]["data"] == runs["memory"]["data"]  # split, skipped files, frame spec
        for key, weight in runs["memory"]["weights"].items():
            assert torch.equal(runs[name]["weights"][key], weight), (name, key)


def test_synthetic_data_never_touches_the_cache(tmp_path):
    ds = open_dataset("synthetic:gesture-tiny", cache=tmp_path / "cache")
    assert len(ds) > 0 and not (tmp_path / "cache").exists()


# --- never trusted ----------------------------------------------------------------------------------


def test_truncated_cache_entry_is_rebuilt(tmp_path, bin40_writer, monkeypatch, caplog):
    spec = _nmnist_folder(tmp_path / "data", bin40_writer)
    memory = open_dataset(spec)
    open_dataset(spec, cache=tmp_path / "cache")
    folder, entries = _entries(tmp_path / "cache")
    source = memory.sources[2]
    cached = folder / entries[os.path.abspath(source)]["file"]
    cached.write_bytes(cached.read_bytes()[:-7])
    calls = _count_decoding(monkeypatch, "read_bin40")
    with caplog.at_level(logging.WARNING, logger="asa_deploy.data"):
        again = open_dataset(spec, cache=tmp_path / "cache")
    assert [str(c) for c in calls] == [source]
    assert f"cache entry of {source} is truncated or unreadable" in caplog.text
    _same(memory, again)
    calls.clear()
    _same(memory, open_dataset(spec, cache=tmp_path / "cache"))  # rebuilt: trusted again
    assert calls == []


@pytest.mark.parametrize("damage", ["binary", "truncated", "array", "junk entries"])
def test_unreadable_index_starts_afresh(damage, tmp_path, bin40_writer, monkeypatch):
    spec = _nmnist_folder(tmp_path / "data", bin40_writer)
    memory = open_dataset(spec)
    open_dataset(spec, cache=tmp_path / "cache")
    folder, entries = _entries(tmp_path / "cache")
    junk = json.dumps({"decoder": cache_module.DECODER_VERSION,
                       "recordings": {source: "junk" for source in entries}})
    index = folder / "index.json"
    text = {"binary": "\udcff\x00", "truncated": index.read_text()[:-40], "array": "[1, 2]",
            "junk entries": junk}[damage]
    index.write_bytes(text.encode("utf-8", "surrogateescape"))
    calls = _count_decoding(monkeypatch, "read_bin40")
    _same(memory, open_dataset(spec, cache=tmp_path / "cache"))
    assert len(calls) == 9  # every file is decoded again (the unlabelled one never is)
    calls.clear()
    _same(memory, open_dataset(spec, cache=tmp_path / "cache"))
    assert calls == []


def test_other_decoder_version_is_rebuilt(tmp_path, bin40_writer, monkeypatch):
    spec = _nmnist_folder(tmp_path / "data", bin40_writer)
    first = open_dataset(spec, cache=tmp_path / "cache")
    monkeypatch.setattr(cache_module, "DECODER_VERSION", cache_module.DECODER_VERSION + 1)
    calls = _count_decoding(monkeypatch, "read_bin40")
    _same(first, open_dataset(spec, cache=tmp_path / "cache"))
    assert len(calls) == 9
    folder, _ = _entries(tmp_path / "cache")
    assert json.loads((folder / "index.json").read_text())["decoder"] == cache_module.DECODER_VERSION


def test_changed_source_is_decoded_again(tmp_path, bin40_writer, monkeypatch):
    spec = _nmnist_folder(tmp_path / "data", bin40_writer)
    first = open_dataset(spec, cache=tmp_path / "cache")
    touched = first.sources[1]
    stat = os.stat(touched)
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same bytes, newer mtime
    rewritten = first.sources[4]
    ev = random_events(70, seed=99)  # other events, other size
    bin40_writer(Path(rewritten), ev["x"], ev["y"], ev["t"], ev["p"])
    calls = _count_decoding(monkeypatch, "read_bin40")
    again = open_dataset(spec, cache=tmp_path / "cache")
    assert sorted(map(str, calls)) == sorted([touched, rewritten])
    np.testing.assert_array_equal(again[1][0], first[1][0])
    np.testing.assert_array_equal(again[4][0], ev)


def test_bad_file_is_counted_once_and_not_decoded_again(tmp_path, bin40_writer, monkeypatch,
                                                          caplog):
    spec = _nmnist_folder(tmp_path / "data", bin40_writer)
    first = open_dataset(spec, cache=tmp_path / "cache")
    cut = str(tmp_path / "data" / "Train" / "0" / "cut.bin")
    assert [why for src, why in first.skipped if src == cut][0].startswith("file is truncated")
    _, entries = _entries(tmp_path / "cache")
    assert entries[cut]["problem"].startswith("file is truncated")
    calls = _count_decoding(monkeypatch, "read_bin40")
    with caplog.at_level(logging.WARNING, logger="asa_deploy.data"):
        second = open_dataset(spec, cache=tmp_path / "cache")
    assert cut not in map(str, calls) and calls == []
    assert second.skipped == first.skipped and [s for s, _ in second.skipped].count(cut) == 1
    assert f"skipping {cut}: file is truncated" in caplog.text
    assert "skipped 4 of 10 recordings" in caplog.text


def test_cache_file_changed_while_in_use_is_an_error(tmp_path, bin40_writer):
    spec = _nmnist_folder(tmp_path / "data", bin40_writer)
    ds = open_dataset(spec, cache=tmp_path / "cache")
    folder, entries = _entries(tmp_path / "cache")
    np.save(folder / entries[os.path.abspath(ds.sources[0])]["file"], random_events(3))
    with pytest.raises(DataSpecError, match=f"cached events of {ds.sources[0]} changed or "
                                            "vanished while in use.*rerun the command"):
        ds[0]
    assert len(ds[1][0]) == 60


def test_full_disk_while_caching_is_a_clear_error(tmp_path, bin40_writer, monkeypatch):
    spec = _nmnist_folder(tmp_path / "data", bin40_writer)

    def no_space(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", no_space)
    with pytest.raises(DataSpecError, match=r"cannot write the decoded-event cache file .*\.npy "
                                            r"\(No space left on device\); free space in .*"
                                            "--cache-dir DIR, or pass --no-cache"):
        open_dataset(spec, cache=tmp_path / "cache")
    folder = next((tmp_path / "cache").iterdir())
    assert list(folder.iterdir()) == []  # no temporary file left behind


@pytest.mark.skipif(sys.platform == "win32", reason="no open-file limit to lift")
def test_open_file_limit_is_lifted_and_running_out_is_a_clear_error(tmp_path, bin40_writer):
    (tmp_path / "data" / "Train" / "3").mkdir(parents=True)
    for k in range(400):
        bin40_writer(tmp_path / "data" / "Train" / "3" / f"{k}.bin", [1], [2], [k], [1])
    script = f"""
import resource
from asa_deploy.data import open_dataset
from asa_deploy.errors import DataSpecError
resource.setrlimit(resource.RLIMIT_NOFILE, (100, 300))
ds = open_dataset("nmnist:{tmp_path / 'data'}", cache="{tmp_path / 'cache'}")
print(resource.getrlimit(resource.RLIMIT_NOFILE))
try:
    held = [ds[i][0] for i in range(len(ds))]  # one memory map (and open file) each
except DataSpecError as err:
    print(err)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=SUBPROCESS_TIMEOUT_S).stdout.splitlines()
    assert out[0] == "(300, 300)"
    assert "too many cached recordings in use at once" in out[1]
    assert out[1].endswith("raise the open-file limit (ulimit -n) or pass --no-cache")


# --- where the cache goes --------------------------------------------------------------------------


def test_unwritable_explicit_cache_dir_is_a_clear_error(tmp_path, bin40_writer):
    spec = _nmnist_folder(tmp_path / "data", bin40_writer)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(DataSpecError) as err:
            open_dataset(spec, cache=locked)
    finally:
        locked.chmod(0o755)
    assert str(err.value) == (
        f"cannot write the decoded-event cache in {locked} ({locked} is read-only (dr-xr-xr-x)); "
        "give a writable folder with --cache-dir DIR, or pass --no-cache to keep decoded "
        "recordings in memory")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(DataSpecError, match=f"{tmp_path / 'a_file'} is a file"):
        open_dataset(spec, cache=tmp_path / "a_file" / "cache")


def test_default_cache_in_the_user_cache_never_the_data_folder_else_memory(
        tmp_path, bin40_writer, monkeypatch, caplog):
    data = tmp_path / "data"
    spec = _nmnist_folder(data, bin40_writer)
    before = sorted(data.rglob("*"))
    memory = open_dataset(spec)
    user = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(user))
    _same(memory, open_dataset(spec, cache=True))
    assert (user / "asa_deploy").is_dir() and sorted(data.rglob("*")) == before
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    monkeypatch.setenv("XDG_CACHE_HOME", str(locked))
    try:
        with caplog.at_level(logging.WARNING, logger="asa_deploy.data"):
            fallback = open_dataset(spec, cache=True)
    finally:
        locked.chmod(0o755)
    _same(memory, fallback)
    assert list(locked.iterdir()) == [] and sorted(data.rglob("*")) == before
    warnings = [r.getMessage() for r in caplog.records if "decoded-event cache" in r.getMessage()]
    assert warnings == [
        f"cannot write a decoded-event cache in {locked / 'asa_deploy'} ({locked} is read-only "
        "(dr-xr-xr-x)); keeping every decoded recording in memory instead, which takes RAM for "
        "the whole data set in every process (each torchrun rank) and decodes it again in every "
        "run; pass --cache-dir "
        "DIR (a writable folder) to cache it, or --no-cache to choose memory"]


def test_cli_cache_options(tmp_path, bin40_writer, capsys):
    from asa_deploy.cli import _cache

    parser = build_parser()
    assert _cache(parser.parse_args(["evaluate", str(tmp_path)])) is True
    assert _cache(parser.parse_args(["simulate", str(tmp_path), "--no-cache"])) is False
    args = parser.parse_args(["fold", str(tmp_path), "--cache-dir", str(tmp_path / "c")])
    assert _cache(args) == tmp_path / "c"
    assert main(["train", "--cache-dir", "x", "--no-cache", "--out", str(tmp_path / "r")]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    spec = _nmnist_folder(tmp_path / "data", bin40_writer)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        code = main(["train", "--data", spec, "--cache-dir", str(locked), "--out",
                     str(tmp_path / "run"), "--epochs", "1", "--no-progress"])
    finally:
        locked.chmod(0o755)
    assert code == 2
    assert (f"asa-deploy train: error: cannot write the decoded-event cache in {locked}"
            in capsys.readouterr().err)
