"""``ChipSpec``: one chip's cores, limits, number formats, capabilities and power model, typed.

Loaded from ``hw_configs/<chip>.toml`` (a user adds a chip by adding a file, or passes a path). Every
field is required and checked on load, so a missing or mistyped number is an error naming the file,
the section and the field, never a silent default that would compile a network the chip cannot hold.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from asa_deploy.errors import ChipSpecError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

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
    """P = resting + e_spike * spikes/s + e_synop * synops/s + e_event * input events/s."""

    resting_mw: float
    resting_source: str
    energy_per_spike_nj: float
    energy_per_synop_nj: float
    energy_per_input_event_nj: float
    dynamic_source: str

    def power_mw(self, spikes_per_s: float, synops_per_s: float, events_per_s: float) -> float:
        dynamic_nj_per_s = (self.energy_per_spike_nj * spikes_per_s + self.energy_per_synop_nj
                            * synops_per_s + self.energy_per_input_event_nj * events_per_s)
        return self.resting_mw + dynamic_nj_per_s * 1e-6


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


def hw_configs_dir() -> Path:
    """Where named chips live: $ASA_DEPLOY_HW_CONFIGS, else the repository's ``hw_configs/``."""
    return Path(os.environ.get("ASA_DEPLOY_HW_CONFIGS",
                               Path(__file__).resolve().parents[2] / "hw_configs"))


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
    if not path.is_file():
        raise ChipSpecError(f"{path}: no such hw_config file")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ChipSpecError(f"{path}: not valid TOML ({exc})") from exc
    return _parse(raw, str(path))


def _parse(raw: dict[str, Any], where: str) -> ChipSpec:
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise ChipSpecError(f"{where}: schema_version {raw.get('schema_version')!r}, expected "
                            f"{SCHEMA_VERSION}")
    for key in ("name", "description"):
        if not isinstance(raw.get(key), str):
            raise ChipSpecError(f"{where}: missing top-level field {key!r} (a string)")
    sections = {name: _section(raw, name, cls, where) for name, cls in _SECTIONS.items()}
    spec = ChipSpec(name=raw["name"], description=raw["description"], sources=dict(raw.get("sources", {})),
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
    unknown = set(table) - {f.name for f in fields(cls)}
    if unknown:
        raise ChipSpecError(f"{where}: [{name}] has unknown field(s) {sorted(unknown)}")
    return cls(**values)


def _coerce(value: Any, annotation: str, where: str):
    """Check a TOML value against the field's annotation (strings, since annotations are lazy)."""
    kinds = {"int": int, "float": (int, float), "bool": bool, "str": str}
    if annotation.startswith("tuple"):
        item = annotation[len("tuple["):].split(",")[0].strip().rstrip("]")
        if not isinstance(value, list) or not all(_is(v, kinds[item]) for v in value):
            raise ChipSpecError(f"{where}: expected a list of {item}, got {value!r}")
        return tuple(value)
    if not _is(value, kinds[annotation]):
        raise ChipSpecError(f"{where}: expected {annotation}, got {value!r}")
    return float(value) if annotation == "float" else value


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
