"""Built-in, seeded DVS-like recordings: the project's embedded default dataset (no download).

``asa-deploy quickstart`` trains two small SNNs on these recordings on a couple of CPU cores, so
the generator is fully vectorised numpy and needs no files. It is meant to be learnable but not
trivial, and to reproduce the redundancy that Yao et al. (ICCV 2023, "Inherent Redundancy in
Spiking Neural Networks") describe: besides the "normal" features that fire on the object, a
trained network grows "noise" features that fire on large, high-rate background areas. Real
DVS data has such areas (flicker, textured background, hot pixels), so this data has them too.

What one recording simulates (128 x 128 sensor, polarity 0 = OFF, 1 = ON, times in us):

- **The object** (defines the class): a bright disk, ring, square or bar, with random size and
  orientation, moving on the dark background. Events are emitted on its edges at a rate
  proportional to ``|v . n|`` (edge speed along the edge normal), as a DVS pixel fires when an
  edge sweeps over it: ON on the leading edge (dark -> bright), OFF on the trailing edge, with a
  little spatial jitter and a few flipped polarities. The six classes differ by motion:
  ``move_right``, ``move_left``, ``move_up``, ``move_down`` (straight paths with random drift,
  wobble, speed, acceleration and offset) and ``circle_cw``, ``circle_ccw`` (elliptic orbits with
  random centre, radius and phase; clockwise as seen on screen, y pointing down). Shape is a
  nuisance variable shared by all classes, so no single pixel or shape gives the class away.
- **Background activity**: uniform random events at 0.1-0.4 Hz per pixel.
- **Hot pixels**: a few pixels at fixed locations (a property of the simulated sensor, the same
  in every recording of a preset, see :func:`hot_pixels`) firing at 50-200 Hz.
- **A flickering textured patch** (in most recordings): a 36-60 px rectangle, placed at random,
  whose textured pixels fire ON/OFF bursts at 10-15 Hz (about 5 events/s per textured pixel):
  the large high-rate background area that noise features lock onto.
- **A distractor** (in some recordings): a small, slow dot moving in a random direction.

Presets (:data:`PRESETS`):

- ``gesture`` (default): 6 classes x 50 recordings of 1.2 s, about 17k events each (8k-28k);
  framed as T = 10 bins of 100 ms (a 1.0 s window, so RCS windows can still move),
  downsampled by 4 to 32 x 32.
- ``gesture-tiny``: 6 classes x 3 recordings of 0.6 s, T = 5 x 100 ms; for unit tests.
- ``gesture-clean``: ``gesture`` without hot pixels, flicker, distractor and with little
  background activity; a control for "does the noise make the noise features?".

Determinism: everything depends only on ``(name, seed)``. Recording ``i`` gets its own generator
from ``np.random.SeedSequence`` (spawned child ``i``), so it does not depend on how many events
earlier recordings produced, nor on how many recordings the preset holds.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from asa_deploy.data.events import EVENT_DTYPE
from asa_deploy.data.framing import FrameSpec
from asa_deploy.errors import DataSpecError

__all__ = [
    "MOTIONS",
    "PRESETS",
    "SyntheticPreset",
    "SyntheticSet",
    "hot_pixels",
    "make_recording",
    "make_recordings",
    "recording_seeds",
]

MOTIONS: tuple[str, ...] = (
    "move_right",
    "move_left",
    "move_up",
    "move_down",
    "circle_cw",
    "circle_ccw",
)
"""Class names, in label order; a preset with ``n_classes = k`` uses the first ``k``."""

_SHAPES = ("disk", "ring", "square", "bar")
_LINEAR_DIRECTIONS = {  # unit vectors in image coordinates (y points down)
    "move_right": (1.0, 0.0),
    "move_left": (-1.0, 0.0),
    "move_up": (0.0, -1.0),
    "move_down": (0.0, 1.0),
}

Range = tuple[float, float]


@dataclass(frozen=True)
class SyntheticPreset:
    """Everything that defines a synthetic dataset; ranges are sampled uniformly per recording."""

    description: str
    n_classes: int = 6
    recordings_per_class: int = 50
    duration_us: int = 1_200_000
    sensor: tuple[int, int] = (128, 128)  # (width, height)
    frame_spec: FrameSpec = field(
        default_factory=lambda: FrameSpec(T=10, dt_us=100_000, downsample=4)
    )
    # the object
    speed_px_s: Range = (60.0, 100.0)
    object_radius_px: Range = (7.0, 12.0)  # disk radius; other shapes scale from it
    edge_events_per_px: float = 1.6  # events per pixel of edge sweep (contrast / DVS threshold)
    edge_jitter_px: float = 0.6
    polarity_flip_prob: float = 0.05
    # sensor noise
    background_rate_hz: Range = (0.1, 0.4)  # per pixel
    n_hot_pixels: int = 6
    hot_pixel_rate_hz: Range = (50.0, 200.0)
    hot_pixel_seed: int = 2023  # hot pixels belong to the simulated sensor, not to a recording
    # distractors
    flicker_prob: float = 0.8
    flicker_size_px: Range = (36.0, 60.0)
    flicker_freq_hz: Range = (10.0, 15.0)
    flicker_fire_prob: Range = (0.15, 0.25)  # per textured pixel and flicker edge
    flicker_density: Range = (0.3, 0.5)  # fraction of the patch's pixels that are textured
    distractor_prob: float = 0.3

    def __post_init__(self) -> None:
        if not 1 <= self.n_classes <= len(MOTIONS):
            raise ValueError(f"n_classes must be in 1..{len(MOTIONS)}, got {self.n_classes}")
        if self.frame_spec.window_us > self.duration_us:
            raise ValueError(
                f"frame window {self.frame_spec.window_us} us exceeds the recording "
                f"({self.duration_us} us)"
            )

    @property
    def class_names(self) -> list[str]:
        return list(MOTIONS[: self.n_classes])

    @property
    def n_recordings(self) -> int:
        return self.n_classes * self.recordings_per_class

    @property
    def sensor_size(self) -> tuple[int, int, int]:
        return (self.sensor[0], self.sensor[1], 2)


_GESTURE = SyntheticPreset(
    description=(
        "6 motion classes (left/right/up/down, circling cw/ccw) of a random-shape object, 1.2 s, "
        "with background activity, hot pixels, a flickering patch and a distractor dot"
    ),
)

PRESETS: dict[str, SyntheticPreset] = {
    "gesture": _GESTURE,
    "gesture-tiny": replace(
        _GESTURE,
        description="gesture with 3 recordings per class of 0.6 s (unit tests)",
        recordings_per_class=3,
        duration_us=600_000,
        frame_spec=FrameSpec(T=5, dt_us=100_000, downsample=4),
    ),
    "gesture-clean": replace(
        _GESTURE,
        description="gesture without hot pixels, flicker or distractor, little background activity",
        background_rate_hz=(0.01, 0.03),
        n_hot_pixels=0,
        flicker_prob=0.0,
        distractor_prob=0.0,
    ),
}


@dataclass
class SyntheticSet:
    """A generated dataset: recordings (``EVENT_DTYPE``, sorted by t) with their labels."""

    name: str
    recordings: list[np.ndarray]
    labels: np.ndarray
    class_names: list[str]
    sensor_size: tuple[int, int, int]
    frame_spec: FrameSpec

    def __len__(self) -> int:
        return len(self.recordings)


def _preset(name: str) -> SyntheticPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise DataSpecError(
            f"unknown synthetic preset {name!r}; known presets: {', '.join(sorted(PRESETS))}"
        ) from None


def recording_seeds(name: str, seed: int, n: int) -> list[np.random.SeedSequence]:
    """One independent seed per recording from ``(name, seed)``; child ``i`` ignores ``n``."""
    root = np.random.SeedSequence([int(seed), zlib.crc32(name.encode("utf-8"))])
    return root.spawn(n)


def make_recordings(name: str = "gesture", seed: int = 0) -> SyntheticSet:
    """Generate preset ``name``; labels cycle through the classes so any prefix is balanced."""
    preset = _preset(name)
    n = preset.n_recordings
    labels = np.arange(n, dtype=np.int64) % preset.n_classes
    recordings = [
        make_recording(preset, int(label), np.random.default_rng(child))
        for label, child in zip(labels, recording_seeds(name, seed, n), strict=True)
    ]
    return SyntheticSet(
        name=name,
        recordings=recordings,
        labels=labels,
        class_names=preset.class_names,
        sensor_size=preset.sensor_size,
        frame_spec=preset.frame_spec,
    )


@lru_cache(maxsize=32)
def _hot_pixel_table(
    sensor: tuple[int, int], n: int, rate_hz: Range, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    width, height = sensor
    rng = np.random.default_rng(seed)
    flat = rng.choice(width * height, size=n, replace=False)
    xy = np.stack([flat % width, flat // width], axis=1).astype(np.int64)
    rates = rng.uniform(*rate_hz, size=n)
    on_prob = np.where(rng.random(n) < 0.5, 0.9, 0.1)  # each hot pixel leans to one polarity
    for a in (xy, rates, on_prob):
        a.setflags(write=False)
    return xy, rates, on_prob


def hot_pixels(preset: SyntheticPreset) -> np.ndarray:
    """The ``(n, 2)`` array of hot-pixel ``(x, y)`` locations of the preset's simulated sensor."""
    xy, _, _ = _hot_pixel_table(
        preset.sensor, preset.n_hot_pixels, preset.hot_pixel_rate_hz, preset.hot_pixel_seed
    )
    return xy.copy()


