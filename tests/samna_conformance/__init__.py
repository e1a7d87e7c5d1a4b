"""The samna conformance stand-in for the board tests: ``install(monkeypatch)`` makes ``import samna``
find the stand-in package in this folder (``samna/``, implemented in ``samna_impl.py``), routes the
adapter's waits to its virtual clock, and returns the ``World`` (``samna_world.py``) a test fills
with boards and reads back. Everything is undone when the test ends.

The stand-in implements only what a public source confirms (each name carries its source in
``samna_impl.py``) and raises ``AttributeError`` for anything else, so a misspelt or unconfirmed
samna call in ``asa_deploy.device`` fails the test that makes it.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULES = ("samna_world", "samna_impl", "samna", "samna.device", "samna.graph",
           *(f"samna.{chip}{part}" for chip in ("speck2f", "speck2e", "dynapcnn")
             for part in ("", ".configuration", ".event")))


def install(monkeypatch):
    """Put the stand-in in place of samna for one test; returns its ``World``."""
    for name in MODULES:  # whatever was imported under these names comes back at teardown
        monkeypatch.setitem(sys.modules, name, None)
        del sys.modules[name]
    monkeypatch.syspath_prepend(str(HERE))
    world = importlib.import_module("samna_world").reset()
    importlib.import_module("samna")
    from asa_deploy.device import samna_adapter

    status = samna_adapter.samna_status()
    assert status.available and str(HERE) in status.reason, status.reason
    monkeypatch.setattr(samna_adapter, "_wait", world.sleep)
    return world
