"""The samna conformance stand-in's implementation; ``samna/__init__.py`` exports only the names a
public source confirms (so helpers here never show up as ``samna.<name>``).

The stand-in (test code only) is the part of samna's Python API that SynSense's own public code and
documentation confirm, and nothing else.

Every class, field, method and event type below carries the public source that shows its spelling
and meaning. Anything else raises ``AttributeError`` (unknown attributes of modules, structs, events,
devices), so a misspelt or unconfirmed call in ``asa_deploy.device`` fails a test. Sources:

- S    sinabs v3.1.3 ``sinabs/backend/dynapcnn/``: io.py, chip_factory.py, config_builder.py,
       dynapcnn_network.py, chips/speck2e.py, chips/speck2f.py, chips/dynapcnn.py, dvs_layer.py
- S2   sinabs v2.x ``sinabs/backend/dynapcnn/``: io.py (DYNAP-CNN time base), chips/dynapcnn.py
- NB   sinabs ``docs/speck/notebooks/``: using_readout_layer, power_monitoring, nmnist_quick_start,
       play_with_speck_dvs
- DS   Speck dev kit datasheet (as quoted in docs/speck-hardware.md)
- SD   samna's API reference pages (as quoted in docs/speck-hardware.md section 5)
- 3P   third-party public code only (weaker: the spelling is seen in use, SynSense never shows it)
- HDR  a public C++ header of the Speck event structs (Spike, DvsEvent, ReadoutPinValue with
       ``uint32_t timestamp``; KillSensorPixel with uint8 y, x)

Behaviour enforced (what the sources say, not a chip model):
- a host event is released to the chip when the board's time base reaches its timestamp
  (NB nmnist_quick_start / using_readout_layer: reset the stop-watch before each write;
  sinabs ``hw_forward``); an event written after its time is released at once and its timing is
  lost (recorded as a problem), one never reached stays pending (recorded at close);
- timestamps and the other event fields are unsigned C++ integers (HDR): out of range -> TypeError;
- ``threshold_low`` must not be 0 on a used core (DS 3.2.4.6, "known bug: use -1"):
  ``validate_configuration`` answers (False, reason);
- ``pass_sensor_events`` False keeps the sensor's own events out (DS 3.2.3.8; NB);
- ``readout.monitor_enable`` True stops Spike monitoring (NB using_readout_layer cell 22);
- a leaking core needs a slow clock (docs/speck-hardware.md section 3: leak runs per slow-clock tick;
  S dynapcnn_network.py ``set_slow_clk``), so does the readout (NB using_readout_layer cell 14).

Outputs are computed trivially (a core's output feature is the entering event's x modulo its feature
count, at (0, 0); the readout counts core channels 4(k-1) per slow-clock tick): this checks how
the adapter talks to samna, it is not a model of the chip.
"""

from __future__ import annotations

import copy
import operator
import sys
import types

import samna_world
from samna_world import IDLE_RAILS_W, LATE_TOLERANCE_US

_CONFIRM = "not confirmed by a public source (samna conformance stand-in)"


# ---- strict structs -------------------------------------------------------------------------------

class _Struct:
    """A samna struct: only its listed fields exist; values keep their C++ kind."""

    _fields: dict = {}

    def __init__(self, **values):
        for name, make in self._fields.items():
            object.__setattr__(self, name, make())
        for name, value in values.items():
            setattr(self, name, value)

    def __getattr__(self, name):
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}: {_CONFIRM}")

    def __setattr__(self, name, value):
        if name not in self._fields:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}: {_CONFIRM}")
        object.__setattr__(self, name, _checked(type(self).__name__, name, self.__dict__[name], value))


def _checked(owner: str, name: str, old, new):
    where = f"{owner}.{name}"
    if isinstance(old, bool):
        if type(new).__name__ not in ("bool", "bool_"):
            raise TypeError(f"{where}: incompatible value {new!r} (expects bool)")
        return bool(new)
    if isinstance(old, int):
        if isinstance(new, float) or type(new).__name__.startswith("float"):
            raise TypeError(f"{where}: incompatible value {new!r} (expects int)")
        return operator.index(new)
    if isinstance(old, list):
        if old and isinstance(old[0], _Struct):
            raise TypeError(f"{where}: a list of structs is changed item by item, not replaced")
        if not isinstance(new, list):
            raise TypeError(f"{where}: incompatible value of type {type(new).__name__} (expects a "
                            f"nested list)")
        return copy.deepcopy(new)
    if isinstance(old, _Struct):
        if type(new) is not type(old):
            raise TypeError(f"{where}: expects a {type(old).__name__}")
        return copy.deepcopy(new)
    raise TypeError(f"{where}: unexpected field kind")