def make_recording(preset: SyntheticPreset, label: int, rng: np.random.Generator) -> np.ndarray:
    """One recording of class ``label``: ``EVENT_DTYPE`` events sorted by t, inside the sensor."""
    if not 0 <= label < preset.n_classes:
        raise ValueError(f"label must be in 0..{preset.n_classes - 1}, got {label}")
    duration = preset.duration_us * 1e-6
    width, height = preset.sensor
    centre = np.array([width / 2.0, height / 2.0])

    # The object: a trajectory from the class, a shape from the nuisance variables.
    motion = MOTIONS[label]
    speed = rng.uniform(*preset.speed_px_s)
    accel = rng.uniform(-0.3, 0.3)
    if motion in _LINEAR_DIRECTIONS:
        angle = np.arctan2(*_LINEAR_DIRECTIONS[motion][::-1]) + rng.uniform(-0.2, 0.2)
        traj = _linear(
            centre,
            angle,
            speed,
            accel,
            duration,
            rng,
            along=12.0,
            across=0.28 * min(width, height),
            wobble=3.0,
        )
    else:
        traj = _orbit(centre, speed, accel, duration, rng, clockwise=motion == "circle_cw")
    t_on = rng.uniform(0.0, 0.08) * duration
    t_off = duration - rng.uniform(0.0, 0.08) * duration
    shape = _make_shape(
        _SHAPES[rng.integers(len(_SHAPES))], rng.uniform(*preset.object_radius_px), rng
    )
    parts = [_object_events(preset, traj, shape, t_on, t_off, rng)]

    # Sensor noise and distractors.
    parts.append(_background(preset, duration, rng))
    parts.append(_hot_pixel_events(preset, duration, rng))
    if rng.random() < preset.flicker_prob:
        parts.append(_flicker(preset, duration, rng))
    if rng.random() < preset.distractor_prob:
        start = rng.uniform(0.125, 0.875, size=2) * np.array([width, height])
        dot = _linear(
            start,
            rng.uniform(0, 2 * np.pi),
            rng.uniform(15.0, 45.0),
            0.0,
            duration,
            rng,
            along=0.0,
            across=0.0,
            wobble=0.0,
        )
        parts.append(
            _object_events(
                preset, dot, _Shape("round", outer=rng.uniform(2.0, 4.0)), 0.0, duration, rng
            )
        )

    x, y, t, p = (np.concatenate(a) for a in zip(*parts, strict=True))
    xi = np.floor(x).astype(np.int64)
    yi = np.floor(y).astype(np.int64)
    ti = np.floor(t * 1e6).astype(np.int64)
    keep = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height) & (ti >= 0)
    keep &= ti < preset.duration_us
    order = np.argsort(ti[keep], kind="stable")
    events = np.empty(len(order), dtype=EVENT_DTYPE)
    events["x"] = xi[keep][order]
    events["y"] = yi[keep][order]
    events["t"] = ti[keep][order]
    events["p"] = p[keep][order]
    return events


