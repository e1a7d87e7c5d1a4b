"""``ChipSpec``: one chip's cores, limits, number formats, capabilities and power model, typed.

Loaded from ``hw_configs/<chip>.toml`` (a user adds a chip by adding a file, or passes a path). Every
field is required and checked on load (type, and the range of every number in ``_RANGES``), so a
missing, mistyped or impossible number (``kernel_memory = -1``, ``weight_bits = 0``) is an error naming
the file, the section, the field, the value and the allowed range, never a silent default or coercion
that would compile a network the chip cannot hold.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from asa_deploy.errors import ChipSpecError
from asa_deploy.io import read_text
from asa_deploy.shipped import hw_configs_dir

CAPABILITIES = ("per_channel_weight", "per_neuron_initial_value", "per_neuron_kill",
                "input_pixel_kill", "input_roi", "output_decimator", "readout")


@dataclass(frozen=True)
class CoreMemories:
    count: int
    kernel_memory: tuple[int, ...]
    neuron_memory: tuple[int, ...]
    bias_memory: tuple[int, ...]
    source: str


@dataclass(frozen=True)
class Limits:
    max_kernel: int
    strides: tuple[int, ...]
    max_padding: int
    poolings: tuple[int, ...]
    max_channels: int
    max_input: tuple[int, int]
    max_conv_output: tuple[int, int]
    fan_out: int
    source: str


@dataclass(frozen=True)
class Numerics:
    weight_bits: int
    state_bits: int
    bias_bits: int
    bias_quantization_bits: int
    forbidden_threshold_low: tuple[int, ...]
    source: str

    def int_range(self, bits: int) -> tuple[int, int]:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


@dataclass(frozen=True)
class Capabilities:
    per_channel_weight: bool
    per_neuron_initial_value: bool
    per_neuron_kill: bool
    input_pixel_kill: bool
    input_roi: bool
    output_decimator: bool
    readout: bool
    source: str

    def names(self) -> list[str]:
        return [name for name in CAPABILITIES if getattr(self, name)]


@dataclass(frozen=True)
class DvsSpec:
    has_sensor: bool
    sensor: tuple[int, int, int]  # (P, H, W)
    poolings: tuple[int, ...]
    max_destinations: int
    source: str


@dataclass(frozen=True)
class ReadoutSpec:
    classes: int
    destination: int
    channel_stride: int
    source: str


@dataclass(frozen=True)
class PowerModel:
    """Processor P = resting + e_spike * spikes/s + e_synop * synops/s + e_event * input events/s, with
    a band from the spread of e_spike (low..high); the dev kit adds the idle power of its other rails.

    ``idle_rail_mw`` is the measured idle power per supply rail ({} where none was measured);
    ``processor_rails`` are the rails whose idle sum is the processor's resting power."""

    resting_mw: float
    resting_source: str
    idle_rail_mw: dict[str, float]
    processor_rails: tuple[str, ...]
    idle_rails_source: str
    energy_per_spike_nj: float
    energy_per_spike_low_nj: float
    energy_per_spike_high_nj: float
    energy_per_synop_nj: float
    energy_per_input_event_nj: float
    dynamic_source: str

    def power_mw(self, spikes_per_s: float, synops_per_s: float, events_per_s: float,
                 energy_per_spike_nj: float | None = None) -> float:
        """The processor's power (mW); ``energy_per_spike_nj`` None: the central value."""
        e_spike = self.energy_per_spike_nj if energy_per_spike_nj is None else energy_per_spike_nj
        dynamic_nj_per_s = (e_spike * spikes_per_s + self.energy_per_synop_nj
                            * synops_per_s + self.energy_per_input_event_nj * events_per_s)
        return self.resting_mw + dynamic_nj_per_s * 1e-6

    def band_mw(self, spikes_per_s: float, synops_per_s: float, events_per_s: float) -> tuple[float, float]:
        """The processor's power at the low and the high energy per spike (mW)."""
        return (self.power_mw(spikes_per_s, synops_per_s, events_per_s, self.energy_per_spike_low_nj),
                self.power_mw(spikes_per_s, synops_per_s, events_per_s, self.energy_per_spike_high_nj))

    @property
    def other_rails_idle_mw(self) -> float | None:
        """Idle power of the dev kit's rails outside the processor; None: no rail was measured."""
        if not self.idle_rail_mw:
            return None
        return sum(mw for rail, mw in self.idle_rail_mw.items() if rail not in self.processor_rails)


