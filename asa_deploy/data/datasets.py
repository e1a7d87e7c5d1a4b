"""Event datasets named by a URI-like spec, decoded once and kept in memory or in a disk cache.

Specs (``open_dataset``):

- ``nmnist:PATH``: N-MNIST, ``PATH/Train|Test/<digit>/*.bin`` (both splits when present), a single
  split folder ``PATH/Train`` of digit folders, or a flat folder of ``.bin`` files with ``labels.csv``.
  Any number of files (tonic's NMNIST class needs the full 70,000). Sensor 34x34x2.
- ``dvsgesture:PATH``: the official DVS128 Gesture release as tonic extracts it
  (``PATH/DVSGesture/ibmGestureTrain|ibmGestureTest/userNN_<lighting>/<label>.npy``; never
  downloaded), or a folder of 40-bit ``.bs2`` / ``.bin`` clips with ``manifest.csv`` or
  ``labels.csv``. Sensor 128x128x2, 11 classes (10 gestures and ``other``).
- ``events:PATH``: your own recordings (DVS128 Gait, DailyAction-DVS, a camera of yours), see below.
- ``synthetic:NAME`` (``synthetic`` alone means ``synthetic:gesture``): the built-in generator.

The ``events:PATH`` folder format::

    PATH/
      labels.csv      required; a header line with columns ``file`` (or ``path``) and ``label``
                      (any case; other columns are ignored), then one row per recording: file
                      relative to PATH, label a class name or a 0-based class index
      dataset.json    optional: {"sensor_size": [W, H, P],
                                 "class_names": ["walk", "run", ...],
                                 "frame_spec": {"T": 10, "dt_us": 50000, "downsample": 2}}
      *.npy | *.npz   structured arrays with fields x, y, t (integer microseconds), p (0/1),
      *.aedat4        e.g. saved with asa_deploy.data.EVENT_DTYPE; AEDAT4 needs ``pip install aedat``

Values are never coerced (asa_deploy.data.events): floats holding whole numbers are taken as
those integers and -1/1 polarities as 0/1, but a fractional, negative or non-finite value, or a
polarity other than 0/1 (-1/1), makes the recording a skipped bad file.

The labels CSV (also ``manifest.csv`` of the other schemes) is read as UTF-8, with or without the
byte-order mark Excel writes. Blank lines are ignored. A file listed twice with the same label is
used once (a warning names both lines); with different labels it is an error naming both lines,
as is a row with more fields than the header (an unquoted comma), a label without a file, and a
file outside PATH (absolute, or ``..`` leading out). A row with an empty label, or a label that
is no class, makes that recording a skipped bad file.

``dataset.json`` is checked before any decoding: unknown keys, wrong types or impossible values
(a sensor side < 1, polarities other than 1 or 2, T < 1, ...) are an error naming the file.

Without ``dataset.json`` the sensor size is inferred as the largest coordinate + 1 (logged) over
the recordings that agree with the rest: a recording reaching more than 4x the median recording's
extent (in x or y), or beyond 1280 pixels (the largest event cameras, 1280x720), is skipped as a
bad file whose message asks for ``dataset.json`` with ``sensor_size``, so one corrupt coordinate
cannot make a 30001-pixel-wide sensor. Class names are ``0..max`` when most labels are integers and
the sorted label names otherwise (labels of the other kind are then skipped as unknown), and the
frame spec uses T=10 bins over the median recording duration, downsampled to at most 64x64.

A folder that is the other built-in scheme's (``dvsgesture:`` on N-MNIST's digit folders,
``nmnist:`` on a DVS Gesture release or manifest), and recordings of another sensor (a few sampled
ones all in a small corner of DVS Gesture's 128x128, or all beyond the declared sensor) are refused
by name before anything is decoded in full or cached.

Every recording is decoded and validated once, in the constructor: a bad file (truncated, corrupt,
outside the sensor, empty, timestamps going backwards, unknown label) is logged on the
``asa_deploy.data`` logger, recorded in ``EventDataset.skipped`` and left out; only a dataset with no
usable recording at all is an error. With ``open_dataset(..., cache=...)`` the decoded recordings
and the validation results go to a disk cache (asa_deploy.data.cache) and are memory-mapped, so
RAM stays bounded and later runs neither decode nor validate again; without it they stay in RAM.
"""

from __future__ import annotations

import csv
import difflib
import json
import logging
import math
import posixpath
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TextIO

import numpy as np
import tonic.datasets

from asa_deploy.data.cache import Cached, CacheSetting, DiskCache, InMemory, decode, open_cache
from asa_deploy.data.events import SensorSize
from asa_deploy.data.framing import FrameSpec
from asa_deploy.data.readers import READERS, read_bin40, read_recording
from asa_deploy.errors import BadRecordingError, DataSpecError
from asa_deploy.progress import progress as progress_bar

logger = logging.getLogger("asa_deploy.data")

NMNIST_SENSOR: SensorSize = (34, 34, 2)
NMNIST_CLASSES = [str(d) for d in range(10)]
# Three saccades in ~306 ms: ten 25 ms bins cover most of one recording.
NMNIST_FRAME = FrameSpec(T=10, dt_us=25_000)

