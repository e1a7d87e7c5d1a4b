"""Framing events into [T, P, H, W] count tensors: RCS training windows, the paper's test windows,
and whole recordings.

The ASA paper trains on one random consecutive slice (RCS) of ``T * dt`` per recording per epoch and
tests on several windows per recording, a recording counting as correct when more than half of its
windows are. ``FramedDataset`` serves all three modes from an in-memory ``EventDataset``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Literal, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from asa_deploy.data.events import SensorSize
from asa_deploy.data.workers import batches_of, worker_options
from asa_deploy.errors import ModelSpecError


class Recordings(Protocol):
    """What framing reads of a data set (``EventDataset`` has it); a protocol, so that framing,
    below the data sets, does not import them."""

    labels: np.ndarray
    sensor_size: SensorSize

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]: ...

FrameMode = Literal["rcs", "test", "whole"]


@dataclass(frozen=True)
class FrameSpec:
    """How a recording becomes a tensor: ``T`` bins of ``dt_us`` microseconds each.

    ``downsample`` divides coordinates (128x128 -> 32x32 with 4); ``binarize`` clips counts to 1.
    """

    T: int
    dt_us: int
    downsample: int = 1
    binarize: bool = False

    @property
    def window_us(self) -> int:
        return self.T * self.dt_us

    def to_dict(self) -> dict:
        return asdict(self)


def frame_shape(sensor_size: SensorSize, spec: FrameSpec) -> tuple[int, int, int, int]:
    """``(T, P, H // ds, W // ds)``: the one place the network input shape is derived from."""
    width, height, polarities = sensor_size
    return (spec.T, polarities, height // spec.downsample, width // spec.downsample)


def check_input_shape(
    sensor_size: SensorSize,
    downsample: int | None,
    expected: Sequence[int],
    *,
    target: str,
    data: str,
    fix: str,
) -> None:
    """Refuse data whose input (P, H, W) is not what ``target`` takes (C, H, W), before a forward
    pass fails deep inside torch ("mat1 and mat2 shapes cannot be multiplied").

    ``downsample`` is the framing's (the network sees ``H // ds``, ``W // ds``); ``None`` means raw
    events in sensor coordinates, as a chip's DVS input receives them. ``target`` names what takes
    the input (e.g. ``model 'speck-tiny'``), ``data`` the data spec, ``fix`` what to do.
    """
    width, height, polarities = (int(v) for v in sensor_size)
    if downsample is None:
        got, how = (polarities, height, width), "gives events on a sensor of"
    else:
        got = (polarities, height // downsample, width // downsample)
        how = f"framed with downsample {downsample} gives"
    want = tuple(int(v) for v in expected)
    if got != want:
        raise ModelSpecError(
            f"{target} takes {_shape_text(want)} input but {data} {how} {_shape_text(got)}; {fix}"
        )


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(v) for v in shape)


def frame_events(
    events: np.ndarray, sensor_size: SensorSize, spec: FrameSpec, t_start: int
) -> np.ndarray:
    """Count events per bin, polarity and (downsampled) pixel: float32 ``[T, P, H//ds, W//ds]``.

    Bin k holds events with ``t_start + k*dt <= t < t_start + (k+1)*dt``. Pixels beyond the last
    whole downsampled pixel (when W or H is not a multiple of ``downsample``) are dropped, so the
    shape matches ``frame_shape``. With one polarity channel both polarities are merged.
    """
    n_t, n_p, n_y, n_x = frame_shape(sensor_size, spec)
    t = events["t"]
    keep = (t >= t_start) & (t < t_start + spec.window_us)
    x = events["x"][keep].astype(np.int64) // spec.downsample
    y = events["y"][keep].astype(np.int64) // spec.downsample
    keep_xy = (x < n_x) & (y < n_y)
    x, y = x[keep_xy], y[keep_xy]
    k = (t[keep][keep_xy] - t_start) // spec.dt_us
    p = np.minimum(events["p"][keep][keep_xy].astype(np.int64), n_p - 1)
    flat = ((k * n_p + p) * n_y + y) * n_x + x
    counts = np.bincount(flat, minlength=n_t * n_p * n_y * n_x).astype(np.float32)
    if spec.binarize:
        np.minimum(counts, 1.0, out=counts)
    return counts.reshape(n_t, n_p, n_y, n_x)


def rcs_window_start(events: np.ndarray, spec: FrameSpec, rng: np.random.Generator) -> int:
    """A uniformly random window start with the whole window inside the recording.

    A recording shorter than the window starts at its first event (the tail bins stay empty).
    """
    first, last = int(events["t"][0]), int(events["t"][-1])
    latest = last + 1 - spec.window_us
    if latest <= first:
        return first
    return int(rng.integers(first, latest + 1))


def test_window_starts(events: np.ndarray, spec: FrameSpec, n_windows: int = 10) -> list[int]:
    """``n_windows`` evenly spaced window starts from the first event to the last possible start."""
    first, last = int(events["t"][0]), int(events["t"][-1])
    latest = max(first, last + 1 - spec.window_us)
    return [int(s) for s in np.linspace(first, latest, n_windows).round().astype(np.int64)]


test_window_starts.__test__ = False  # not a pytest test, though tests import it by name


def whole_recording_spec(events: np.ndarray, spec: FrameSpec) -> FrameSpec:
    """The same spec with ``dt = ceil(duration / T)``, so T bins starting at the first event cover
    every event of the recording."""
    duration = int(events["t"][-1]) - int(events["t"][0]) + 1
    return replace(spec, dt_us=max(1, math.ceil(duration / spec.T)))


class FramedDataset(Dataset):
    """Frames of an ``EventDataset`` subset: items ``(frames [T,P,H,W] float32, label, recording)``.

    ``recording`` is the position in ``indices``, so the ``n_windows`` test windows of a recording can
    be grouped for majority voting. Mode ``"rcs"`` draws one random window per recording and epoch,
    ``"test"`` serves ``n_windows`` fixed windows per recording, ``"whole"`` stretches T bins over the
    whole recording. RCS windows depend only on ``(seed, epoch, item index)``, never on worker or
    process order, so runs are reproducible with any number of DataLoader workers or ranks.
    ``set_epoch`` selects an epoch's windows in this process; persistent workers hold their own copy
    of the dataset, so training passes the epoch with each item (``asa_deploy.train.loop``).
    """

    def __init__(
        self,
        dataset: Recordings,
        indices: Sequence[int] | np.ndarray,
        spec: FrameSpec,
        mode: FrameMode = "rcs",
        n_windows: int = 10,
        seed: int = 0,
    ):
        if mode not in ("rcs", "test", "whole"):
            raise ValueError(f"mode must be 'rcs', 'test' or 'whole', got {mode!r}")
        if n_windows < 1:
            raise ValueError(f"n_windows must be >= 1, got {n_windows}")
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.spec = spec
        self.mode = mode
        self.n_windows = n_windows if mode == "test" else 1
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the RCS windows of ``epoch`` (as ``DistributedSampler.set_epoch`` does)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices) * self.n_windows

    @property
    def labels(self) -> np.ndarray:
        """Label of every item, in item order (``n_windows`` repeats per recording in test mode)."""
        return np.repeat(self.dataset.labels[self.indices], self.n_windows)

    @property
    def recordings(self) -> np.ndarray:
        """Recording position (into ``indices``) of every item, for ``majority_vote``."""
        return np.repeat(np.arange(len(self.indices)), self.n_windows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} out of range for {len(self)} items")
        recording, window = divmod(index, self.n_windows)
        events, label = self.dataset[int(self.indices[recording])]
        spec = self.spec
        if self.mode == "rcs":
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, index]))
            start = rcs_window_start(events, spec, rng)
        elif self.mode == "test":
            start = test_window_starts(events, spec, self.n_windows)[window]
        else:
            spec = whole_recording_spec(events, spec)
            start = int(events["t"][0])
        frames = frame_events(events, self.dataset.sensor_size, spec, start)
        return torch.from_numpy(frames), int(label), recording