# --- trajectories: each maps times (s) to centre positions and velocities (px, px/s) ---------


@dataclass(frozen=True)
class _Trajectory:
    kind: str
    params: dict
    v_max: float  # upper bound of |velocity|, for thinning

    def at(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        k = self.params
        dist = k["speed"] * (t + k["accel"] * (t * t / (2 * k["duration"]) - t / 2))
        ds = k["speed"] * (1 + k["accel"] * (t / k["duration"] - 0.5))
        if self.kind == "linear":
            (dx, dy), (ex, ey) = k["dir"], k["perp"]
            phase = 2 * np.pi * k["wobble_hz"] * t + k["wobble_phase"]
            w = k["wobble"] * np.sin(phase)
            dw = k["wobble"] * 2 * np.pi * k["wobble_hz"] * np.cos(phase)
            s = dist - k["half_path"]
            return (
                k["mid"][0] + dx * s + ex * w,
                k["mid"][1] + dy * s + ey * w,
                dx * ds + ex * dw,
                dy * ds + ey * dw,
            )
        theta = k["phase"] + k["sign"] * dist / k["radius"]
        dtheta = k["sign"] * ds / k["radius"]
        r, e = k["radius"], k["ellipse"]
        return (
            k["mid"][0] + r * np.cos(theta),
            k["mid"][1] + r * e * np.sin(theta),
            -r * np.sin(theta) * dtheta,
            r * e * np.cos(theta) * dtheta,
        )


def _linear(
    centre: np.ndarray,
    angle: float,
    speed: float,
    accel: float,
    duration: float,
    rng: np.random.Generator,
    along: float,
    across: float,
    wobble: float,
) -> _Trajectory:
    """A straight path through ``centre`` (shifted at random) with a sideways wobble."""
    d = np.array([np.cos(angle), np.sin(angle)])
    e = np.array([-d[1], d[0]])
    mid = centre + d * rng.uniform(-along, along) + e * rng.uniform(-across, across)
    amp = rng.uniform(0.0, wobble)
    hz = rng.uniform(0.5, 2.0)
    params = dict(
        speed=speed,
        accel=accel,
        duration=duration,
        dir=tuple(d),
        perp=tuple(e),
        mid=tuple(mid),
        wobble=amp,
        wobble_hz=hz,
        wobble_phase=rng.uniform(0, 2 * np.pi),
        half_path=speed * duration / 2,  # the path's midpoint is reached at about t = D / 2
    )
    v_max = speed * (1 + abs(accel) / 2) + amp * 2 * np.pi * hz
    return _Trajectory("linear", params, float(v_max))


def _orbit(
    centre: np.ndarray,
    speed: float,
    accel: float,
    duration: float,
    rng: np.random.Generator,
    clockwise: bool,
) -> _Trajectory:
    """An elliptic orbit; clockwise on screen means increasing angle with y pointing down."""
    mid = centre + rng.uniform(-14.0, 14.0, size=2)
    params = dict(
        speed=speed,
        accel=accel,
        duration=duration,
        mid=tuple(mid),
        radius=rng.uniform(18.0, 34.0),
        ellipse=rng.uniform(0.8, 1.2),
        phase=rng.uniform(0, 2 * np.pi),
        sign=1.0 if clockwise else -1.0,
    )
    v_max = speed * (1 + abs(accel) / 2) * max(1.0, params["ellipse"])
    return _Trajectory("orbit", params, float(v_max))


# --- event sources: each returns (x, y, t, p) float/float/float(s)/int8 arrays ---------------

Parts = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class _Shape:
    """A bright shape's outline: a disk/ring (radii) or a rotated rectangle (half sizes)."""

    kind: str
    outer: float = 0.0
    inner: float = 0.0
    half_w: float = 0.0
    half_h: float = 0.0
    angle: float = 0.0

    @property
    def perimeter(self) -> float:
        if self.kind == "round":
            return 2 * np.pi * (self.outer + self.inner)
        return 4 * (self.half_w + self.half_h)


def _make_shape(name: str, radius: float, rng: np.random.Generator) -> _Shape:
    """Sizes of the other shapes scale from the disk radius so all have similar extent."""
    if name == "disk":
        return _Shape("round", outer=radius)
    if name == "ring":
        return _Shape("round", outer=radius, inner=radius - rng.uniform(3.0, 5.0))
    if name == "square":
        half = radius * rng.uniform(0.8, 0.9)
        return _Shape("rect", half_w=half, half_h=half, angle=rng.uniform(0, np.pi / 2))
    return _Shape(  # bar
        "rect",
        half_w=radius * rng.uniform(1.2, 1.4),
        half_h=radius * rng.uniform(0.2, 0.3),
        angle=rng.uniform(0, np.pi),
    )


def _boundary(shape: _Shape, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points spread uniformly along the outline, with the outward normals of the bright
    region; returns (offsets [n, 2], normals [n, 2])."""
    if shape.kind == "round":
        theta = rng.uniform(0, 2 * np.pi, size=n)
        radial = np.stack([np.cos(theta), np.sin(theta)], axis=1)
        on_inner = rng.random(n) < shape.inner / (shape.outer + shape.inner)
        r = np.where(on_inner, shape.inner, shape.outer)[:, None]
        normals = np.where(on_inner[:, None], -radial, radial)  # a ring's inner edge faces in
        return radial * r, normals
    a, b = shape.half_w, shape.half_h
    lengths = np.array([a, b, a, b])
    side = rng.choice(4, size=n, p=lengths / lengths.sum())
    u = rng.uniform(-1, 1, size=n)
    # sides: top (y = -b), right (x = a), bottom (y = b), left (x = -a)
    nx = np.array([0.0, 1.0, 0.0, -1.0])[side]
    ny = np.array([-1.0, 0.0, 1.0, 0.0])[side]
    ox = np.where(nx != 0, nx * a, u * a)
    oy = np.where(ny != 0, ny * b, u * b)
    c, s = np.cos(shape.angle), np.sin(shape.angle)
    rot = np.array([[c, s], [-s, c]])  # row vectors times rot = rotation by +angle
    return np.stack([ox, oy], axis=1) @ rot, np.stack([nx, ny], axis=1) @ rot


def _object_events(
    preset: SyntheticPreset,
    traj: _Trajectory,
    shape: _Shape,
    t_on: float,
    t_off: float,
    rng: np.random.Generator,
) -> Parts:
    """Edge events of a moving bright object, by thinning: an edge point fires at a rate
    proportional to ``|v . n|``; ON where the edge advances (v . n > 0), OFF where it recedes."""
    lam = preset.edge_events_per_px * traj.v_max * shape.perimeter * max(t_off - t_on, 0.0)
    m = int(rng.poisson(lam))
    offsets, normals = _boundary(shape, m, rng)
    t = rng.uniform(t_on, t_off, size=m)
    cx, cy, vx, vy = traj.at(t)
    dot = vx * normals[:, 0] + vy * normals[:, 1]
    keep = rng.random(m) * traj.v_max < np.abs(dot)
    jitter = rng.normal(0.0, preset.edge_jitter_px, size=(m, 2))
    x = cx + offsets[:, 0] + jitter[:, 0]
    y = cy + offsets[:, 1] + jitter[:, 1]
    p = (dot > 0) ^ (rng.random(m) < preset.polarity_flip_prob)
    return x[keep], y[keep], t[keep], p[keep].astype(np.int8)


def _background(preset: SyntheticPreset, duration: float, rng: np.random.Generator) -> Parts:
    """Uniform background activity: every pixel fires at random at a low rate."""
    width, height = preset.sensor
    rate = rng.uniform(*preset.background_rate_hz)
    n = int(rng.poisson(rate * width * height * duration))
    x = rng.integers(0, width, size=n) + 0.5
    y = rng.integers(0, height, size=n) + 0.5
    return x, y, rng.uniform(0, duration, size=n), rng.integers(0, 2, size=n).astype(np.int8)


def _hot_pixel_events(preset: SyntheticPreset, duration: float, rng: np.random.Generator) -> Parts:
    """Fixed hot pixels firing as Poisson processes at high rate (+-20 % per recording)."""
    xy, rates, on_prob = _hot_pixel_table(
        preset.sensor, preset.n_hot_pixels, preset.hot_pixel_rate_hz, preset.hot_pixel_seed
    )
    counts = rng.poisson(rates * rng.uniform(0.8, 1.2, size=len(rates)) * duration)
    idx = np.repeat(np.arange(len(rates)), counts)
    p = (rng.random(len(idx)) < on_prob[idx]).astype(np.int8)
    t = rng.uniform(0, duration, size=len(idx))
    return xy[idx, 0] + 0.5, xy[idx, 1] + 0.5, t, p


def _flicker(preset: SyntheticPreset, duration: float, rng: np.random.Generator) -> Parts:
    """A textured rectangle under flickering light: its textured pixels fire ON bursts when the
    light rises and OFF bursts when it falls, with DVS latency jitter."""
    width, height = preset.sensor
    w, h = (int(v) for v in rng.uniform(*preset.flicker_size_px, size=2))
    x0, y0 = rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)
    textured = np.flatnonzero(rng.random(w * h) < rng.uniform(*preset.flicker_density))
    freq = rng.uniform(*preset.flicker_freq_hz)
    rises = (np.arange(int(np.ceil(duration * freq)) + 1) + rng.random()) / freq - 1 / freq
    edges = np.concatenate([rises, rises + 0.5 / freq])
    polarity = np.concatenate([np.ones(len(rises)), np.zeros(len(rises))]).astype(np.int8)
    fire = rng.random((len(textured), len(edges))) < rng.uniform(*preset.flicker_fire_prob)
    pix, edge = np.nonzero(fire)
    t = edges[edge] + rng.exponential(0.002, size=len(edge))
    inside = (t >= 0) & (t < duration)
    pix, edge, t = pix[inside], edge[inside], t[inside]
    x = x0 + textured[pix] % w + 0.5
    y = y0 + textured[pix] // w + 0.5
    return x, y, t, polarity[edge]