GESTURE_SENSOR: SensorSize = (128, 128, 2)
GESTURE_CLASSES = [
    "hand_clapping",
    "right_hand_wave",
    "left_hand_wave",
    "right_arm_clockwise",
    "right_arm_counter_clockwise",
    "left_arm_clockwise",
    "left_arm_counter_clockwise",
    "arm_roll",
    "air_drums",
    "air_guitar",
    "other",
]
# 0.8 s windows at 32x32 (pooling 4 in the chip's DVS layer), as in DVS Gesture SNN work on Speck.
GESTURE_FRAME = FrameSpec(T=16, dt_us=50_000, downsample=4)

# Inferring a sensor size (no dataset.json): the largest side any common event camera has
# (Prophesee IMX636 / Gen4: 1280x720), and how far beyond the median recording's extent one
# recording may reach before it is taken for corrupt rather than for the sensor's true size.
INFERRED_SENSOR_CAP = 1280
INFERRED_EXTENT_FACTOR = 4

SCHEMES = {
    "nmnist": "nmnist:PATH      N-MNIST folder (Train/Test/<digit>/*.bin, or .bin files + labels.csv)",
    "dvsgesture": "dvsgesture:PATH  DVS128 Gesture (tonic's extracted release, or clips + manifest.csv)",
    "events": "events:PATH      your recordings (.npy/.npz/.aedat4) + labels.csv [+ dataset.json]",
    "synthetic": "synthetic:NAME   the built-in synthetic DVS generator (default: synthetic:gesture)",
}


@dataclass(frozen=True)
class RecordingSource:
    """One recording still to decode: where it is, its raw label and how to decode it.

    ``label`` is a class index, a class name or the raw CSV text (resolved against the class
    names, so unknown labels become skipped files); ``None`` means no label was found.
    ``label_from`` says where the label was read (e.g. ``labels.csv line 4``) for messages.
    """

    source: str
    label: int | str | None
    load: Callable[[], np.ndarray]
    split: str = ""
    label_from: str = ""


@dataclass(frozen=True)
class _Plan:
    """What an opener found in a folder, before anything is decoded or cached."""

    items: list[RecordingSource]
    class_names: Sequence[str]
    sensor_size: SensorSize | None
    frame_spec: FrameSpec | None
    location: str


class EventDataset(Sequence):
    """Labelled recordings decoded once: ``dataset[i] -> (events, label)``.

    Decoding in the constructor makes every later epoch free of parsing and surfaces bad files
    before training starts. Each recording is held in memory or, with a ``cache``, as a file of
    the disk cache memory-mapped on access; either way the event arrays are read-only, so a
    transform cannot silently change the data seen by later epochs.
    """

    def __init__(
        self,
        spec: str,
        recordings: Iterable[RecordingSource],
        *,
        class_names: Sequence[str],
        sensor_size: SensorSize | None,
        frame_spec: FrameSpec | None,
        location: str,
        cache: DiskCache | None = None,
    ):
        """``sensor_size`` / ``frame_spec`` of ``None`` are inferred from the data (and logged);
        ``location`` names the folder in errors; ``cache`` (None: memory) holds the recordings."""
        self.spec = spec
        self.class_names = list(class_names)
        self.skipped: list[tuple[str, str]] = []
        recordings = list(recordings)
        class_index = {name: i for i, name in enumerate(self.class_names)}
        decoded: list[tuple[RecordingSource, InMemory | Cached, int]] = []
        for rec in progress_bar(recordings, desc=f"decoding {spec}", unit="file"):
            try:
                label = _label_index(rec.label, class_index, rec.source, rec.label_from)
                recording = (
                    cache.decode(rec.source, rec.load)
                    if cache is not None
                    else InMemory(decode(rec.source, rec.load))
                )
                if sensor_size is not None:
                    recording.check(sensor_size, rec.source)
            except BadRecordingError as exc:
                self._skip(rec.source, exc.problem)
            else:
                decoded.append((rec, recording, label))
        if sensor_size is None:
            sensor_size, refused = _infer_sensor_size(
                {rec.source: r.extent for rec, r, _ in decoded if r.extent},
                spec,
                Path(location) / "dataset.json",
            )
            for source, problem in refused.items():
                self._skip(source, problem)
            decoded = [
                d
                for d in decoded
                if d[0].source not in refused and self._valid(d[1], sensor_size, d[0].source)
            ]
        if cache is not None:
            cache.save()
        width, height, polarities = sensor_size
        self.sensor_size: SensorSize = (int(width), int(height), int(polarities))
        if not decoded:
            raise DataSpecError(self._empty_message(location, len(recordings)))
        if self.skipped:
            logger.warning(
                "%s: skipped %d of %d recordings (listed in EventDataset.skipped)",
                spec,
                len(self.skipped),
                len(recordings),
            )
        self._recordings = [recording for _, recording, _ in decoded]
        self.labels = np.array([label for _, _, label in decoded], dtype=np.int64)
        self.sources = [rec.source for rec, _, _ in decoded]
        self.splits = [rec.split for rec, _, _ in decoded]
        self.frame_spec = frame_spec or _default_frame_spec(
            [r.span for r in self._recordings], self.sensor_size, spec
        )

    @classmethod
    def from_arrays(
        cls,
        spec: str,
        recordings: Sequence[np.ndarray],
        labels: Sequence[int] | np.ndarray,
        *,
        class_names: Sequence[str],
        sensor_size: SensorSize,
        frame_spec: FrameSpec,
        sources: Sequence[str] | None = None,
    ) -> EventDataset:
        """Wrap in-memory recordings (synthetic data, tests), validated like files are."""
        if len(recordings) != len(labels):
            raise DataSpecError(
                f"{spec}: {len(recordings)} recordings but {len(labels)} labels; give one label each"
            )
        if sources is None:
            sources = [f"{spec}#{i}" for i in range(len(recordings))]
        items = [
            RecordingSource(src, label, partial(np.asarray, events))
            for src, events, label in zip(sources, recordings, labels, strict=True)
        ]
        return cls(
            spec,
            items,
            class_names=class_names,
            sensor_size=sensor_size,
            frame_spec=frame_spec,
            location=spec,
        )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self._recordings)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:  # type: ignore[override]
        return self._recordings[index].events(), int(self.labels[index])

    def __repr__(self) -> str:
        w, h, p = self.sensor_size
        return (
            f"EventDataset({self.spec!r}: {len(self)} recordings, {self.num_classes} classes, "
            f"sensor {w}x{h}x{p}, {len(self.skipped)} skipped)"
        )

    def _skip(self, source: str, problem: str) -> None:
        logger.warning("skipping %s: %s", source, problem)
        self.skipped.append((source, problem))

    def _valid(self, recording: InMemory | Cached, sensor_size: SensorSize, source: str) -> bool:
        try:
            recording.check(sensor_size, source)
        except BadRecordingError as exc:
            self._skip(source, exc.problem)
            return False
        return True

    def _empty_message(self, location: str, n_found: int) -> str:
        if n_found == 0:
            return f"{self.spec}: no recordings found in {location}"
        reasons = "; ".join(f"{src}: {why}" for src, why in self.skipped[:3])
        return (
            f"{self.spec}: none of the {n_found} recordings in {location} is usable "
            f"(first problems: {reasons}); see the warnings logged by 'asa_deploy.data'"
        )