class FrameCache(Dataset):
    """A ``FramedDataset`` whose windows never change (``"test"``, ``"whole"``), framed once and kept
    compact (``_SparseFrames``: small integer counts, sparse or dense), so that validation does not
    frame the same windows again every epoch. ``items`` (default: all) are framed when the cache is
    made, in ``workers`` spawned DataLoader processes (``asa_deploy.data.workers``); any other item
    is framed when asked for. Items equal the dataset's, bit for bit."""

    def __init__(self, dataset: FramedDataset, items: Sequence[int] | None = None, *,
                 workers: int = 0, batch_size: int = 64):
        if dataset.mode == "rcs":
            raise ValueError("RCS windows change every epoch; only test or whole windows are cached")
        self.dataset = dataset
        self._kept: dict[int, tuple[tuple[int, ...], np.ndarray, np.ndarray, int, int]] = {}
        items = list(range(len(dataset)) if items is None else items)
        batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
        # A private generator: a DataLoader iterator otherwise draws its seed from torch's global RNG,
        # which would shift the dropout masks of the training that follows.
        loader = DataLoader(_SparseFrames(dataset), batch_sampler=batches, collate_fn=list,
                            generator=torch.Generator(), **worker_options(workers, persistent=False))
        for batch in batches_of(loader):
            self._kept.update(batch)

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def labels(self) -> np.ndarray:
        return self.dataset.labels

    @property
    def recordings(self) -> np.ndarray:
        return self.dataset.recordings

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        if index not in self._kept:
            return self.dataset[index]
        shape, flat, counts, label, recording = self._kept[index]
        if flat is None:
            frames = counts.astype(np.float32)
        else:
            frames = np.zeros(math.prod(shape), dtype=np.float32)
            frames[flat] = counts
        return torch.from_numpy(frames.reshape(shape)), label, recording


