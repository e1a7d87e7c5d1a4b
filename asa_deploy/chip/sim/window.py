"""``EventWindow``: the unit both simulators, the DVS layer and the board runtime consume. Its own
module so that the DVS layer and the result type both build on it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class EventWindow:
    """One stretch of events fed to a freshly reset chip.

    ``events`` (``EVENT_DTYPE``, sensor coordinates = ``config.input_shape()``) should be sorted by
    ``t``. Bin b holds ``t_start + b*dt_us <= t < t_start + (b+1)*dt_us``; events outside
    ``[t_start, t_start + n_bins*dt_us)`` are ignored and counted nowhere.
    """

    events: np.ndarray
    t_start: int
    n_bins: int
    dt_us: int
    label: int = -1
    recording: str = ""

    @property
    def t_end(self) -> int:
        return self.t_start + self.n_bins * self.dt_us