def open_dataset(spec: str, *, seed: int = 0, cache: CacheSetting = None) -> EventDataset:
    """Open a dataset from its spec (see the module docstring); ``seed`` drives synthetic data.

    ``cache`` says where decoded recordings live (synthetic data always stays in memory):

    - None or False: in memory, decoded again by every call; nothing is written (a library call
      never writes beside your data unasked);
    - True: the disk cache in ``$XDG_CACHE_HOME/asa_deploy`` (``~/.cache/asa_deploy``), never
      in the data folder; when it cannot be written, in memory with one warning (the CLI's
      default);
    - a folder: the disk cache there; an error when it cannot be written.
    """
    scheme, sep, rest = spec.partition(":")
    scheme = scheme.strip().lower()
    if not sep and scheme == "synthetic":
        rest = ""
    elif not sep:
        hint = (
            f" (to read the folder {spec!r}, write e.g. 'events:{spec}')"
            if Path(spec).is_dir()
            else ""
        )
        raise DataSpecError(
            f"data spec {spec!r} has no scheme{hint}; use one of:\n{_scheme_list()}"
        )
    if scheme not in SCHEMES:
        raise DataSpecError(
            f"data spec {spec!r}: unknown scheme {scheme!r}; use one of:\n{_scheme_list()}"
        )
    if scheme == "synthetic":
        return _open_synthetic(rest.strip() or "gesture", seed)
    root = _existing_folder(rest, spec)
    spec = f"{scheme}:{rest}"
    _refuse_other_scheme(scheme, root, spec)
    opener = {"nmnist": _open_nmnist, "dvsgesture": _open_dvsgesture, "events": _open_events}[
        scheme
    ]
    plan = opener(spec, root)
    disk = open_cache(cache, scheme, root)
    items = plan.items
    if plan.sensor_size is not None:
        items = _refuse_other_sensor(plan, scheme, root, spec, disk)
    return EventDataset(
        spec,
        items,
        class_names=plan.class_names,
        sensor_size=plan.sensor_size,
        frame_spec=plan.frame_spec,
        location=plan.location,
        cache=disk,
    )


def _refuse_other_scheme(scheme: str, root: Path, spec: str) -> None:
    """Refuse a folder laid out as the other built-in scheme's, before anything is decoded or
    cached: both use the 40-bit format, so it would decode with the wrong sensor and classes."""
    if scheme == "dvsgesture" and (found := _nmnist_layout(root)):
        raise DataSpecError(
            f"{spec}: {root} is N-MNIST data, not DVS Gesture: {found}; read it with "
            f"nmnist:{root}"
        )
    if scheme == "nmnist" and (found := _gesture_layout(root)):
        raise DataSpecError(
            f"{spec}: {root} is DVS Gesture data, not N-MNIST: {found}; read it with "
            f"dvsgesture:{root}"
        )


def _nmnist_layout(root: Path) -> str | None:
    """How ``root`` shows N-MNIST's layout (digit folders of ``.bin`` files), or None."""
    for folder in (root, *(d for d in _subfolders(root) if d.name.lower() in ("train", "test"))):
        digits = [d for d in _subfolders(folder) if d.name in NMNIST_CLASSES]
        if any(next(d.glob("*.bin"), None) for d in digits):
            where = "" if folder == root else f"{folder.name}/"
            return f"it holds {where}<digit>/*.bin, N-MNIST's layout (a 34x34 sensor)"
    return None