def _struct(name: str, **fields) -> type:
    return type(name, (_Struct,), {"_fields": fields})


def _default(cls, **values):
    return lambda: cls(**values)


# Geometry: S chips/dynapcnn.py:98-121 assigns these keys as one dict; the nested attribute writes
# (``dimensions.input_shape.size.x = ...``) are 3P. Destinations: S chips/dynapcnn.py:232-234
# (layer, enable, pooling); feature_shift: 3P.
_Vec2 = _struct("Vec2", x=int, y=int)
_BoolVec2 = _struct("BoolVec2", x=bool, y=bool)
_Shape = _struct("CNNLayerShape", size=_Vec2, feature_count=int)
_Dimensions = _struct("CNNLayerDimensions", input_shape=_Shape, output_shape=_Shape, padding=_Vec2,
                      stride=_default(_Vec2, x=1, y=1), kernel_size=int)
_CnnDestination = _struct("CNNLayerDestination", layer=int, enable=bool, pooling=lambda: 1,
                          feature_shift=int)
_DvsDestination = _struct("DVSLayerDestination", layer=int, enable=bool)

_CORE_FIELDS = dict(
    dimensions=_Dimensions,
    weights=list, biases=list, neurons_initial_value=list,          # S chips/dynapcnn.py:128-141
    threshold_high=int, threshold_low=int, return_to_zero=bool,     # S chips/dynapcnn.py:157-168
    leak_enable=bool, monitor_enable=bool,                          # S chips/dynapcnn.py:131, 166
    destinations=lambda: [_CnnDestination(), _CnnDestination()],   # S chips/dynapcnn.py:232
)
_SPECK_CORE_FIELDS = dict(
    leak_internal_slow_clk_enable=bool,                             # SD speck2e/2f CnnLayerConfig
    output_decimator_enable=bool, output_decimator_interval=int,    # DS 3.2.4.3; SD
)
_DYNAPCNN_CORE_FIELDS = dict(
    weights_kill_bit=list, biases_kill_bit=list, neurons_value_kill_bit=list,  # S2 chips/dynapcnn.py:53-71
)
_DVS_FIELDS = dict(
    merge=bool, on_channel=lambda: True, off_channel=lambda: True,  # S dvs_layer.py:186-200
    pooling=_default(_Vec2, x=1, y=1), origin=_Vec2, cut=_default(_Vec2, x=127, y=127),
    mirror=_BoolVec2,
    destinations=lambda: [_DvsDestination(), _DvsDestination()],   # NB using_readout_layer cell 9
    pass_sensor_events=lambda: True,                                # S chips/dynapcnn.py:264; DS 3.2.3.8
    monitor_enable=bool,                                            # S chips/dynapcnn.py:347; NB
)
# NB using_readout_layer cells 9, 18, 22; low_pass_filter32_not16: SD (docs/speck-hardware.md section 5)
_READOUT_FIELDS = dict(
    enable=bool, threshold=int, readout_configuration_sel=int, output_mode_sel=int,
    low_pass_filter_disable=bool, low_pass_filter32_not16=bool, readout_pin_monitor_enable=bool,
    monitor_enable=bool,
)
N_CORES = 9
READOUT_LAYER = 12     # NB using_readout_layer cell 9: "the readout layer id is fixed ... 12"
DVS_MONITOR_LAYER = 13  # NB using_readout_layer: DVS-layer events come back as Spikes of layer 13


# ---- events ---------------------------------------------------------------------------------------

