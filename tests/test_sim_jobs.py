"""``simulate --jobs`` and ``camera --replay A B --jobs``: the simulators in worker processes give
exactly what one process gives (every count in ``sim.json``, the monitor file, each file's camera
decisions), only the timing differs; ``--jobs`` is refused while parsing unless it is a positive
integer, and with ``--realtime`` or ``--device``."""

from __future__ import annotations

import json
import logging
import os
import pickle
import weakref
from pathlib import Path

import numpy as np
import pytest

from asa_deploy.chip import sim
from asa_deploy.chip.config import ChipConfig
from asa_deploy.chip.monitor import count_dtype
from asa_deploy.chip.sim import EventWindow, parallel
from asa_deploy.chip.sim.parallel import CHUNK_BYTES, plan_chunks, process_pool
from asa_deploy.chip.sim.window import MappedEvents, by_reference
from asa_deploy.chip.simulate import event_windows
from asa_deploy.cli import main
from asa_deploy.data import open_dataset
from asa_deploy.data.events import EVENT_DTYPE
from asa_deploy.errors import BadRecordingError, DataSpecError
from asa_deploy.train import TrainConfig, train

TIMING = {"wall_seconds", "events_per_second", "synops_per_second", "jobs", "mean_decision_ms",
          "real_time_factor", "decision_ms", "decision_seconds", "decision_speed", "written_utc"}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A 1-epoch speck-tiny run, compiled; the thresholds of its later cores divided by 10, as such a
    run is silent at its output, and windows should differ in class and latency here."""
    out = tmp_path_factory.mktemp("jobs")
    train(TrainConfig(data="synthetic:gesture-tiny", model="speck-tiny", T=5, epochs=1, batch_size=4,
                      eval_windows=2, seed=0, params={"c": 4, "fc": 8}), out, progress=False,
          verbose=False)
    assert main(["compile", str(out), "--chip", "speck2f", "--bias", "drop"]) == 0
    config = ChipConfig.load(out / "chip_config.json")
    for core in config.cores[2:]:
        core.threshold_high = max(1, core.threshold_high // 10)
    config.save(out / "chip_config.json")
    return out


def untimed(value):
    """``value`` without its timing and write-time fields, at any depth."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def simulate(run: Path, jobs: int, monitor: Path, extra: list[str], capsys) -> dict:
    assert main(["simulate", str(run), *extra, "--monitor", "all", "--monitor-out", str(monitor),
                 "--jobs", str(jobs), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["jobs"] == jobs
    engine = extra[extra.index("--engine") + 1]
    return json.loads((run / "sim.json").read_text())[engine]


@pytest.mark.parametrize("extra", [["--engine", "fast", "--windows", "2"],
                                   ["--engine", "exact", "--windows", "2"],
                                   ["--engine", "exact", "--whole-recordings"]],
                         ids=["fast", "exact", "exact-whole"])
def test_simulate_with_two_jobs_equals_one(run, tmp_path, extra, capsys):
    one = simulate(run, 1, tmp_path / "one.npz", extra, capsys)
    two = simulate(run, 2, tmp_path / "two.npz", extra, capsys)
    assert untimed(two) == untimed(one)
    assert sum(one["spikes_per_core"]["total"].values()) > 0 and one["silent_windows"] < one["n_windows"]
    with np.load(tmp_path / "one.npz") as a, np.load(tmp_path / "two.npz") as b:
        assert sorted(a) == sorted(b) and "core4" in a
        for key in a:
            if key == "provenance":  # the same but for the time it was written
                assert untimed(json.loads(str(a[key]))) == untimed(json.loads(str(b[key])))
            else:
                assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
        assert int(b["core0"].sum()) == one["spikes_per_core"]["total"]["0"]


def test_chunks_are_contiguous_cover_every_window_and_hold_a_bounded_share_of_the_events():
    def ref(i: int) -> MappedEvents:  # a cached recording of 8 MiB (plan_chunks reads no file)
        return MappedEvents(f"rec{i}.npy", 128, 8 * 2**20 // EVENT_DTYPE.itemsize, 0, 0)

    windows = [EventWindow(ref(0), 0, 1, 1) for _ in range(3)]  # three windows of one recording
    windows += [EventWindow(ref(i), 0, 1, 1) for i in range(1, 200)]

    def held(part: range, window_bytes: int) -> int:
        return sum(r.nbytes for r in {windows[i].events for i in part}) + window_bytes * len(part)

    for window_bytes in (0, 2**20):
        parts = plan_chunks(windows, 1, window_bytes)
        assert [i for part in parts for i in part] == list(range(len(windows)))
        assert all(held(part, window_bytes) <= CHUNK_BYTES for part in parts)
    assert plan_chunks(windows, 1)[0] == range(0, 10)  # 8 recordings: the first one counts once
    assert len(plan_chunks(windows, 1)) == 25 == len(plan_chunks(windows, 2))
    assert [len(p) for p in plan_chunks(windows[:8], 2)] == [3, 1, 1, 1, 1, 1]  # at least 2 x 4
    assert plan_chunks(windows[:8], 1, CHUNK_BYTES) == [range(i, i + 1) for i in range(8)]
    one = np.zeros(100, dtype=EVENT_DTYPE)  # in memory: the same array is the same recording
    two = [EventWindow(one, 0, 1, 1), EventWindow(one, 5, 1, 1), EventWindow(one.copy(), 0, 1, 1)]
    assert plan_chunks(two, 1) == [range(0, 2), range(2, 3)]
    assert plan_chunks([], 4) == []


def test_more_jobs_than_cores_is_allowed_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr("asa_deploy.chip.sim.parallel.os.cpu_count", lambda: 1)
    with caplog.at_level(logging.WARNING, logger="asa_deploy.simulate"):
        process_pool(3).shutdown()  # workers start only when work is submitted
    assert "3 jobs on 1 CPU cores: jobs share cores, which costs time; use --jobs 1 or fewer" in caplog.text


def recordings(folder: Path, count: int) -> list[Path]:
    """The first ``count`` recordings of gesture-tiny as .npy files (128x128, as the run's input)."""
    dataset = open_dataset("synthetic:gesture-tiny")
    paths = []
    for i in range(count):
        np.save(folder / f"rec{i}.npy", dataset[i][0])
        paths.append(folder / f"rec{i}.npy")
    return paths


def camera(run: Path, files: list[Path], jobs: int) -> dict:
    assert main(["camera", str(run), "--replay", *map(str, files), "--jobs", str(jobs), "--json"]) == 0
    return json.loads((run / "camera.json").read_text())


def test_camera_replays_several_files_in_parallel_as_one_by_one(run, tmp_path, capsys):
    files = recordings(tmp_path, 2)
    parallel, sequential = camera(run, files, 2), camera(run, files, 1)
    assert parallel["source"] == "replay of 2 recordings (exact simulator)"
    assert untimed(parallel) == untimed(sequential)
    assert [r["file"] for r in parallel["recordings"]] == list(map(str, files))
    assert parallel["windows"] == sum(r["windows"] for r in parallel["recordings"]) > 2
    for path, entry in zip(files, parallel["recordings"], strict=True):
        alone = camera(run, [path], 1)  # the one-file layout: decisions at the top level
        assert alone["source"] == f"replay of {path} (exact simulator)"
        assert untimed(alone["decisions"]) == untimed(entry["decisions"])
        assert {k: alone[k] for k in ("windows", "predictions", "silent_windows")} == \
               {k: entry[k] for k in ("windows", "predictions", "silent_windows")}
        assert alone["recording_seconds"] == entry["recording_seconds"]
        assert alone["real_time_factor"] == alone["recording_seconds"] / alone["wall_seconds"]
    assert any(d["prediction"] >= 0 for r in parallel["recordings"] for d in r["decisions"])
    # one real-time factor for any --jobs: all recorded seconds over the command's wall clock
    for summary in (parallel, sequential):
        assert summary["recording_seconds"] == sum(r["recording_seconds"] for r in summary["recordings"])
        assert summary["real_time_factor"] == summary["recording_seconds"] / summary["wall_seconds"]
        assert summary["wall_seconds"] >= max(r["wall_seconds"] for r in summary["recordings"])
    capsys.readouterr()


def test_a_bad_recording_error_survives_the_way_back_from_a_worker():
    """A worker's exception is pickled to the parent: the file and the problem must come back."""
    err = pickle.loads(pickle.dumps(BadRecordingError("rec1.npy", "not a numpy file")))
    assert isinstance(err, BadRecordingError) and (err.source, err.problem) == ("rec1.npy", "not a numpy file")
    assert str(err) == "rec1.npy: not a numpy file"


@pytest.mark.parametrize("argv", [["simulate", "{run}", "--jobs", "0"],
                                  ["camera", "{run}", "--replay", "{file}", "--jobs", "0"],
                                  ["simulate", "{run}", "--jobs", "two"]])
def test_jobs_must_be_a_positive_integer(argv, tmp_path, capsys):
    (tmp_path / "rec.npy").write_bytes(b"")
    argv = [a.format(run=tmp_path, file=tmp_path / "rec.npy") for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"asa-deploy {argv[0]}: error: argument --jobs: must be a positive integer, got " in err
    assert "Traceback" not in err


def test_camera_refuses_jobs_with_realtime_or_a_device(tmp_path, capsys):
    (tmp_path / "rec.npy").write_bytes(b"")
    assert main(["camera", str(tmp_path), "--replay", str(tmp_path / "rec.npy"), "--realtime",
                 "--jobs", "2"]) == 2
    assert ("asa-deploy camera: error: --realtime paces each replay to the wall clock, one file after "
            "another; --jobs would play them at once: drop --jobs or --realtime") in capsys.readouterr().err
    assert main(["camera", str(tmp_path), "--device", "speck2fdevkit:0", "--jobs", "2"]) == 2
    assert "a device is one camera: drop --jobs" in capsys.readouterr().err


def events_folder(folder: Path, count: int) -> str:
    """An ``events:`` folder of the first ``count`` gesture-tiny recordings, with its classes."""
    tiny = open_dataset("synthetic:gesture-tiny")
    files = recordings(folder, count)
    (folder / "labels.csv").write_text("file,label\n" + "".join(
        f"{path.name},{tiny.labels[i]}\n" for i, path in enumerate(files)))
    (folder / "dataset.json").write_text(json.dumps({"sensor_size": list(tiny.sensor_size),
                                                     "class_names": tiny.class_names}))
    return f"events:{folder}"


def test_cached_recordings_go_to_workers_as_file_references(tmp_path):
    """Pickled, a cached recording would carry every event to a worker (1.1 GB per chunk at DVS
    Gesture's size with 2 jobs, benchmarks/scale.py); its reference is its file, offset and length."""
    spec = events_folder(tmp_path, 3)
    events, _ = open_dataset(spec, cache=tmp_path / "cache")[0]
    sent = by_reference(events)
    assert isinstance(sent, MappedEvents) and sent.count == len(events) > 1000
    assert len(pickle.dumps(sent)) < 600 < events.nbytes
    assert np.array_equal(sent.load(), events)
    part = events[5:17]
    assert by_reference(part).offset == sent.offset + 5 * events.itemsize
    assert np.array_equal(by_reference(part).load(), part)
    in_memory, _ = open_dataset(spec)[0]  # no cache: the events travel themselves
    assert by_reference(in_memory) is in_memory
    os.utime(sent.path, ns=(sent.mtime_ns + 10**9, sent.mtime_ns + 10**9))  # rewritten meanwhile
    with pytest.raises(DataSpecError, match=r"the cached events changed or vanished while simulating "
                                            r"\(it was rewritten\); rerun the command"):
        sent.load()


def test_two_jobs_on_cached_recordings_equal_one(run, tmp_path, capsys):
    spec, cache = events_folder(tmp_path, 6), str(tmp_path / "cache")
    results = []
    for jobs in (1, 2):
        assert main(["simulate", str(run), "--data", spec, "--cache-dir", cache, "--engine", "exact",
                     "--windows", "2", "--jobs", str(jobs), "--json"]) == 0
        printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        results.append(json.loads(Path(printed["file"]).read_text())["exact"])
    assert untimed(results[1]) == untimed(results[0])
    assert results[0]["n_windows"] == 12 and results[0]["input_events"] > 0


def test_simulate_maps_the_cached_recordings_of_one_chunk_at_a_time(run, tmp_path, monkeypatch,
                                                                     capsys):
    """Windows holding their mapped events kept every page read resident: 20.6 GB with one job over
    DVS Gesture's size (benchmarks/scale.py). They hold file references, and each chunk's
    recordings are mapped while it is simulated; here a chunk is one window."""
    spec, cache = events_folder(tmp_path, 6), str(tmp_path / "cache")
    monkeypatch.setattr("asa_deploy.chip.sim.parallel.CHUNK_BYTES", 1)
    alive: list[weakref.ref] = []
    at_load: list[int] = []  # recordings mapped at each load, this one included
    load = MappedEvents.load

    def spy(self: MappedEvents) -> np.ndarray:
        events = load(self)
        alive[:] = [r for r in alive if r() is not None] + [weakref.ref(events)]
        at_load.append(len(alive))
        return events

    monkeypatch.setattr(MappedEvents, "load", spy)
    for extra in (["--engine", "exact", "--windows", "2"], ["--engine", "fast", "--whole-recordings"]):
        assert main(["simulate", str(run), "--data", spec, "--cache-dir", cache, *extra,
                     "--monitor", "all", "--json"]) == 0
        printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert printed["input_events"] > 0 and Path(printed["monitor_file"]).is_file()
    assert at_load == [1] * (12 + 6)  # a chunk per window, then per whole recording: each alone
    assert not list(run.glob(".monitor-spool-*"))  # the spooled counts are gone


@pytest.mark.parametrize("engine", ["fast", "exact"])
def test_chunked_simulation_with_spooled_monitor_counts_equals_one_simulate_call(
        run, tmp_path, monkeypatch, engine, capsys):
    spec, cache = events_folder(tmp_path, 4), str(tmp_path / "cache")
    config = ChipConfig.load(run / "chip_config.json")
    windows, _ = event_windows(config, spec, windows=2, cache=cache)
    whole = sim.simulate(config, windows, engine, monitor=config.core_ids())
    monkeypatch.setattr("asa_deploy.chip.sim.parallel.CHUNK_BYTES", 1)
    out = tmp_path / "monitor.npz"
    assert main(["simulate", str(run), "--data", spec, "--cache-dir", cache, "--engine", engine,
                 "--windows", "2", "--monitor", "all", "--monitor-out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert untimed(whole.to_dict()) == untimed({k: printed[k] for k in whole.to_dict()})
    assert printed["n_windows"] == 8 and printed["input_events"] > 0
    with np.load(out) as saved:
        for core, counts in whole.monitor.items():
            expected = counts.astype(count_dtype(int(counts.max(initial=0))))
            assert saved[f"core{core}"].dtype == expected.dtype
            assert np.array_equal(saved[f"core{core}"], expected), core
        assert int(saved["core0"].sum()) > 0


def test_with_two_jobs_the_parent_maps_no_events_and_holds_no_chunk_counts_it_handed_on(
        run, tmp_path, monkeypatch):
    spec, cache = events_folder(tmp_path, 4), str(tmp_path / "cache")
    config = ChipConfig.load(run / "chip_config.json")
    windows, _ = event_windows(config, spec, windows=2, cache=cache, references=True)
    assert all(isinstance(w.events, MappedEvents) for w in windows) and len(windows) == 8
    monkeypatch.setattr(MappedEvents, "load", lambda self: pytest.fail("the parent mapped events"))
    handed: list[weakref.ref] = []
    alive: list[int] = []  # at each chunk, arrays of earlier chunks still alive

    def monitor_to(chunk: int, counts: dict) -> None:
        alive.append(sum(r() is not None for r in handed))
        handed.extend(weakref.ref(a) for a in counts.values())

    result = parallel.simulate_parallel(config, windows, "exact", 2, monitor=config.core_ids(),
                                        monitor_to=monitor_to)
    assert result.monitor == {} and result.recordings == [w.recording for w in windows]
    assert len(alive) >= 4 and max(alive) == 0