@dataclass(frozen=True)
class ChipSpec:
    name: str
    description: str
    cores: CoreMemories
    limits: Limits
    numerics: Numerics
    capabilities: Capabilities
    dvs: DvsSpec
    readout: ReadoutSpec
    power: PowerModel
    sources: dict[str, str]
    path: str

    def has(self, capability: str) -> bool:
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown capability {capability!r}; known: {CAPABILITIES}")
        return bool(getattr(self.capabilities, capability))


SCHEMA_VERSION = 1
_SECTIONS = {"cores": CoreMemories, "limits": Limits, "numerics": Numerics,
             "capabilities": Capabilities, "dvs": DvsSpec, "readout": ReadoutSpec, "power": PowerModel}
_TOP_LEVEL = {"name", "description", "schema_version", "sources", *_SECTIONS}

# Allowed range of every number (each entry of a list): (low, high or None, why). A field whose
# annotation holds int or float must be listed here (checked on load).
_POSITIVE = (1, None, "a count or size")
_BITS = (2, 32, "a signed range needs 2 bits")
_ENERGY = (0.0, None, "power and energy cannot be negative")
_RANGES: dict[tuple[str, str], tuple | None] = {
    ("cores", "count"): _POSITIVE,
    ("cores", "kernel_memory"): (1, None, "words of memory"),
    ("cores", "neuron_memory"): (1, None, "words of memory"),
    ("cores", "bias_memory"): (1, None, "words of memory"),
    ("limits", "max_kernel"): _POSITIVE,
    ("limits", "strides"): _POSITIVE,
    ("limits", "max_padding"): (0, None, "padding cannot be negative"),
    ("limits", "poolings"): _POSITIVE,
    ("limits", "max_channels"): _POSITIVE,
    ("limits", "max_input"): _POSITIVE,
    ("limits", "max_conv_output"): _POSITIVE,
    ("limits", "fan_out"): _POSITIVE,
    ("numerics", "weight_bits"): _BITS,
    ("numerics", "state_bits"): _BITS,
    ("numerics", "bias_bits"): _BITS,
    ("numerics", "bias_quantization_bits"): _BITS,
    ("numerics", "forbidden_threshold_low"): None,  # any integers
    ("dvs", "sensor"): _POSITIVE,
    ("dvs", "poolings"): _POSITIVE,
    ("dvs", "max_destinations"): _POSITIVE,
    ("readout", "classes"): (0, None, "0: no readout block"),
    ("readout", "destination"): (0, None, "a destination id"),
    ("readout", "channel_stride"): _POSITIVE,
    ("power", "resting_mw"): _ENERGY,
    ("power", "idle_rail_mw"): _ENERGY,
    ("power", "energy_per_spike_nj"): _ENERGY,
    ("power", "energy_per_spike_low_nj"): _ENERGY,
    ("power", "energy_per_spike_high_nj"): _ENERGY,
    ("power", "energy_per_synop_nj"): _ENERGY,
    ("power", "energy_per_input_event_nj"): _ENERGY,
}
# Lists that must hold at least one entry (a chip with no stride or pooling accepts no network).
_NON_EMPTY = {("cores", "kernel_memory"), ("cores", "neuron_memory"), ("cores", "bias_memory"),
              ("limits", "strides"), ("limits", "poolings"), ("dvs", "poolings")}


def list_chips() -> list[str]:
    return sorted(p.stem for p in hw_configs_dir().glob("*.toml"))