class _Event:
    """A samna event: listed fields only, each an unsigned (or signed) C++ integer or a bool."""

    _kinds: dict = {}

    def __init__(self):
        for name, kind in self._kinds.items():
            object.__setattr__(self, name, False if kind == "bool" else 0)

    def __getattr__(self, name):
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}: {_CONFIRM}")

    def __setattr__(self, name, value):
        kind = self._kinds.get(name)
        if kind is None:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}: {_CONFIRM}")
        where = f"{type(self).__name__}.{name}"
        if kind == "float":
            object.__setattr__(self, name, float(value))
            return
        if isinstance(value, float) or type(value).__name__.startswith("float"):
            raise TypeError(f"{where}: incompatible value {value!r} (expects {kind})")
        number = operator.index(value)
        if kind == "bool":
            if number not in (0, 1):  # NB using_readout_layer writes p = random.randint(0, 1)
                raise TypeError(f"{where}: incompatible value {value!r} (expects bool)")
            object.__setattr__(self, name, bool(number))
            return
        bits = int(kind[1:])
        low, high = (0, 2**bits - 1) if kind[0] == "u" else (-(2**(bits - 1)), 2**(bits - 1) - 1)
        if not low <= number <= high:
            raise TypeError(f"{where}: incompatible value {number} (a {kind} holds {low}..{high})")
        object.__setattr__(self, name, number)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={self.__dict__[k]}' for k in self._kinds)})"


def _event(name: str, module: str, **kinds) -> type:
    return type(name, (_Event,), {"_kinds": kinds, "__module__": module})


class _Measurement(_Event):
    # NB power_monitoring cell 9: evt.channel (0 VDD_IO .. 4 VDD_PIXEL_ANALOG), evt.value (W),
    # evt.timestamp; its class is only ever reached through the measurement sink node
    _kinds = {"channel": "u8", "value": "float", "timestamp": "u32"}

    def __init__(self, channel: int, value: float, timestamp: int):
        object.__setattr__(self, "channel", channel)
        object.__setattr__(self, "value", float(value))
        object.__setattr__(self, "timestamp", timestamp)


# ---- graph nodes ----------------------------------------------------------------------------------

class _Node:
    def __init__(self, chip: str | None = None, device=None):
        object.__setattr__(self, "_chip", chip)
        object.__setattr__(self, "_device", device)
        object.__setattr__(self, "_links", [])   # (graph, destination node)
        object.__setattr__(self, "_buffer", [])

    def __getattr__(self, name):
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}: {_CONFIRM}")

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__}: cannot set {name!r}")

    def _deliver(self, events: list) -> bool:
        delivered = False
        for graph, target in self._links:
            if graph._started:
                target._receive(events)
                delivered = True
        return delivered

    def _receive(self, events: list) -> None:
        self._buffer.extend(events)


class _HostSource(_Node):
    """``samna.BasicSourceNode_<chip>_event_..._input_event()``: host events into a graph."""

    def write(self, events) -> None:  # S dynapcnn_network.py hw_forward: samna_input_buffer.write(x)
        events = list(events)
        accepted = _CHIPS[self._chip].input_types
        for event in events:
            if not isinstance(event, accepted):
                raise TypeError(f"{type(self).__name__}.write: incompatible event {event!r} (accepts "
                                f"{', '.join(t.__module__ + '.' + t.__name__ for t in accepted)})")
        if events and not self._deliver(copy.deepcopy(events)):
            samna_world.WORLD.problem(f"{len(events)} events written into {type(self).__name__} while "
                                      f"no started graph connects it to a model: dropped")


class _HostSink(_Node):
    """``samna.BasicSinkNode_<chip>_event_output_event()``: the host's buffer of model outputs."""

    def get_events(self) -> list:  # S dynapcnn_network.py hw_forward; NB
        out, self._buffer[:] = list(self._buffer), []
        return out


class _ModelSink(_Node):
    def _receive(self, events: list) -> None:
        self._device._input(events)


class _ModelSource(_Node):
    pass


class _PowerSource(_Node):
    pass


class BasicSinkNode_unifirm_modules_events_measurement(_HostSink):  # noqa: N801 - NB power_monitoring cell 5
    pass


def _node_class(name: str, base: type, chip: str) -> type:
    def __init__(self):
        base.__init__(self, chip)
    return type(name, (base,), {"__init__": __init__})


# ---- graph (NB using_readout_layer cells 10, 13; S dynapcnn_network.py:376-392) --------------------

