"""What the samna conformance stand-in (``tests/samna_conformance/samna``) knows besides samna's API:
the connected boards, a virtual clock, switches for behaviours no public source settles, and a
record of everything a test may want to check. Tests reach it as ``samna_conformance.install(...)``'s
return value; the stand-in's ``samna`` package imports it, the adapter never does.

Time is virtual: ``World.sleep(seconds)`` (installed as the adapter's ``_wait``) advances every open
board, releasing host events whose timestamps the board's stop-watch reaches, ticking the slow clock
and the power monitor, and feeding the sensor scene. Nothing here sleeps for real.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LATE_TOLERANCE_US = 1000  # an event written more than this after its own timestamp lost its timing

# Idle power per rail in W, as measured on a Speck2f dev kit (sinabs docs/speck/notebooks/
# power_monitoring.ipynb cell 9): channel 0 VDD_IO ... 4 VDD_PIXEL_ANALOG.
IDLE_RAILS_W = (61.7e-6, 51.7e-6, 367.0e-6, 78.9e-6, 610.9e-6)


@dataclass
class BoardInfo:
    device_type_name: str
    usb_device_address: int


@dataclass
class Scene:
    """What the chip's own sensor sees: ``rate_hz`` events per second at (x, y) with polarity p."""

    x: int
    y: int
    p: bool = True
    rate_hz: float = 1000.0


@dataclass
class World:
    boards: list[BoardInfo] = field(default_factory=list)
    now_s: float = 0.0
    open_devices: list = field(default_factory=list)
    # Conformance problems that real samna would not raise but that break a result (events written
    # into a stopped graph, events that lost their timing, a leak without a slow clock, ...).
    problems: list[str] = field(default_factory=list)
    log: list[tuple] = field(default_factory=list)  # (time_s, what, details...) of board operations
    lateness_us: list[int] = field(default_factory=list)  # per released host event
    # Behaviours no public source settles, as switches a test can set:
    kill_masks_host_events: bool = True  # does KillSensorPixel drop host-written DvsEvents?
    power_fails: bool = False            # start_auto_power_measurement raises (a board fault)
    scene: Scene | None = None           # the chip's own sensor output, None: a dark scene

    def add_board(self, device_type_name: str, usb_device_address: int | None = None) -> BoardInfo:
        info = BoardInfo(device_type_name, len(self.boards) + 1 if usb_device_address is None
                         else usb_device_address)
        self.boards.append(info)
        return info

    def see(self, x: int, y: int, p: bool = True, rate_hz: float = 1000.0) -> None:
        """Let the chip's own sensor see ``rate_hz`` events per second at (x, y)."""
        self.scene = Scene(x, y, p, rate_hz)

    def sleep(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"sleep({seconds}): negative")
        start, self.now_s = self.now_s, self.now_s + float(seconds)
        for device in list(self.open_devices):
            device._advance(start, self.now_s)

    def problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)

    def calls(self, what: str) -> list[tuple]:
        return [entry for entry in self.log if entry[1] == what]


WORLD = World()


def reset() -> World:
    """A fresh world (a test's boards, clock and records start empty)."""
    global WORLD
    WORLD.__init__()
    return WORLD