def load_chip_spec(name_or_path: str | Path) -> ChipSpec:
    """A chip by name (``speck2f``) or by the path of a TOML file."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = hw_configs_dir() / f"{name_or_path}.toml"
        if not path.is_file():
            raise ChipSpecError(f"unknown chip {str(name_or_path)!r}; known: {list_chips()} "
                                f"(in {hw_configs_dir()}), or pass the path of a .toml file")
    remedy = "fix it, or pass another --chip (a hw_configs name or a .toml path)"
    text = read_text(path, "hw_config", remedy=remedy,
                     if_missing=f"pass the path of an existing .toml file, or a chip name: "
                                f"{list_chips()} (in {hw_configs_dir()})")
    try:
        raw = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise ChipSpecError(f"{path}: not valid TOML ({exc})") from exc
    return _parse(raw, str(path))


def _parse(raw: dict[str, Any], where: str) -> ChipSpec:
    version = raw.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise ChipSpecError(f"{where}: schema_version {version!r}, expected {SCHEMA_VERSION}")
    for key in ("name", "description"):
        if not isinstance(raw.get(key), str):
            raise ChipSpecError(f"{where}: missing top-level field {key!r} (a string)")
    unknown = set(raw) - _TOP_LEVEL
    if unknown:
        raise ChipSpecError(f"{where}: unknown top-level field(s) or section(s) {sorted(unknown)}")
    sources = raw.get("sources", {})
    if not isinstance(sources, dict) or not all(isinstance(v, str) for v in sources.values()):
        raise ChipSpecError(f"{where}: [sources] must map tags to strings, got {sources!r}")
    sections = {name: _section(raw, name, cls, where) for name, cls in _SECTIONS.items()}
    spec = ChipSpec(name=raw["name"], description=raw["description"], sources=dict(sources),
                    path=where, **sections)
    _check(spec, where)
    return spec


def _section(raw: dict, name: str, cls: type, where: str):
    table = raw.get(name)
    if not isinstance(table, dict):
        raise ChipSpecError(f"{where}: missing section [{name}]")
    values = {}
    for f in fields(cls):
        if f.name not in table:
            raise ChipSpecError(f"{where}: [{name}] is missing field {f.name!r}")
        values[f.name] = _coerce(table[f.name], f.type, f"{where}: [{name}] {f.name}")
        _check_range(values[f.name], name, f.name, f.type, where)
    unknown = set(table) - {f.name for f in fields(cls)}
    if unknown:
        raise ChipSpecError(f"{where}: [{name}] has unknown field(s) {sorted(unknown)}")
    return cls(**values)


def _coerce(value: Any, annotation: str, where: str):
    """Check a TOML value against the field's annotation (strings, since annotations are lazy)."""
    kinds = {"int": int, "float": (int, float), "bool": bool, "str": str}
    if annotation.startswith("dict"):  # dict[str, float]: a table of names to numbers
        if not isinstance(value, dict) or not all(_is(v, kinds["float"]) for v in value.values()):
            raise ChipSpecError(f"{where}: expected a table of name = number, got {value!r:.80}")
        for key, item in value.items():
            if isinstance(item, int) and not _exact_float(item):
                raise ChipSpecError(f"{where}: {key} = {item!r:.40} has no exact float value; "
                                    f"write a float")
        return {key: float(item) for key, item in value.items()}
    if annotation.startswith("tuple"):
        item = annotation[len("tuple["):].split(",")[0].strip().rstrip("]")
        if not isinstance(value, list) or not all(_is(v, kinds[item]) for v in value):
            raise ChipSpecError(f"{where}: expected a list of {item}, got {value!r}")
        return tuple(value)
    if not _is(value, kinds[annotation]):
        raise ChipSpecError(f"{where}: expected {annotation}, got {value!r}")
    if annotation == "float" and isinstance(value, int) and not _exact_float(value):
        raise ChipSpecError(f"{where}: {value!r:.40} has no exact float value; write a float")
    return float(value) if annotation == "float" else value