class EventFilterGraph:
    def __init__(self):
        self._started = False

    def __getattr__(self, name):
        raise AttributeError(f"EventFilterGraph has no attribute {name!r}: {_CONFIRM}")

    def sequential(self, nodes) -> list:
        nodes = list(nodes)
        if len(nodes) != 2 or not all(isinstance(n, _Node) for n in nodes):
            raise TypeError("EventFilterGraph.sequential: this stand-in models two-node chains of "
                            "node objects only (filter nodes named by strings are not modelled)")
        a, b = nodes
        pairs = ((_HostSource, _ModelSink), (_ModelSource, _HostSink),
                 (_PowerSource, BasicSinkNode_unifirm_modules_events_measurement))
        if not any(isinstance(a, x) and isinstance(b, y) for x, y in pairs):
            raise TypeError(f"EventFilterGraph.sequential: cannot connect {type(a).__name__} to "
                            f"{type(b).__name__}")
        if a._chip and b._chip and a._chip != b._chip:
            raise TypeError(f"EventFilterGraph.sequential: {a._chip} node into a {b._chip} node")
        a._links.append((self, b))
        return nodes

    def start(self) -> None:
        self._started = True

    def stop(self) -> None:
        self._started = False


# ---- configuration objects and chip modules --------------------------------------------------------

class _Chip:
    def __init__(self, name: str, speck: bool):
        self.name, self.speck = name, speck
        mod = f"samna.{name}"
        core = _struct("CnnLayerConfig" if speck else "CNNLayerConfig",
                       **_CORE_FIELDS, **(_SPECK_CORE_FIELDS if speck else _DYNAPCNN_CORE_FIELDS))
        dvs = _struct("DvsLayerConfig" if speck else "DVSLayerConfig", **_DVS_FIELDS)
        fields = dict(cnn_layers=lambda: [core() for _ in range(N_CORES)], dvs_layer=dvs)
        if speck:
            fields["readout"] = _struct("ReadoutConfig", **_READOUT_FIELDS)
        self.configuration_class = _struct("SpeckConfiguration" if speck else "DynapcnnConfiguration",
                                           **fields)
        events = {
            # S chip_factory.py:81-89 (layer, x, y, feature, timestamp); HDR: uint8/16/32
            "Spike": _event("Spike", f"{mod}.event", layer="u8", feature="u16", x="u8", y="u8",
                            timestamp="u32"),
        }
        if speck:
            events.update(
                # NB using_readout_layer cell 15 (x, y, p, timestamp); HDR
                DvsEvent=_event("DvsEvent", f"{mod}.event", x="u8", y="u8", p="bool", timestamp="u32"),
                KillSensorPixel=_event("KillSensorPixel", f"{mod}.event", x="u8", y="u8"),  # 3P; HDR
                ReadoutPinValue=_event("ReadoutPinValue", f"{mod}.event", index="i32",
                                       timestamp="u32"),  # NB cells 19-20; HDR
                ReadoutValue=_event("ReadoutValue", f"{mod}.event", value="u32"),  # NB cell 23
            )
        self.events = events
        self.input_types = tuple(events[n] for n in ("Spike", "DvsEvent", "KillSensorPixel")
                                 if n in events)
        self.module = types.ModuleType(mod)
        self.module.configuration = types.ModuleType(f"{mod}.configuration")
        setattr(self.module.configuration, self.configuration_class.__name__, self.configuration_class)
        self.module.event = types.ModuleType(f"{mod}.event")
        for key, cls in events.items():
            setattr(self.module.event, key, cls)
        self.module.validate_configuration = self.validate_configuration  # S config_builder.py:85
        for m in (self.module, self.module.configuration, self.module.event):
            sys.modules[m.__name__] = m

    def validate_configuration(self, config) -> tuple[bool, str]:
        if not isinstance(config, self.configuration_class):
            raise TypeError(f"samna.{self.name}.validate_configuration: incompatible argument "
                            f"{type(config).__name__}")
        layers = config.cnn_layers
        targets = {d.layer for d in config.dvs_layer.destinations if d.enable}
        for layer in layers:
            targets |= {d.layer for d in layer.destinations if d.enable}
        for i, layer in enumerate(layers):
            used = i in targets or layer.monitor_enable or any(d.enable for d in layer.destinations)
            if used and layer.threshold_low == 0:
                return False, (f"cnn_layers[{i}].threshold_low is 0: the datasheet (3.2.4.6) says it "
                               f"must not be 0 (known bug; use -1)")
        for t in sorted(targets):
            if not (0 <= t < N_CORES or (self.speck and t == READOUT_LAYER)):
                return False, f"a destination names layer {t}, which is no core"
        return True, ""


