"""What a wheel install needs: every imported package declared, every subpackage listed, the model
specs and chip files inside the wheel. `.ci/wheel_smoke.sh` then installs the wheel into a clean
venv and runs the first steps; these tests say which of those facts broke, and fast."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from helpers import SUBPROCESS_TIMEOUT_S

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# import name -> distribution name, where they differ
DISTRIBUTION = {"yaml": "pyyaml"}
# imported only inside the board adapter, and only when a board is asked for (docs/speck-hardware.md:
# PyPI's samna is a stub that downloads at import time, so it is never a dependency)
OPTIONAL = {"samna"}


def _imported_packages() -> set[str]:
    found = set()
    for path in (ROOT / "asa_deploy").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found.update(name.split(".")[0] for name in names)
    return {name for name in found if name not in sys.stdlib_module_names} - {"asa_deploy"}


def _declared() -> set[str]:
    return {re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0].lower()
            for requirement in PYPROJECT["project"]["dependencies"]}


def test_every_imported_package_is_declared():
    missing = {name for name in _imported_packages() - OPTIONAL
               if DISTRIBUTION.get(name, name).lower() not in _declared()}
    assert not missing, f"imported by asa_deploy but not in pyproject's dependencies: {missing}"


def test_every_declared_dependency_has_a_range():
    unbounded = [r for r in PYPROJECT["project"]["dependencies"]
                 if not re.search(r"==|<", r)]
    assert not unbounded, f"dependencies without an upper bound: {unbounded}"


def test_every_subpackage_is_listed_for_the_build():
    found = {".".join(path.parent.relative_to(ROOT).parts)
             for path in (ROOT / "asa_deploy").rglob("__init__.py")}
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    mapped = set(PYPROJECT["tool"]["setuptools"]["package-dir"])
    assert listed == found | mapped


def test_the_wheel_holds_the_model_specs_and_chip_files(tmp_path):
    source = tmp_path / "source"  # a copy: setuptools builds in the tree and leaves build/ there
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    for name in ("asa_deploy", "models", "hw_configs"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(tmp_path), str(source)],
                   check=True, capture_output=True, timeout=SUBPROCESS_TIMEOUT_S)
    (wheel,) = tmp_path.glob("asa_deploy-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for spec in (ROOT / "models").glob("*.yaml"):
        assert f"asa_deploy/models/{spec.name}" in names
    for chip in (ROOT / "hw_configs").glob("*.toml"):
        assert f"asa_deploy/hw_configs/{chip.name}" in names
    assert "asa_deploy/py.typed" in names
    assert not any(name.startswith(("tests/", "benchmarks/")) for name in names)
