"""Progress of long work: a tqdm bar on a terminal, a log line every half minute elsewhere.

tqdm hides its bar when stderr is not a terminal (``disable=None``), so a fold or a simulation
run under CI, nohup or with its output sent to a file said nothing until it ended. Off a
terminal, ``progress`` logs a line every ``LOG_EVERY_S`` seconds (and one when done) on the
``asa_deploy.progress`` logger instead: the CLI shows it (it logs INFO to stderr), a library user
sees nothing unless their logging asks for INFO. In a notebook it is tqdm's notebook bar.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator

from tqdm import tqdm
from tqdm.auto import tqdm as notebook_tqdm

LOG_EVERY_S = 30.0
log = logging.getLogger("asa_deploy.progress")


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", enabled: bool = True, leave: bool = True):
    """A tqdm-like bar over ``iterable`` (or ``update``d by hand up to ``total``): tqdm on a
    terminal or in a notebook, periodic log lines otherwise, nothing when not ``enabled``."""
    if not enabled:
        return tqdm(iterable, total=total, disable=True)
    if _in_notebook():
        return notebook_tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave)
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave)
    return LogLines(iterable, total=total, desc=desc, unit=unit)


class LogLines:
    """The part of tqdm's interface the stages use, reporting by log lines."""

    def __init__(self, iterable: Iterable | None, *, total: int | None, desc: str, unit: str):
        self.iterable, self.desc, self.unit = iterable, desc, unit
        self.total = total if total is not None or iterable is None else _length(iterable)
        self.n, self.postfix = 0, ""
        self.start = self.last = time.monotonic()

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def __enter__(self) -> LogLines:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= LOG_EVERY_S:
            self.last = now
            log.info("%s", self.line(now))

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self.n:
            log.info("%s", self.line(time.monotonic(), done=True))
            self.n = 0  # a second close (the with block after the loop) says nothing more

    def line(self, now: float, done: bool = False) -> str:
        elapsed = now - self.start
        count = f"{self.n}/{self.total}" if self.total else str(self.n)
        text = f"{self.desc}: {count} {self.unit}"
        if self.total:
            text += f" ({100 * self.n / self.total:.0f} %)"
        text += f", {_duration(elapsed)} elapsed"
        if self.total and not done and self.n:
            text += f", about {_duration(elapsed * (self.total - self.n) / self.n)} left"
        return text + (f", {self.postfix}" if self.postfix else "")


def _in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (tqdm.autonotebook's own test), not merely one
    that imported IPython or ipykernel; tqdm.auto then draws a widget, or a text bar without one."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _length(iterable: Iterable) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