_CHIPS = {c.name: c for c in (_Chip("speck2f", True), _Chip("speck2e", True),
                              _Chip("dynapcnn", False))}
speck2f = _CHIPS["speck2f"].module
speck2e = _CHIPS["speck2e"].module
dynapcnn = _CHIPS["dynapcnn"].module

# Host I/O nodes: S chips/speck2f.py:27-31, chips/speck2e.py; S2 chips/dynapcnn.py:313-317
BasicSourceNode_speck2f_event_input_event = _node_class(
    "BasicSourceNode_speck2f_event_input_event", _HostSource, "speck2f")
BasicSinkNode_speck2f_event_output_event = _node_class(
    "BasicSinkNode_speck2f_event_output_event", _HostSink, "speck2f")
BasicSourceNode_speck2e_event_speck2e_input_event = _node_class(
    "BasicSourceNode_speck2e_event_speck2e_input_event", _HostSource, "speck2e")
BasicSinkNode_speck2e_event_output_event = _node_class(
    "BasicSinkNode_speck2e_event_output_event", _HostSink, "speck2e")
BasicSourceNode_dynapcnn_event_input_event = _node_class(
    "BasicSourceNode_dynapcnn_event_input_event", _HostSource, "dynapcnn")
BasicSinkNode_dynapcnn_event_output_event = _node_class(
    "BasicSinkNode_dynapcnn_event_output_event", _HostSink, "dynapcnn")


# ---- boards ---------------------------------------------------------------------------------------

# S io.py device_types; S2 io.py for DynapcnnDevKit
_BOARD_CHIPS = {"Speck2fDevKit": "speck2f", "Speck2fModuleDevKit": "speck2f",
                "Speck2eDevKit": "speck2e", "Speck2eTestBoard": "speck2e", "DynapcnnDevKit": "dynapcnn"}


class _Handle:
    """Base of the stand-in's objects that hand out methods only."""

    def __getattr__(self, name):
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}: {_CONFIRM}")


class _Model(_Handle):
    def __init__(self, device):
        self._device = device
        self._sink = _ModelSink(device.chip.name, device)
        self._source = _ModelSource(device.chip.name, device)

    def apply_configuration(self, config) -> None:  # S dynapcnn_network.py:358
        self._device._apply(config)

    def get_sink_node(self):  # S dynapcnn_network.py:380; samna "Device Models" page
        return self._sink

    def get_source_node(self):  # S dynapcnn_network.py:388
        return self._source


class _StopWatch(_Handle):
    """Speck only: NB using_readout_layer cell 19 (set_enable_value, reset); S io.py (start, stop,
    reset)."""

    def __init__(self, device):
        self._device = device

    def set_enable_value(self, value: bool) -> None:
        self._device._time_enable(bool(value))

    def reset(self) -> None:
        self._device._time_reset()

    def start(self) -> None:
        self._device._time_enable(True)

    def stop(self) -> None:
        self._device._time_enable(False)


class _IoModule(_Handle):
    """S dynapcnn_network.py:362-365 (set_slow_clk, set_slow_clk_rate), on every chip sinabs maps."""

    def __init__(self, device):
        self._device = device

    def set_slow_clk(self, value: bool) -> None:
        if type(value).__name__ not in ("bool", "bool_"):
            raise TypeError(f"set_slow_clk: incompatible argument {value!r}")
        self._device._slow_clk_on = bool(value)
        self._device._log("set_slow_clk", bool(value))

    def set_slow_clk_rate(self, hz: int) -> None:
        if isinstance(hz, float) or operator.index(hz) < 1:
            raise TypeError(f"set_slow_clk_rate: incompatible argument {hz!r} (an int in Hz)")
        self._device._slow_clk_hz = operator.index(hz)
        self._device._log("set_slow_clk_rate", operator.index(hz))


