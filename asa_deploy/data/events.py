"""Events as structured numpy arrays (x, y, t, p), the one convention used end to end.

Timestamps are integer microseconds; polarity is 0 (OFF) or 1 (ON); ``sensor_size`` is
``(width, height, polarities)`` as in tonic.

What ``as_events`` accepts, and never coerces:

- x, y: integers (any integer dtype) in 0..32767; t: integers in 0..2**63-1 (microseconds);
- p: 0/1 (integers, or booleans), or exactly the values -1/1, which means OFF/ON and becomes 0/1;
- floats whose values are all whole numbers (``16.0``, as a float64 array written by MATLAB or
  pandas holds them) are accepted as those integers: the value is kept exactly, only its type
  changes. A fractional value (``16.5``), NaN or infinity is refused, as are strings, complex
  numbers, dates and sub-array fields.

Anything else makes the recording a bad file (``BadRecordingError`` naming it and the problem),
which a dataset skips and counts; rounding, clipping or wrapping would silently change the data.
"""

from __future__ import annotations

import numpy as np

from asa_deploy.errors import BadRecordingError

EVENT_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")])

SensorSize = tuple[int, int, int]

# Largest value each field can hold without wrapping (x, y are int16 in EVENT_DTYPE).
_MAX = {"x": 2**15 - 1, "y": 2**15 - 1, "t": 2**63 - 1}
_WHAT = {"x": "x coordinate", "y": "y coordinate", "t": "timestamp"}
_FIX = {
    "x": "coordinates must be whole pixels",
    "y": "coordinates must be whole pixels",
    "t": "timestamps must be whole microseconds (multiply seconds by 1e6, milliseconds by 1e3)",
}


def as_events(array: np.ndarray, source: str = "<array>") -> np.ndarray:
    """Convert a structured array with fields x, y, t, p to ``EVENT_DTYPE`` (a copy), exactly.

    Raises BadRecordingError naming ``source`` for any value that would change in the conversion
    (see the module docstring).
    """
    array = np.asarray(array).reshape(-1)
    names = array.dtype.names or ()
    missing = [f for f in ("x", "y", "t", "p") if f not in names]
    if missing:
        raise BadRecordingError(
            source, f"events need fields x, y, t, p; missing {missing} (has {list(names)})"
        )
    for field in ("x", "y", "t", "p"):
        _check_kind(array.dtype[field], field, source)
    out = np.empty(len(array), dtype=EVENT_DTYPE)
    for field in ("x", "y", "t"):
        out[field] = _whole_numbers(array[field], field, source)
    out["p"] = _polarity(array["p"], source)
    return out


def _check_kind(dtype: np.dtype, field: str, source: str) -> None:
    """Numbers only, one per event: strings, dates, complex and sub-array fields are refused."""
    if dtype.shape or dtype.kind not in ("biuf" if field == "p" else "iuf"):
        wanted = "0/1 (or -1/1) numbers" if field == "p" else "integer numbers"
        raise BadRecordingError(
            source,
            f"field {field!r} has type {dtype}; events need {wanted} there "
            "(save them with asa_deploy.data.EVENT_DTYPE)",
        )


def _bad(values: np.ndarray, bad: np.ndarray, source: str, what: str, why: str,
         fix: str) -> BadRecordingError:
    """The error for the first value flagged in ``bad``, with how many there are."""
    i = int(np.flatnonzero(bad)[0])
    return BadRecordingError(
        source,
        f"{what} {_show(values[i])} at event {i} {why} ({int(bad.sum())} of {len(values)} "
        f"events); {fix}",
    )


def _whole_numbers(values: np.ndarray, field: str, source: str) -> np.ndarray:
    """The field as int64 when every value is a whole number in ``0.._MAX[field]``."""
    what = _WHAT[field]
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values)
        if bad.any():
            raise _bad(values, bad, source, what, "is not a finite number",
                       "the file is corrupt or was exported with missing values")
        bad = values != np.floor(values)
        if bad.any():
            raise _bad(values, bad, source, what, "is not a whole number",
                       f"{_FIX[field]}; values are never rounded")
    if len(values) == 0:
        return values.astype(np.int64)
    if values.min().item() < 0:  # .item(): Python numbers compare exactly with any dtype
        raise _bad(values, values < 0, source, what, "is negative", f"{what}s start at 0")
    limit = _MAX[field] + 1  # a power of two, exact as a float too
    if values.max().item() >= limit:
        too_big = (values.astype(np.float64) >= float(limit) if values.dtype.kind == "f"
                   else values >= limit)
        raise _bad(values, too_big, source, what, f"is beyond the largest supported {limit - 1}",
                   "the file is corrupt or uses another unit")
    return values.astype(np.int64)


def _polarity(values: np.ndarray, source: str) -> np.ndarray:
    """0/1 polarities; exactly -1/1 (the other common convention) maps -1 to 0."""
    if values.dtype.kind == "b":
        return values.astype(np.int8)
    found = set(np.unique(values).tolist())
    if found <= {0, 1}:
        return values.astype(np.int8)
    if found <= {-1, 1}:
        return (values > 0).astype(np.int8)
    numbers = sorted(v for v in found if v == v)  # NaN is shown by _bad, not listed
    shown = ", ".join(_show(v) for v in numbers[:8]) + (", ..." if len(numbers) > 8 else "")
    raise _bad(values, ~np.isin(values, (0, 1)), source, "polarity", "is not 0 or 1",
               f"values found: {shown}; polarities must be 0/1 or exactly -1/1 and are never "
               "clipped: re-export the file with p in {0, 1}")


def _show(value) -> str:
    """A number as written: ``7`` for 7.0, ``16.5`` for 16.5."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value)


def check_events(events: np.ndarray, sensor_size: SensorSize, source: str) -> np.ndarray:
    """Refuse recordings that would silently corrupt training; return the events unchanged.

    Raises BadRecordingError naming ``source`` for: no events, coordinates outside the
    sensor, polarities other than 0/1, negative or non-monotonic timestamps.
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
    bad_p = (events["p"] != 0) & (events["p"] != 1)
    if bad_p.any():
        i = int(np.flatnonzero(bad_p)[0])
        raise BadRecordingError(
            source,
            f"polarity {int(events['p'][i])} at event {i} ({int(bad_p.sum())} events); "
            "polarities must be 0 or 1",
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
