"""Plain helpers shared by several test modules."""

import numpy as np

from asa_deploy.data.events import EVENT_DTYPE


def random_events(n: int, *, width: int = 34, seed: int = 0) -> np.ndarray:
    """n valid events on a width x width sensor over 300 ms, sorted by time."""
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, dtype=EVENT_DTYPE)
    ev["x"] = rng.integers(0, width, n)
    ev["y"] = rng.integers(0, width, n)
    ev["t"] = np.sort(rng.integers(0, 300_000, n))
    ev["p"] = rng.integers(0, 2, n)
    return ev