class _DynapcnnIoModule(_IoModule):
    def write_config(self, address: int, value: int) -> None:
        """S2 io.py: ``write_config(0x0003, 1)`` enables (enable_timestamps) and resets
        (reset_timestamps) the time stamps, ``write_config(0x0003, 0)`` disables them."""
        self._device._log("write_config", address, value)
        if address != 0x0003:
            samna_world.WORLD.problem(f"write_config({address:#06x}, {value}): no public source gives "
                                      f"this register a meaning")
        elif value == 1:
            self._device._time_enable(True)
            self._device._time_reset()
        elif value == 0:
            self._device._time_enable(False)
        else:
            samna_world.WORLD.problem(f"write_config(0x0003, {value}): sinabs writes only 0 or 1")


class _PowerMonitor(_Handle):
    """Speck only: NB power_monitoring cells 5-7."""

    def __init__(self, device):
        self._device = device
        self._source = _PowerSource(None, device)
        self._rate = None

    def get_source_node(self):
        return self._source

    def start_auto_power_measurement(self, rate_hz: float) -> None:
        if samna_world.WORLD.power_fails:
            raise RuntimeError("power monitor did not answer (stand-in board fault)")
        if not float(rate_hz) > 0:
            raise TypeError(f"start_auto_power_measurement: incompatible rate {rate_hz!r}")
        self._rate = float(rate_hz)
        self._device._log("start_power", float(rate_hz))

    def stop_auto_power_measurement(self) -> None:
        self._rate = None
        self._device._log("stop_power")


