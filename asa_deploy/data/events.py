"""Events as structured numpy arrays (x, y, t, p), the one convention used end to end.

Timestamps are integer microseconds; polarity is 0 (OFF) or 1 (ON); ``sensor_size`` is
``(width, height, polarities)`` as in tonic.
"""

from __future__ import annotations

import numpy as np

from asa_deploy.errors import BadRecordingError

EVENT_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")])

SensorSize = tuple[int, int, int]


def as_events(array: np.ndarray, source: str = "<array>") -> np.ndarray:
    """Convert any structured array with fields x, y, t, p to ``EVENT_DTYPE`` (a copy)."""
    names = array.dtype.names or ()
    missing = [f for f in ("x", "y", "t", "p") if f not in names]
    if missing:
        raise BadRecordingError(
            source, f"events need fields x, y, t, p; missing {missing} (has {list(names)})"
        )
    out = np.empty(len(array), dtype=EVENT_DTYPE)
    for field in ("x", "y", "t", "p"):
        out[field] = array[field]
    out["p"] = (np.asarray(array["p"]) > 0).astype(np.int8)
    return out


def check_events(events: np.ndarray, sensor_size: SensorSize, source: str) -> np.ndarray:
    """Refuse recordings that would silently corrupt training; return the events unchanged.

    Raises BadRecordingError naming ``source`` for: no events, coordinates outside the
    sensor, negative or non-monotonic timestamps.
    """
    width, height, _ = sensor_size
    if len(events) == 0:
        raise BadRecordingError(source, "the recording holds no events")
    bad_x = (events["x"] < 0) | (events["x"] >= width)
    bad_y = (events["y"] < 0) | (events["y"] >= height)
    n_out = int(np.count_nonzero(bad_x | bad_y))
    if n_out:
        raise BadRecordingError(
            source,
            f"{n_out} of {len(events)} events lie outside the {width}x{height} sensor "
            f"(x in [{events['x'].min()}, {events['x'].max()}], "
            f"y in [{events['y'].min()}, {events['y'].max()}]); wrong sensor size or corrupt file",
        )
    t = events["t"]
    if t[0] < 0:
        raise BadRecordingError(source, f"negative timestamp {int(t[0])} us")
    steps_back = np.flatnonzero(np.diff(t) < 0)
    if len(steps_back):
        i = int(steps_back[0])
        raise BadRecordingError(
            source,
            f"timestamps go backwards at event {i + 1} ({int(t[i])} -> {int(t[i + 1])} us) "
            f"and {len(steps_back) - 1} more times; sort the file by time or re-export it",
        )
    return events
