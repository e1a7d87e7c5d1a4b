"""Hot-pixel detection: sensor pixels that fire far above their neighbours, to kill on the chip.

A hot pixel fires on its own (leak, defect) at tens to hundreds of Hz whatever the scene does; every
event it sends costs input-driven synops and carries no information. Scene activity is spatially
smooth at the pixel scale (an edge sweeping past excites its neighbours too), so the rule compares
each pixel with its neighbourhood over the calibration recordings (both polarities summed):

    hot  <=>  rate > factor x median(neighbour rates) + margin_hz

- rates are events per second of calibration recording, so the rule does not depend on how many
  recordings or how long they are;
- the median of the ``size`` x ``size`` neighbourhood *without* the pixel itself ignores up to half of
  the neighbours being hot too (adjacent hot pixels), or lying off a moving edge;
- ``factor`` (default 10) separates a hot pixel from the busiest corner of a moving object, whose
  rate is of the order of its active neighbours';
- ``margin_hz`` (default 10 Hz) keeps sparse activity from being flagged where the neighbour median
  is 0 (background noise of ~0.1-1 Hz, a flickering texture's isolated pixels at a few Hz), while
  DVS hot pixels fire at 50 Hz and more.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from asa_deploy.data.cache import CacheSetting
from asa_deploy.data.datasets import open_dataset
from asa_deploy.data.events import SensorSize
from asa_deploy.defaults import HOT_PIXEL_FACTOR
from asa_deploy.errors import AsaDeployError

FACTOR = HOT_PIXEL_FACTOR
MARGIN_HZ = 10.0
SIZE = 3
MAX_RECORDINGS = 64


@dataclass
class HotPixels:
    """The detected pixels, (y, x) on the sensor, with their rates and what they were found from."""

    pixels: list[tuple[int, int]]
    rates_hz: list[float]
    neighbour_hz: list[float]
    factor: float
    margin_hz: float
    size: int
    recordings: int
    seconds: float
    source: str = ""

    def to_dict(self) -> dict:
        out = asdict(self)
        out["pixels"] = [list(p) for p in self.pixels]
        return out


def pixel_rates(recordings: Iterable[np.ndarray], sensor_size: SensorSize) -> tuple[np.ndarray, float]:
    """Per-pixel event rate in Hz (``[H, W]``, both polarities) over ``recordings`` and their total
    duration in seconds (each recording from its first to its last event)."""
    width, height = int(sensor_size[0]), int(sensor_size[1])
    counts = np.zeros((height, width), dtype=np.int64)
    seconds = 0.0
    for events in recordings:
        if len(events) == 0:
            continue
        inside = (events["x"] >= 0) & (events["x"] < width) & (events["y"] >= 0) & (events["y"] < height)
        np.add.at(counts, (events["y"][inside].astype(np.int64), events["x"][inside].astype(np.int64)), 1)
        seconds += (int(events["t"].max()) - int(events["t"].min()) + 1) * 1e-6
    return counts / max(seconds, 1e-6), seconds


def neighbour_median(rates: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Median of each pixel's ``size`` x ``size`` neighbourhood, the pixel itself left out (edges
    reflected)."""
    if size < 3 or size % 2 == 0:
        raise ValueError(f"neighbourhood size must be odd and at least 3, got {size}")
    footprint = np.ones((size, size), dtype=bool)
    footprint[size // 2, size // 2] = False
    return ndimage.median_filter(rates.astype(np.float64), footprint=footprint, mode="reflect")


def find_hot_pixels(rates: np.ndarray, *, factor: float = FACTOR, margin_hz: float = MARGIN_HZ,
                    size: int = SIZE) -> np.ndarray:
    """Boolean ``[H, W]`` map of hot pixels under the module's rule."""
    return rates > factor * neighbour_median(rates, size) + margin_hz


def detect_hot_pixels(recordings: Sequence[np.ndarray], sensor_size: SensorSize, *,
                      factor: float = FACTOR, margin_hz: float = MARGIN_HZ, size: int = SIZE,
                      source: str = "") -> HotPixels:
    """Hot pixels of the sensor that recorded ``recordings`` (calibration events)."""
    rates, seconds = pixel_rates(recordings, sensor_size)
    around = neighbour_median(rates, size)
    hot = rates > factor * around + margin_hz
    ys, xs = hot.nonzero()
    return HotPixels(pixels=[(int(y), int(x)) for y, x in zip(ys, xs, strict=True)],
                     rates_hz=[float(rates[y, x]) for y, x in zip(ys, xs, strict=True)],
                     neighbour_hz=[float(around[y, x]) for y, x in zip(ys, xs, strict=True)],
                     factor=factor, margin_hz=margin_hz, size=size, recordings=len(recordings),
                     seconds=seconds, source=source)


def detect_in_split(data: dict, *, max_recordings: int = MAX_RECORDINGS, factor: float = FACTOR,
                    margin_hz: float = MARGIN_HZ, cache: CacheSetting = None) -> HotPixels:
    """Hot pixels from a run's training split (its ``model.pt`` data record), the first
    ``max_recordings`` recordings of it; ``cache``: where decoded recordings live
    (``open_dataset``)."""
    train = list(data.get("split", {}).get("train") or [])[:max_recordings]
    if not train:
        raise AsaDeployError(f"--kill-hot-pixels: the run has no training split of {data.get('spec')} "
                             f"to find hot pixels in (an imported run has none); retrain here, or "
                             f"drop --kill-hot-pixels")
    dataset = open_dataset(data["spec"], seed=data["split"]["seed"], cache=cache)
    return detect_hot_pixels([dataset[int(i)][0] for i in train], dataset.sensor_size,
                             factor=factor, margin_hz=margin_hz,
                             source=f"{data['spec']} training split ({len(train)} recordings)")