class _Device(_Handle):
    def __init__(self, info):
        self.info = info
        self.chip = _CHIPS[_BOARD_CHIPS[info.device_type_name]]
        self._model = _Model(self)
        self._io = (_IoModule if self.chip.speck else _DynapcnnIoModule)(self)
        self._config = None
        self._pending = []          # [timestamp, sequence, event]
        self._sequence = 0
        self._time_on = False
        self._origin_s = 0.0        # world time at which the time base read 0
        self._frozen_us = 0
        self._killed = set()        # (y, x)
        self._slow_clk_on = False
        self._slow_clk_hz = None
        self._readout_counts = {}
        self._readout_history = []

    # what the adapter may call on every chip
    def get_model(self):  # S dynapcnn_network.py:358
        return self._model

    def get_io_module(self):  # S dynapcnn_network.py:363
        return self._io

    # internals
    def _log(self, what: str, *details) -> None:
        samna_world.WORLD.log.append((samna_world.WORLD.now_s, what, *details))

    def _time_us(self, at_s: float | None = None) -> int:
        if not self._time_on:
            return self._frozen_us
        at = samna_world.WORLD.now_s if at_s is None else at_s
        return int(round((at - self._origin_s) * 1e6))

    def _time_enable(self, on: bool) -> None:
        if on and not self._time_on:
            self._origin_s = samna_world.WORLD.now_s - self._frozen_us / 1e6
        elif not on and self._time_on:
            self._frozen_us = self._time_us()
        self._time_on = on
        self._log("time_enable", on)

    def _time_reset(self) -> None:
        self._origin_s, self._frozen_us = samna_world.WORLD.now_s, 0
        self._log("time_reset")

    def _apply(self, config) -> None:
        if not isinstance(config, self.chip.configuration_class):
            raise TypeError(f"apply_configuration: incompatible argument {type(config).__name__} for a "
                            f"{self.chip.name} board")
        self._config = copy.deepcopy(config)
        self._readout_counts, self._readout_history = {}, []
        self._log("apply")

    def _input(self, events: list) -> None:
        world = samna_world.WORLD
        kill = self.chip.events.get("KillSensorPixel")
        timed = [e for e in events if not (kill and isinstance(e, kill))]
        for event in events:
            if kill and isinstance(event, kill):
                self._killed.add((event.y, event.x))
        if timed:
            self._log("write", len(timed), min(e.timestamp for e in timed))
        now = self._time_us()
        for event in timed:
            if not self._time_on:
                world.problem("host events written while the board's time base is stopped: they "
                              "wait until it runs (enable and reset the stop-watch first)")
            self._pending.append([event.timestamp, self._sequence, event])
            self._sequence += 1
        self._release_due(now)

    def _release_due(self, now_us: int) -> None:
        if not self._time_on:
            return
        due = sorted(p for p in self._pending if p[0] <= now_us)
        self._pending = [p for p in self._pending if p[0] > now_us]
        for stamp, _, event in due:
            late = now_us - stamp
            samna_world.WORLD.lateness_us.append(late)
            if late > LATE_TOLERANCE_US:
                samna_world.WORLD.problem(
                    f"a host event with timestamp {stamp} us was written when the time base read "
                    f"{now_us} us: released at once, its timing lost (reset the stop-watch before "
                    f"each write and start the timestamps at 0)")
            self._process(event, max(stamp, now_us), host=True)

    def _advance(self, t0: float, t1: float) -> None:
        """Everything the board does between world times t0 and t1, in time order."""
        steps = []
        if self._time_on:
            for stamp, sequence, _ in self._pending:
                at = self._origin_s + stamp / 1e6
                if at <= t1:
                    steps.append((max(at, t0), 0, sequence))
        scene = samna_world.WORLD.scene
        if scene is not None and self.chip.speck:
            steps += [(k / scene.rate_hz, 1, None) for k in _ticks(t0, t1, scene.rate_hz)]
        if self._slow_clk_on and self._slow_clk_hz:
            steps += [(k / self._slow_clk_hz, 2, None) for k in _ticks(t0, t1, self._slow_clk_hz)]
        monitor = getattr(self, "_power", None) if self.chip.speck else None
        if monitor is not None and monitor._rate:
            steps += [(k / monitor._rate, 3, None) for k in _ticks(t0, t1, monitor._rate)]
        for at, kind, _ in sorted(steps, key=lambda s: (s[0], s[1], -1 if s[2] is None else s[2])):
            now = self._time_us(at)
            if kind == 0:
                self._release_due(now)
            elif kind == 1:
                self._sensor_event(scene, now)
            elif kind == 2:
                self._readout_tick(now)
            else:
                self._power_sample(now)

    def _emit(self, event) -> None:
        self._model._source._deliver([event])

    def _sensor_event(self, scene, now_us: int) -> None:
        if self._config is None or not self._config.dvs_layer.pass_sensor_events:
            return  # DS 3.2.3.8: pass_sensor_events False keeps the sensor out
        event = self.chip.events["DvsEvent"]()
        event.x, event.y, event.p, event.timestamp = scene.x, scene.y, scene.p, now_us
        self._process(event, now_us, host=False)

    def _spikes_monitored(self) -> bool:
        return not (self.chip.speck and self._config.readout.monitor_enable)

    def _process(self, event, stamp: int, *, host: bool) -> None:
        config = self._config
        if config is None:
            samna_world.WORLD.problem("events reached a board before apply_configuration")
            return
        dvs_event = self.chip.events.get("DvsEvent")
        if dvs_event is not None and isinstance(event, dvs_event):
            masks = (not host) or samna_world.WORLD.kill_masks_host_events
            if masks and (event.y, event.x) in self._killed:
                return
            dvs = config.dvs_layer
            if dvs.monitor_enable and self._spikes_monitored():
                self._emit(self._spike(DVS_MONITOR_LAYER, int(event.p), event.x, event.y, stamp))
            entries = [d.layer for d in dvs.destinations if d.enable]
        else:
            entries = [event.layer]
        for core in entries:
            self._core(core, event.x, stamp, 0)

    def _spike(self, layer: int, feature: int, x: int, y: int, stamp: int):
        spike = self.chip.events["Spike"]()
        spike.layer, spike.feature, spike.x, spike.y, spike.timestamp = layer, feature, x, y, stamp
        return spike

    def _core(self, core: int, source_x: int, stamp: int, depth: int) -> None:
        world = samna_world.WORLD
        if not 0 <= core < N_CORES:
            world.problem(f"events routed to layer {core}, which is no core")
            return
        if depth > N_CORES:
            world.problem("a routing loop")
            return
        layer = self._config.cnn_layers[core]
        internal = self.chip.speck and layer.leak_internal_slow_clk_enable
        if layer.leak_enable and not internal and not (self._slow_clk_on and self._slow_clk_hz):
            world.problem(f"core {core} leaks (leak_enable) but no slow clock runs (set_slow_clk, "
                          f"set_slow_clk_rate)")
        feature = source_x % max(1, layer.dimensions.output_shape.feature_count)
        if layer.monitor_enable and self._spikes_monitored():
            self._emit(self._spike(core, feature, 0, 0, stamp))
        for destination in layer.destinations:
            if not destination.enable:
                continue
            if self.chip.speck and destination.layer == READOUT_LAYER:
                self._readout_counts[feature] = self._readout_counts.get(feature, 0) + 1
            else:
                self._core(destination.layer, source_x, stamp, depth + 1)

    def _readout_tick(self, now_us: int) -> None:
        config = self._config
        if config is None or not self.chip.speck or not config.readout.enable:
            self._readout_counts = {}
            return
        readout = config.readout
        if readout.readout_configuration_sel != 3:
            samna_world.WORLD.problem(f"readout_configuration_sel {readout.readout_configuration_sel}: "
                                      f"this stand-in models mode 3 (1x1y16f) only")
        # readout channel k (1..15) counts core channel 4(k-1) (NB using_readout_layer cell 6, erratum)
        counts = [self._readout_counts.get(4 * k, 0) for k in range(15)]
        self._readout_counts = {}
        window = 1 if readout.low_pass_filter_disable else (32 if readout.low_pass_filter32_not16 else 16)
        self._readout_history = (self._readout_history + [counts])[-window:]
        average = [sum(h[k] for h in self._readout_history) / window for k in range(15)]
        best = max(range(15), key=lambda k: (average[k], -k))
        if readout.readout_pin_monitor_enable and average[best] > readout.threshold:
            pin = self.chip.events["ReadoutPinValue"]()
            pin.index, pin.timestamp = best + 1, now_us
            self._emit(pin)
        if readout.monitor_enable:
            value = self.chip.events["ReadoutValue"]()
            value.value = (1 << 20) | ((best + 1) << 16)
            self._emit(value)

    def _power_sample(self, now_us: int) -> None:
        self._power._source._deliver([_Measurement(channel, watts, now_us)
                                      for channel, watts in enumerate(IDLE_RAILS_W)])