def _gesture_layout(root: Path) -> str | None:
    """How ``root`` shows DVS Gesture's layout (the official release, or the shared clips'
    manifest with its gesture columns), or None."""
    if (
        any((root / "DVSGesture").glob("ibmGesture*"))
        or root.name.startswith("ibmGesture")
        or (root.name == "DVSGesture" and any(root.glob("ibmGesture*")))
    ):
        return "it holds the official release (DVSGesture/ibmGestureTrain/...), a 128x128 sensor"
    for csv_name in ("manifest.csv", "labels.csv"):
        try:
            with (root / csv_name).open(newline="", encoding="utf-8-sig") as f:
                header = [c.strip() for c in next(csv.reader(f), [])]
        except (OSError, UnicodeDecodeError, csv.Error):
            continue  # no such file, or one the opener reports itself
        gesture_columns = [
            c for c in header if c.lower() in ("gesture_inferred", "label_0based_inferred")
        ]
        if gesture_columns:
            return (
                f"its {csv_name} has DVS Gesture's column(s) {', '.join(gesture_columns)} "
                "(a 128x128 sensor)"
            )
    return None


# A few recordings, spread over the folder, show which sensor they come from (taken from the cache
# when it holds them, else decoded into memory); a scheme's 128x128 sensor of which they use at
# most this share of each side is another sensor (N-MNIST's 34x34 is 27 %), not a gesture that
# happens to stay in a corner.
SENSOR_SAMPLE = 5
CORNER_SHARE = 0.5