class _SparseFrames(Dataset):
    """Items of a dataset as ``(index, (shape, flat indices or None, counts, label, recording))``:
    what a DataLoader worker sends back to a ``FrameCache``. The counts are kept in the smallest
    unsigned integer type that holds them exactly (float32 otherwise), of the non-empty bins only,
    or of every bin (flat None) when that is smaller: at DVS Gesture's event rates (T = 60: 28 % of
    the bins non-empty, counts below 256) one byte per bin instead of eight per non-empty bin."""

    def __init__(self, dataset: FramedDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        frames, label, recording = self.dataset[index]
        dense = _smallest_exact(frames.numpy().ravel())
        flat = np.flatnonzero(dense)
        flat = flat.astype(np.int32) if dense.size < 2**31 else flat
        if flat.size * (flat.itemsize + dense.itemsize) >= dense.nbytes:
            return index, (tuple(frames.shape), None, dense, label, recording)
        return index, (tuple(frames.shape), flat, dense[flat], label, recording)


def _smallest_exact(counts: np.ndarray) -> np.ndarray:
    """``counts`` as uint8 or uint16 when every value survives the conversion, else unchanged."""
    for dtype in (np.uint8, np.uint16):
        if counts.size and counts.min() >= 0 and counts.max() <= np.iinfo(dtype).max:
            small = counts.astype(dtype)
            if np.array_equal(small, counts):  # whole numbers only
                return small
    return counts


def majority_vote(pred: np.ndarray, recording: np.ndarray, n_classes: int) -> np.ndarray:
    """Most voted class per recording (ties go to the lowest class index).

    Returns one prediction per recording id ``0..recording.max()``.
    """
    pred = np.asarray(pred, dtype=np.int64)
    recording = np.asarray(recording, dtype=np.int64)
    n_rec = int(recording.max()) + 1 if len(recording) else 0
    votes = np.bincount(recording * n_classes + pred, minlength=n_rec * n_classes)
    return votes.reshape(n_rec, n_classes).argmax(axis=1)


def predict_classes(counts) -> np.ndarray:
    """The one definition of a window's class, float network and chip alike: the class with the
    most output spikes summed over the window (ties: lowest index), and -1 (always wrong) when the
    output is silent. ``counts`` [N, classes], NumPy or torch."""
    counts = np.asarray(counts.detach().cpu() if hasattr(counts, "detach") else counts)
    return np.where(counts.sum(axis=1) > 0, counts.argmax(axis=1), -1).astype(np.int64)


# What to do about an output layer that stays silent, by where it was seen.
SILENT_FLOAT_REMEDY = ("the network has not learned to spike at its output: train longer or at "
                       "another learning rate (--epochs, --lr), and check that --data holds what "
                       "the model is for (scheme, sensor, classes)")
SILENT_CHIP_REMEDY = ("if the float network fires (asa-deploy evaluate RUN_DIR), the chip's "
                      "thresholds or weight rounding silence it: see the fold ladder (fold.json) "
                      "and compile's notes")


def silent_output_warning(silent: int | None, windows: int | None, remedy: str,
                          where: str = "") -> str | None:
    """The loud line for an output layer silent on at least half of the windows (None when it
    is not, or the counts are unknown): each such window is ``predict_classes`` -1, always wrong,
    so the accuracy measures no network at all."""
    if not silent or not windows or 2 * silent < windows:
        return None
    place = f" ({where})" if where else ""
    return (f"WARNING: the output layer never fired on {silent} of {windows} windows{place}: a "
            f"silent window has no class and counts as wrong; {remedy}")


def recording_accuracy(pred: np.ndarray, labels: np.ndarray, recording: np.ndarray) -> float:
    """The paper's test protocol: a recording is correct when strictly more than half of its
    windows are classified correctly; returns the share of correct recordings."""
    recording = np.asarray(recording, dtype=np.int64)
    if len(recording) == 0:
        raise ValueError("recording_accuracy needs at least one window")
    correct = (np.asarray(pred) == np.asarray(labels)).astype(np.int64)
    n_rec = int(recording.max()) + 1
    hits = np.bincount(recording, weights=correct, minlength=n_rec)
    windows = np.bincount(recording, minlength=n_rec)
    present = windows > 0
    return float(np.mean(hits[present] * 2 > windows[present]))