class _SpeckDevice(_Device):
    def __init__(self, info):
        super().__init__(info)
        self._watch = _StopWatch(self)
        self._power = _PowerMonitor(self)

    def get_stop_watch(self):  # NB using_readout_layer cell 19; S io.py
        return self._watch

    def get_power_monitor(self):  # NB power_monitoring cell 5
        return self._power

    def get_model_sink_node(self):  # NB using_readout_layer cell 10 (Speck)
        return self._model.get_sink_node()

    def get_model_source_node(self):  # NB using_readout_layer cell 10 (Speck)
        return self._model.get_source_node()


def _ticks(t0: float, t1: float, rate: float) -> range:
    """Indices k with t0 < k / rate <= t1."""
    first = int(t0 * rate + 1e-9) + 1
    last = int(t1 * rate + 1e-9)
    return range(first, last + 1)


class DeviceInfo:
    """S io.py get_device_map: ``.device_type_name``, ``.usb_device_address``."""

    def __init__(self, board):
        self._board = board

    @property
    def device_type_name(self) -> str:
        return self._board.device_type_name

    @property
    def usb_device_address(self) -> int:
        return self._board.usb_device_address

    def __getattr__(self, name):
        raise AttributeError(f"DeviceInfo has no attribute {name!r}: {_CONFIRM}")


def _get_all_devices() -> list:  # S io.py:128
    return [DeviceInfo(b) for b in samna_world.WORLD.boards]


def _open_device(info):
    """S io.py open_device (a DeviceInfo; NB passes a device_type_name string); None if absent."""
    world = samna_world.WORLD
    if isinstance(info, str):
        board = next((b for b in world.boards if b.device_type_name == info), None)
    else:
        board = info._board if isinstance(info, DeviceInfo) and info._board in world.boards else None
    if board is None:
        return None
    handle = (_SpeckDevice if _CHIPS[_BOARD_CHIPS[board.device_type_name]].speck else _Device)(board)
    world.open_devices.append(handle)
    handle._log("open", board.device_type_name)
    return handle


def _close_device(handle) -> None:  # S io.py close_device
    world = samna_world.WORLD
    if handle in world.open_devices:
        world.open_devices.remove(handle)
    if handle._pending:
        world.problem(f"{len(handle._pending)} host events were never released: their timestamps "
                      f"lie beyond what the board's time base reached")
    handle._log("close")


device = types.ModuleType("samna.device")
device.get_all_devices = _get_all_devices
device.open_device = _open_device
device.close_device = _close_device
graph = types.ModuleType("samna.graph")
graph.EventFilterGraph = EventFilterGraph
sys.modules["samna.device"] = device
sys.modules["samna.graph"] = graph

