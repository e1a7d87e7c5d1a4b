"""Shared fixtures: the real event-camera recordings in ../shared/data (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Fuzz tests run a few hundred examples each in `make test`; `HYPOTHESIS_PROFILE=fuzz` runs
# thousands (`make fuzz`). Found failures are kept as explicit @example / regression tests.
settings.register_profile("fuzz", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _private_user_cache(tmp_path_factory):
    """The default decoded-event cache (``$XDG_CACHE_HOME/asa_deploy``) in a folder of the test
    session's, for this process and every command it starts: tests never fill the user's cache."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))
    yield
    if before is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the project, or a clean skip so a fresh clone still passes."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


def write_bin40(path: Path, x, y, t, p) -> Path:
    """Encode events in the N-MNIST 40-bit format (x, y, p<<7 | t[22:16], t[15:8], t[7:0])."""
    t = np.asarray(t, dtype=np.int64)
    if t.max(initial=0) >= 2**23:
        raise ValueError("this encoder writes no timestamp-overflow events; keep t < 2**23 us")
    raw = np.empty((len(t), 5), dtype=np.uint8)
    raw[:, 0] = x
    raw[:, 1] = y
    raw[:, 2] = (np.asarray(p, dtype=np.int64) << 7) | (t >> 16)
    raw[:, 3] = (t >> 8) & 0xFF
    raw[:, 4] = t & 0xFF
    path.write_bytes(raw.tobytes())
    return path


@pytest.fixture
def bin40_writer():
    """``write_bin40(path, x, y, t, p)``: build 40-bit recordings without the shared data."""
    return write_bin40
