"""The notebooks run, top to bottom, with tiny settings, so they cannot rot."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
TINY_DVS = "['--T', '5', '--eval-windows', '2', '--param', 'c1=4', '--param', 'c2=8', '--param', 'c3=8', '--param', 'fc=16']"
CASES = {
    "quickstart": (f"DATA = 'synthetic:gesture-tiny'\nEPOCHS = 1\nFINETUNE_EPOCHS = 0\nEXTRA = {TINY_DVS}", False),
    "redundancy_nmnist": ("DATA = 'nmnist:../shared/data/nmnist-small'\nEPOCHS = 1\nN_VAL = 20\n"
                          "EXTRA = ['--T', '5', '--param', 'c1=4', '--param', 'c2=8', '--param', 'fc=16']",
                          True),
    "deployment": ("DATA = 'synthetic:gesture-tiny'\nEPOCHS = 1\nCLIP = '../shared/data/dvsgesture-10/1.bs2'\n"
                   "EXTRA = ['--T', '5', '--param', 'c=4', '--param', 'fc=8']", True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_notebook_runs(name, tmp_path, request):
    parameters, needs_shared_data = CASES[name]
    if needs_shared_data:
        request.getfixturevalue("shared_data")  # skips when ../shared/data is absent
    book = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    cell = next(c for c in book.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = f"OUT = {str(tmp_path / name)!r}\n{parameters}"
    NotebookClient(book, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    assert any(o.get("output_type") == "stream" for c in book.cells if c.cell_type == "code"
               for o in c.get("outputs", []))