def _refuse_other_sensor(
    plan: _Plan, scheme: str, root: Path, spec: str, cache: DiskCache | None
) -> list[RecordingSource]:
    """Refuse recordings of another sensor than the declared one, judged on ``SENSOR_SAMPLE`` of
    them before any is cached: every one inside a small top-left corner of a scheme's sensor, or
    every one reaching beyond the sensor (each would then be skipped). Returns the items, those
    decoded here handing their events on, so that each recording is still decoded once."""
    width, height, _ = plan.sensor_size
    items = list(plan.items)
    extents = []
    for i in range(0, len(items), max(1, len(items) // SENSOR_SAMPLE))[:SENSOR_SAMPLE]:
        rec = items[i]
        try:
            recording = cache.cached(rec.source) if cache is not None else None
            if recording is None:
                recording = InMemory(decode(rec.source, rec.load))
                items[i] = replace(rec, load=recording.events)
        except BadRecordingError as exc:
            items[i] = replace(rec, load=partial(_raise, exc))
            continue  # a bad file: skipped and counted by the data set
        if recording.extent:
            extents.append(recording.extent)
    if not extents:
        return items
    used_w, used_h = max(w for w, _ in extents), max(h for _, h in extents)
    sampled = f"all {len(extents)} recordings sampled across {root}"
    if scheme == "dvsgesture" and used_w <= CORNER_SHARE * width and used_h <= CORNER_SHARE * height:
        found = (
            f"{sampled} use only the top-left {used_w}x{used_h} corner of the {width}x{height} "
            f"sensor (every x < {used_w}, y < {used_h})"
        )
    elif all(w > width or h > height for w, h in extents):
        found = f"{sampled} reach beyond the {width}x{height} sensor (up to {used_w}x{used_h})"
    else:
        return items
    if scheme != "nmnist" and used_w <= NMNIST_SENSOR[0] and used_h <= NMNIST_SENSOR[1]:
        remedy = f"they fit N-MNIST's 34x34 sensor: read them with nmnist:{root}"
    elif scheme != "dvsgesture" and used_w <= GESTURE_SENSOR[0] and used_h <= GESTURE_SENSOR[1]:
        remedy = f"they fit DVS Gesture's 128x128 sensor: read them with dvsgesture:{root}"
    elif scheme == "events":
        remedy = f"give their sensor's size as sensor_size in {root / 'dataset.json'}"
    else:
        remedy = (
            f"read them with events:{root} and a dataset.json giving their sensor's size "
            "(see asa_deploy.data.datasets)"
        )
    raise DataSpecError(f"{spec}: {found}; {remedy}")


def check_class_names(
    data_names: Sequence[str], model_names: Sequence[str], *, data: str, target: str
) -> None:
    """Refuse data whose label indices mean other classes than the model's outputs: class ``i``
    of the data must be class ``i`` of the model (the data may have fewer classes), else every
    accuracy would be computed against the wrong labels without any error."""
    data_names, model_names = list(data_names), list(model_names)
    if data_names == model_names[: len(data_names)]:
        return
    first = next(
        (i for i, name in enumerate(data_names) if i >= len(model_names) or model_names[i] != name)
    )
    there = f"{model_names[first]!r}" if first < len(model_names) else "no class"
    raise DataSpecError(
        f"{data} has classes {_shown(data_names)} but {target} was trained on "
        f"{_shown(model_names)}: label {first} is {data_names[first]!r} in the data and {there} "
        "in the model; for an events: folder, write its dataset.json with the model's "
        "class_names"
    )


def _shown(names: Sequence[str]) -> str:
    return "[" + ", ".join(map(repr, names[:12])) + (", ...]" if len(names) > 12 else "]")


def _open_nmnist(spec: str, root: Path) -> _Plan:
    split_dirs = [d for d in _subfolders(root) if d.name.lower() in ("train", "test")]
    if split_dirs:
        groups = [(d, d.name.lower()) for d in split_dirs]
    elif (root / "labels.csv").is_file():
        return _labelled_folder(
            spec, root, "labels.csv", ("label",), NMNIST_CLASSES, NMNIST_SENSOR, NMNIST_FRAME
        )
    elif _subfolders(root):
        groups = [(root, root.name.lower() if root.name.lower() in ("train", "test") else "")]
    else:
        raise DataSpecError(
            f"{spec}: {root} is not an N-MNIST folder; expected Train/<digit>/*.bin (and/or Test/), "
            "<digit>/*.bin, or .bin files with a labels.csv (columns file,label)"
        )
    items = [
        RecordingSource(str(path), class_dir.name, partial(read_bin40, path), split)
        for folder, split in groups
        for class_dir in _subfolders(folder)
        for path in sorted(class_dir.glob("*.bin"), key=lambda p: _natural_key(p.name))
    ]
    return _Plan(items, NMNIST_CLASSES, NMNIST_SENSOR, NMNIST_FRAME, str(root))


class _LocalDVSGesture(tonic.datasets.DVSGesture):
    """tonic's DVSGesture reader that never downloads: a missing release is the user's to fix."""

    def _check_exists(self) -> bool:
        return self._folder_contains_at_least_n_files_of_type(1, ".npy")

    def download(self) -> None:
        raise DataSpecError(
            f"no extracted DVS Gesture release in {Path(self.location_on_system, self.folder_name)}; "
            "extract ibmGestureTrain.tar.gz / ibmGestureTest.tar.gz there (asa_deploy never downloads)"
        )


_LocalDVSGesture.__name__ = "DVSGesture"  # tonic reads from save_to/<class name>/


def _open_dvsgesture(spec: str, root: Path) -> _Plan:
    save_to = None
    if any((root / "DVSGesture" / f).is_dir() for f in ("ibmGestureTrain", "ibmGestureTest")):
        save_to = root
    elif root.name == "DVSGesture" and any(root.glob("ibmGesture*")):
        save_to = root.parent
    if save_to is not None:
        items = []
        for train, folder in ((True, "ibmGestureTrain"), (False, "ibmGestureTest")):
            if not (save_to / "DVSGesture" / folder).is_dir():
                continue
            tonic_set = _LocalDVSGesture(str(save_to), train=train)
            split = "train" if train else "test"
            items += [
                RecordingSource(path, int(target), partial(_tonic_events, tonic_set, i), split)
                for i, (path, target) in enumerate(
                    zip(tonic_set.data, tonic_set.targets, strict=True)
                )
            ]
        return _Plan(
            items, GESTURE_CLASSES, GESTURE_SENSOR, GESTURE_FRAME, str(save_to / "DVSGesture")
        )
    for csv_name in ("manifest.csv", "labels.csv"):
        if (root / csv_name).is_file():
            return _labelled_folder(
                spec,
                root,
                csv_name,
                ("label", "label_0based_INFERRED"),
                GESTURE_CLASSES,
                GESTURE_SENSOR,
                GESTURE_FRAME,
            )
    raise DataSpecError(
        f"{spec}: {root} holds neither the official release (DVSGesture/ibmGestureTrain/... as "
        "tonic extracts it) nor .bs2/.bin clips with a manifest.csv or labels.csv (columns file,label)"
    )


def _tonic_events(tonic_set: tonic.datasets.DVSGesture, index: int) -> np.ndarray:
    """Events of one item of a tonic dataset (tonic converts the release's ms to us)."""
    return tonic_set[index][0]


def _open_events(spec: str, root: Path) -> _Plan:
    if not (root / "labels.csv").is_file():
        raise DataSpecError(
            f"{spec}: {root} has no labels.csv; an events: folder needs labels.csv (columns "
            "file,label) beside its .npy/.npz/.aedat4 recordings, and optionally dataset.json "
            "(see asa_deploy.data.datasets)"
        )
    meta = _read_dataset_json(root / "dataset.json", spec)
    rows = _read_label_csv(root / "labels.csv", ("label",))
    class_names = meta.get("class_names") or _infer_class_names(
        [row.label for row in rows.values()], spec
    )
    return _labelled_folder(
        spec,
        root,
        "labels.csv",
        ("label",),
        class_names,
        meta.get("sensor_size"),
        meta.get("frame_spec"),
        rows=rows,
    )


def _open_synthetic(name: str, seed: int) -> EventDataset:
    from asa_deploy.data import synthetic  # the generator is only needed for this scheme

    if name not in synthetic.PRESETS:
        raise DataSpecError(
            f"synthetic:{name}: unknown synthetic set; available: {', '.join(sorted(synthetic.PRESETS))}"
        )
    made = synthetic.make_recordings(name, seed=seed)
    return EventDataset.from_arrays(
        f"synthetic:{name}",
        made.recordings,
        made.labels,
        class_names=made.class_names,
        sensor_size=tuple(made.sensor_size),
        frame_spec=made.frame_spec,
    )


def _labelled_folder(
    spec: str,
    root: Path,
    csv_name: str,
    label_columns: Sequence[str],
    class_names: Sequence[str],
    sensor_size: SensorSize | None,
    frame_spec: FrameSpec | None,
    rows: dict[str, LabelRow] | None = None,
) -> _Plan:
    """A folder of recordings labelled by a CSV; files without a row and rows without a file are
    skipped and counted like corrupt files."""
    if rows is None:
        rows = _read_label_csv(root / csv_name, label_columns)
    on_disk = {
        p.relative_to(root).as_posix()
        for p in root.iterdir()
        if p.is_file() and p.suffix.lower() in READERS
    }
    items = []
    for name in sorted(on_disk | set(rows), key=_natural_key):
        path = root / name
        load = (
            partial(read_recording, path) if path.is_file() else partial(_missing, path, csv_name)
        )
        row = rows.get(name)
        items.append(
            RecordingSource(
                str(path),
                None if row is None else row.label,
                load,
                label_from="" if row is None else f"{csv_name} line {row.line}",
            )
        )
    return _Plan(items, class_names, sensor_size, frame_spec, str(root))


def _raise(exc: BadRecordingError) -> np.ndarray:
    raise exc


def _missing(path: Path, csv_name: str) -> np.ndarray:
    raise BadRecordingError(str(path), f"listed in {csv_name} but the file does not exist")


def _label_index(
    raw: int | str | None, class_index: dict[str, int], source: str, label_from: str = ""
) -> int:
    """Class index of a raw label; a missing, empty or unknown label makes its recording a bad
    file. Integer labels must be whole numbers (``1.5`` is refused, never truncated)."""
    n = len(class_index)
    where = f" ({label_from})" if label_from else ""
    if raw is None:
        raise BadRecordingError(
            source, "has no label; add a row 'file,label' for it to the labels CSV"
        )
    if isinstance(raw, str):
        text = raw.strip()
        if not text:
            raise BadRecordingError(source, f"its label is empty{where}; fill in the class")
        if text in class_index:
            return class_index[text]
        if not _is_int(text):
            names = list(class_index)
            shown = ", ".join(names[:12]) + (", ..." if n > 12 else "")
            raise BadRecordingError(
                source,
                f"unknown label {raw!r}{where}: neither a class name ({shown}) nor an integer index",
            )
        index = int(text)
    elif isinstance(raw, (int, np.integer)) and not isinstance(raw, bool):
        index = int(raw)
    else:
        raise BadRecordingError(source, f"label {raw!r}{where} is neither a class name nor an index")
    if not 0 <= index < n:
        raise BadRecordingError(
            source, f"label {index}{where} is outside the {n} classes 0..{n - 1}"
        )
    return index


@dataclass(frozen=True)
class LabelRow:
    """One labels-CSV row: the raw label text and the (1-based) line it starts on."""

    label: str
    line: int


def _read_label_csv(path: Path, label_columns: Sequence[str]) -> dict[str, LabelRow]:
    """``file -> LabelRow`` from a CSV with a ``file`` (or ``path``) column and a label column
    (the first of ``label_columns`` present); the rules are in the module docstring."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            return _parse_label_rows(f, path, label_columns)
    except UnicodeDecodeError as exc:
        raise DataSpecError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as "
            "'CSV UTF-8' (Excel) or another UTF-8 encoding"
        ) from exc
    except OSError as exc:
        raise DataSpecError(f"{path}: cannot read the labels file ({exc.strerror})") from exc
    except csv.Error as exc:
        raise DataSpecError(f"{path}: not a readable CSV file ({exc})") from exc


def _parse_label_rows(
    f: TextIO, path: Path, label_columns: Sequence[str]
) -> dict[str, LabelRow]:
    reader = csv.reader(f)
    header: list[str] | None = None
    header_line = 0
    rows: dict[str, LabelRow] = {}
    line = 1  # csv.reader's line_num counts lines consumed; a row starts after the previous one
    for cells in reader:
        start, line = line, reader.line_num + 1
        if not any(c.strip() for c in cells):
            continue  # blank line, or a row of empty cells as spreadsheets write them
        if header is None:
            header, header_line = [c.strip().lower() for c in cells], start
            file_col, label_col = _label_csv_columns(header, path, label_columns)
            continue
        extra = [c for c in cells[len(header):] if c.strip()]
        if extra:
            raise DataSpecError(
                f"{path} line {start}: {len(cells)} fields but the header (line {header_line}) "
                f"has {len(header)}; put a file name holding a comma in double quotes"
            )
        cells = cells + [""] * (len(header) - len(cells))
        file_text, label = cells[file_col].strip(), cells[label_col].strip()
        if not file_text and not label:
            continue  # only other columns filled in: no recording named
        if not file_text:
            raise DataSpecError(
                f"{path} line {start}: label {label!r} but no file; give the file name or "
                "delete the row"
            )
        name = _relative_name(file_text, path, start)
        previous = rows.get(name)
        if previous is None:
            rows[name] = LabelRow(label, start)
        elif previous.label == label:
            logger.warning(
                "%s: %s is listed twice with the same label (lines %d and %d); using it once",
                path, name, previous.line, start,
            )
        else:
            raise DataSpecError(
                f"{path}: {name} is listed twice with different labels: line {previous.line} "
                f"says {previous.label!r}, line {start} says {label!r}; delete the wrong row"
            )
    if header is None:
        raise DataSpecError(
            f"{path} is empty; its first line must be the header 'file,label', then one row "
            "per recording"
        )
    return rows


def _label_csv_columns(
    header: list[str], path: Path, label_columns: Sequence[str]
) -> tuple[int, int]:
    """Positions of the file and label columns in a (lower-cased) header line."""
    doubled = sorted({c for c in header if c and header.count(c) > 1})
    if doubled:
        raise DataSpecError(f"{path}: the header names column(s) {doubled} twice; rename one")
    wanted = [c.lower() for c in label_columns]
    file_col = next((header.index(c) for c in ("file", "path") if c in header), None)
    label_col = next((header.index(c) for c in wanted if c in header), None)
    if file_col is not None and label_col is not None:
        return file_col, label_col
    missing = []
    if file_col is None:
        missing.append("'file' (or 'path')")
    if label_col is None:
        missing.append(" or ".join(repr(c) for c in label_columns))
    hint = ""
    if any(Path(c).suffix in READERS for c in header):
        hint = "; the first line looks like a data row: add the header line 'file,label' above it"
    else:
        close = [
            f"{c!r} (for {w!r}?)"
            for c in header
            for w in ("file", *wanted)
            if c != w and difflib.get_close_matches(c, [w], n=1, cutoff=0.75)
        ]
        if close:
            hint = f"; did you mean {', '.join(close)}"
    raise DataSpecError(
        f"{path}: the header line needs column {' and '.join(missing)}; it has {header}{hint}"
    )


def _relative_name(text: str, path: Path, line: int) -> str:
    """A file of a labels CSV as a normalized path relative to the CSV's folder; one that leads
    outside it (absolute, or ``..``) is refused rather than read from elsewhere."""
    name = posixpath.normpath(text)
    if posixpath.isabs(name) or name == ".." or name.startswith("../") or name == ".":
        raise DataSpecError(
            f"{path} line {line}: file {text!r} is outside the folder {path.parent}; list "
            "recordings by their path relative to that folder"
        )
    return name


_DATASET_JSON_EXAMPLE = (
    '{"sensor_size": [128, 128, 2], "class_names": ["a", "b"], '
    '"frame_spec": {"T": 10, "dt_us": 50000, "downsample": 2}}'
)


def _read_dataset_json(path: Path, spec: str) -> dict:
    """Optional ``dataset.json``: sensor_size, class_names and frame_spec, checked here so a typo
    fails before any decoding; values are never coerced (``128.5`` or ``"128"`` is an error)."""
    if not path.exists():
        return {}

    def invalid(problem: str) -> DataSpecError:
        return DataSpecError(f"{spec}: {path}: {problem}; expected e.g. {_DATASET_JSON_EXAMPLE}")

    try:
        meta = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise invalid(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise invalid(f"cannot read it as UTF-8 text ({exc})") from exc
    if not isinstance(meta, dict):
        raise invalid(f"holds a JSON {type(meta).__name__}, not an object")
    _refuse_unknown_keys(meta, ("sensor_size", "class_names", "frame_spec"), "", invalid)
    out: dict = {}
    if "sensor_size" in meta:
        size = meta["sensor_size"]
        if not (isinstance(size, list) and len(size) == 3 and all(_is_json_int(v) for v in size)):
            raise invalid(f"sensor_size {size!r} is not three integers [W, H, P]")
        width, height, polarities = size
        if width < 1 or height < 1 or polarities not in (1, 2):
            raise invalid(
                f"sensor_size {size!r} is impossible: W and H must be >= 1 and P (polarity "
                "channels) 1 or 2"
            )
        if max(width, height) > 2**15:
            raise invalid(f"sensor_size {size!r} exceeds the largest supported side 32768")
        out["sensor_size"] = (width, height, polarities)
    if "class_names" in meta:
        names = meta["class_names"]
        ok = isinstance(names, list) and names and all(
            (isinstance(c, str) and c.strip()) or _is_json_int(c) for c in names
        )
        if not ok:
            raise invalid(f"class_names {names!r} is not a non-empty list of names")
        names = [str(c).strip() for c in names]
        doubled = sorted({c for c in names if names.count(c) > 1})
        if doubled:
            raise invalid(f"class_names lists {doubled} more than once")
        out["class_names"] = names
    if "frame_spec" in meta:
        frame = meta["frame_spec"]
        if not isinstance(frame, dict):
            raise invalid(f"frame_spec {frame!r} is not an object")
        _refuse_unknown_keys(frame, ("T", "dt_us", "downsample", "binarize"), "frame_spec.", invalid)
        for key in ("T", "dt_us"):
            if key not in frame:
                raise invalid(f"frame_spec needs {key!r}")
        for key in ("T", "dt_us", "downsample"):
            if key in frame and not (_is_json_int(frame[key]) and frame[key] >= 1):
                raise invalid(f"frame_spec.{key} {frame[key]!r} is not an integer >= 1")
        if not isinstance(frame.get("binarize", False), bool):
            raise invalid(f"frame_spec.binarize {frame['binarize']!r} is not true or false")
        out["frame_spec"] = FrameSpec(**frame)
    return out


def _refuse_unknown_keys(
    obj: dict, known: Sequence[str], prefix: str, invalid: Callable[[str], DataSpecError]
) -> None:
    for key in obj:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
            raise invalid(f"unknown key {prefix + str(key)!r}{hint}; known: {', '.join(known)}")


def _is_json_int(value) -> bool:
    """A JSON integer (``true`` is a bool in Python's json, ``2.0`` a float: both refused)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _infer_class_names(labels: Iterable[str], spec: str) -> list[str]:
    """``0..max`` when most labels are integers, else the sorted names.

    Going by the majority means a typo among integer labels (or a stray number among names)
    becomes one skipped file rather than a new class.
    """
    labels = [v for v in labels if v]  # an empty label is a skipped file, not a class
    numbers = [int(v) for v in labels if _is_int(v)]
    if 2 * len(numbers) >= len(labels):
        names = [str(i) for i in range(max(numbers, default=-1) + 1)]
    else:
        names = sorted({v for v in labels if not _is_int(v)})
    logger.info(
        "%s: no class_names in dataset.json; using %d classes %s", spec, len(names), names[:12]
    )
    return names


def _is_int(text: str) -> bool:
    """ASCII digits with an optional sign: ``int()`` alone also takes ``1_0`` and other scripts'
    digits, which would silently make ``'١'`` class 1."""
    return re.fullmatch(r"[+-]?[0-9]+", text.strip()) is not None


def _infer_sensor_size(
    extents: dict[str, tuple[int, int]], spec: str, dataset_json: Path
) -> tuple[SensorSize, dict[str, str]]:
    """Largest coordinate + 1 over the recordings that agree with the rest, two polarities; logged
    so a user can see it. ``extents``: each non-empty recording's largest x + 1 and y + 1.
    Returns the size and ``{source: problem}`` for the recordings refused: those reaching beyond
    ``INFERRED_EXTENT_FACTOR`` x the median recording's extent or beyond ``INFERRED_SENSOR_CAP``
    (module docstring)."""
    if not extents:
        return (1, 1, 2), {}
    median_w = float(np.median([w for w, _ in extents.values()]))
    median_h = float(np.median([h for _, h in extents.values()]))
    limit_w = min(INFERRED_SENSOR_CAP, INFERRED_EXTENT_FACTOR * median_w)
    limit_h = min(INFERRED_SENSOR_CAP, INFERRED_EXTENT_FACTOR * median_h)
    refused = {}
    for source, (w, h) in extents.items():
        if w <= limit_w and h <= limit_h:
            continue
        if max(w, h) > INFERRED_SENSOR_CAP:
            why = f"beyond {INFERRED_SENSOR_CAP} pixels, larger than any common event camera"
        else:
            why = (
                f"more than {INFERRED_EXTENT_FACTOR}x the extent of the median recording "
                f"({median_w:g}x{median_h:g})"
            )
        refused[source] = (
            f"its coordinates reach {w}x{h} (x up to {w - 1}, y up to {h - 1}), {why}, so the "
            "sensor size is not inferred from it; if the sensor really is that large, write "
            f'{dataset_json} with "sensor_size": [W, H, 2], else the file is corrupt'
        )
    kept = [size for source, size in extents.items() if source not in refused]
    if not kept:
        return (1, 1, 2), refused
    width = max(w for w, _ in kept)
    height = max(h for _, h in kept)
    logger.warning(
        "%s: no sensor_size in dataset.json; inferred %dx%dx2 from the largest coordinates "
        "(add %s to fix it)",
        spec,
        width,
        height,
        dataset_json,
    )
    return (width, height, 2), refused


def _default_frame_spec(
    spans: Sequence[tuple[int, int]], sensor_size: SensorSize, spec: str
) -> FrameSpec:
    """T=10 bins over the median duration (ms steps), downsampled by powers of 2 to <= 64x64;
    ``spans``: each recording's first and last timestamp."""
    durations = [last - first + 1 for first, last in spans]
    dt_us = max(1000, math.ceil(float(np.median(durations)) / 10 / 1000) * 1000)
    downsample = 1
    while max(sensor_size[:2]) // downsample > 64:
        downsample *= 2
    frame = FrameSpec(T=10, dt_us=dt_us, downsample=downsample)
    logger.info("%s: no frame_spec in dataset.json; using %s", spec, frame)
    return frame


def _existing_folder(text: str, spec: str) -> Path:
    """The spec's folder, or an error that shows what does exist nearby."""
    if not text.strip():
        raise DataSpecError(
            f"data spec {spec!r} names no folder; write e.g. '{spec.split(':')[0]}:PATH'"
        )
    path = Path(text.strip()).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise DataSpecError(f"data spec {spec!r}: {path} is a file; give the folder that holds it")
    parent = next((p for p in path.absolute().parents if p.is_dir()), None)
    found = ""
    if parent is not None:
        entries = sorted(e.name for e in parent.iterdir())
        shown = ", ".join(entries[:10]) + (
            f", ... ({len(entries)} entries)" if len(entries) > 10 else ""
        )
        found = f"; {parent} exists and holds: {shown or '(nothing)'}"
    raise DataSpecError(f"data spec {spec!r}: folder {path} does not exist{found}")


def _subfolders(folder: Path) -> list[Path]:
    """Visible subfolders in natural order."""
    dirs = [d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")]
    return sorted(dirs, key=lambda d: _natural_key(d.name))


def _natural_key(name: str) -> list[tuple[int, int | str]]:
    """Sort key that puts ``10.bs2`` after ``9.bs2``, so recording order matches file numbering."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name)]


def _scheme_list() -> str:
    return "\n".join(f"  {line}" for line in SCHEMES.values())