def _check_range(value: Any, section: str, name: str, annotation: str, where: str) -> None:
    """Every number of the field inside its allowed range; the error says which and why."""
    if not any(kind in annotation for kind in ("int", "float")):
        return
    allowed = _RANGES[(section, name)]  # KeyError: a new numeric field needs its range above
    if isinstance(value, dict):
        entries = [(f" has entry {key} =", item) for key, item in value.items()]
    elif isinstance(value, tuple):
        entries = [(" has entry", item) for item in value]
    else:
        entries = [(" =", value)]
    if (section, name) in _NON_EMPTY and not entries:
        raise ChipSpecError(f"{where}: [{section}] {name} is empty; it needs at least one entry")
    if allowed is None:
        return
    low, high, why = allowed
    for entry, item in entries:
        if (isinstance(item, float) and not math.isfinite(item)) or item < low or (
                high is not None and item > high):
            span = f"{low}..{high}" if high is not None else f">= {low}"
            raise ChipSpecError(f"{where}: [{section}] {name}{entry} {item!r:.40}, outside the "
                                f"allowed range {span} ({why})")


def _exact_float(value: int) -> bool:
    """Whether ``float(value)`` is ``value`` (not past 2**53 nor 1e308)."""
    try:
        return float(value) == value
    except OverflowError:
        return False


def _is(value: Any, kind) -> bool:
    if isinstance(value, bool) and kind is not bool:
        return False
    return isinstance(value, kind)


def _check(spec: ChipSpec, where: str) -> None:
    c = spec.cores
    for name in ("kernel_memory", "neuron_memory", "bias_memory"):
        if len(getattr(c, name)) != c.count:
            raise ChipSpecError(f"{where}: [cores] {name} has {len(getattr(c, name))} entries for "
                                f"{c.count} cores")
    if len(spec.limits.max_input) != 2 or len(spec.limits.max_conv_output) != 2:
        raise ChipSpecError(f"{where}: [limits] max_input and max_conv_output are (H, W) pairs")
    if len(spec.dvs.sensor) != 3:
        raise ChipSpecError(f"{where}: [dvs] sensor is (polarities, H, W)")
    n = spec.numerics
    if n.bias_quantization_bits > n.bias_bits:
        raise ChipSpecError(f"{where}: [numerics] bias_quantization_bits {n.bias_quantization_bits} "
                            f"exceeds bias_bits {n.bias_bits} (the biases would not fit)")
    _check_power(spec.power, where)


def _check_power(p: PowerModel, where: str) -> None:
    """The band brackets the central energy; the processor's rails are measured rails."""
    if not p.energy_per_spike_low_nj <= p.energy_per_spike_nj <= p.energy_per_spike_high_nj:
        raise ChipSpecError(f"{where}: [power] energy_per_spike_low_nj {p.energy_per_spike_low_nj} <= "
                            f"energy_per_spike_nj {p.energy_per_spike_nj} <= energy_per_spike_high_nj "
                            f"{p.energy_per_spike_high_nj} does not hold (the band must bracket the "
                            f"central value)")
    rails = list(p.processor_rails)
    if len(set(rails)) != len(rails):
        raise ChipSpecError(f"{where}: [power] processor_rails {rails} names a rail twice")
    unknown = [rail for rail in rails if rail not in p.idle_rail_mw]
    if unknown:
        raise ChipSpecError(f"{where}: [power] processor_rails {unknown} are not in idle_rail_mw "
                            f"{sorted(p.idle_rail_mw)}; name measured rails")
    if p.idle_rail_mw and not rails:
        raise ChipSpecError(f"{where}: [power] processor_rails is empty; name the rails of "
                            f"idle_rail_mw {sorted(p.idle_rail_mw)} that feed the processor (or "
                            f"leave idle_rail_mw empty when no rail was measured)")
