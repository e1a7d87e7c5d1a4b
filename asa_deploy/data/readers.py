"""Decoders from event-camera files to ``EVENT_DTYPE`` arrays.

Each reader returns events in integer microseconds and raises ``BadRecordingError(path, problem)``
for a file it cannot trust, so a dataset can skip and count it instead of crashing mid-epoch.
tonic does the actual parsing where it has a reader (N-MNIST 40-bit binary, AEDAT4); this module adds
the checks tonic leaves out (truncated files, missing optional packages, wrong array layouts) and
``as_events``'s value checks: a value is never rounded, clipped or wrapped to fit (events.py).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tonic.io

from asa_deploy.data.events import EVENT_DTYPE, SensorSize, as_events, check_events
from asa_deploy.errors import BadRecordingError

# One N-MNIST / ATIS event: x (8 bit), y (8 bit), polarity (1 bit), timestamp (23 bit).
_BIN_EVENT_BYTES = 5


def read_bin40(path: str | Path) -> np.ndarray:
    """Decode the N-MNIST 40-bit format (also used by the shared DVS Gesture ``.bs2`` clips).

    The format has no header, so a size that is not a multiple of 5 bytes is the only sign of a
    truncated download; tonic would silently drop the partial event.
    """
    path = Path(path)
    size = _file_size(path)
    if size % _BIN_EVENT_BYTES:
        raise BadRecordingError(
            str(path),
            f"file is truncated: {size} bytes is not a multiple of {_BIN_EVENT_BYTES} "
            f"(40-bit events); the last {size % _BIN_EVENT_BYTES} bytes are a partial event. "
            "Download or copy the file again",
        )
    if size == 0:
        raise BadRecordingError(str(path), "file is empty (0 bytes)")
    return tonic.io.read_mnist_file(str(path), dtype=EVENT_DTYPE)


_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # .npz: a zip archive (an empty one ends PK\5\6)


def read_numpy(path: str | Path) -> np.ndarray:
    """Decode a ``.npy`` structured array, or a ``.npz`` holding one array (or one named ``events``).

    Unstructured ``[N, 4]`` arrays are refused: their column order (x, y, t, p or x, y, p, t) and time
    unit cannot be told apart, and guessing would silently scramble the data. Pickled object arrays
    are never loaded (unpickling a file can run code).
    """
    path = Path(path)
    if _file_size(path) == 0:
        raise BadRecordingError(str(path), "file is empty (0 bytes)")
    with path.open("rb") as f:
        head = f.read(len(_NPY_MAGIC))
    if not head.startswith(_NPY_MAGIC) and head[:4] not in _ZIP_MAGICS:
        raise BadRecordingError(
            str(path),
            f"not a NumPy recording (it starts with {head!r}, but a .npy file starts with "
            f"{_NPY_MAGIC!r} and a .npz file with b'PK'); save events with numpy.save or "
            "numpy.savez",
        )
    try:
        array = _load_numpy_array(path)
    except BadRecordingError:
        raise
    except Exception as exc:  # numpy and zipfile raise many types on corrupt files
        raise BadRecordingError(str(path), f"not a NumPy recording ({_numpy_problem(exc)})") from exc
    if array.dtype.names is None:
        raise BadRecordingError(
            str(path),
            f"expected a structured array with fields x, y, t, p; got dtype {array.dtype} shape "
            f"{array.shape}. Save events with asa_deploy.data.EVENT_DTYPE (t in microseconds)",
        )
    return as_events(array.reshape(-1), str(path))


def _load_numpy_array(path: Path) -> np.ndarray:
    """The one events array of a .npy or .npz file (by content, as ``np.load`` decides)."""
    loaded = np.load(path, allow_pickle=False)
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:  # an NpzFile
        keys = list(loaded.keys())
        if "events" in keys:
            key = "events"
        elif len(keys) == 1:
            key = keys[0]
        else:
            raise BadRecordingError(
                str(path),
                f"the .npz holds arrays {keys}; name the events array 'events' or store only one",
            )
        array = loaded[key]
    if not isinstance(array, np.ndarray):  # a zip member that is no .npy comes back as bytes
        raise BadRecordingError(str(path), f"not a NumPy recording (member {key!r} is not an array)")
    return array


def _numpy_problem(exc: Exception) -> str:
    """What numpy's error means for a recording, without its advice to allow pickle."""
    text = str(exc)
    if "max_header_size" in text:
        return "its header is larger than numpy reads safely; the file is corrupt"
    if "pickle" in text.lower():
        return ("it holds pickled Python objects, which are never loaded (unpickling can run "
                "code); save a structured numeric array, e.g. with asa_deploy.data.EVENT_DTYPE")
    return f"truncated or corrupt: {type(exc).__name__}: {text}"


def read_aedat4(path: str | Path) -> np.ndarray:
    """Decode the first event stream of an AEDAT4 file (DV software, iniVation cameras)."""
    path = Path(path)
    _file_size(path)
    if importlib.util.find_spec("aedat") is None:
        raise BadRecordingError(
            str(path),
            "reading .aedat4 files needs the optional 'aedat' package: "
            "pip install aedat (or pip install 'asa_deploy[aedat]')",
        )
    try:
        raw = tonic.io.read_aedat4(str(path))
    except Exception as exc:  # the Rust decoder raises bare exceptions on corrupt files
        raise BadRecordingError(str(path), f"cannot decode AEDAT4 file ({exc})") from exc
    names = raw.dtype.names or ()
    if "p" not in names and "on" in names:  # aedat calls polarity 'on'
        raw = raw.astype([(n if n != "on" else "p", raw.dtype[n]) for n in names])
    return as_events(raw, str(path))


READERS: dict[str, Callable[[Path], np.ndarray]] = {
    ".bin": read_bin40,
    ".bs2": read_bin40,
    ".npy": read_numpy,
    ".npz": read_numpy,
    ".aedat4": read_aedat4,
}


def read_recording(path: str | Path, sensor_size: SensorSize | None = None) -> np.ndarray:
    """Decode any supported recording by its suffix; validate it when ``sensor_size`` is given."""
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise BadRecordingError(
            str(path),
            f"unknown file type '{path.suffix}'; supported: {', '.join(sorted(READERS))}",
        )
    events = reader(path)
    if sensor_size is not None:
        check_events(events, sensor_size, str(path))
    return events


def _file_size(path: Path) -> int:
    """Size in bytes, with a domain error instead of a bare OSError for missing files."""
    try:
        return path.stat().st_size
    except OSError as exc:
        raise BadRecordingError(str(path), f"cannot read the file ({exc.strerror})") from exc
