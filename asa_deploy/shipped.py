"""What the package ships beside its code: the network specs (``models/``) and the chip files
(``hw_configs/``), found where the installation put them. Neither torch nor any stage is imported,
so ``asa-deploy models`` and the CLI's argument checks answer at once."""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path


def _shipped(folder: str) -> Path:
    """``folder`` (models or hw_configs) as installed: inside the package in a wheel (the build maps
    the repository's top-level folder to ``asa_deploy/<folder>``), else beside the package in a
    source checkout or an editable install."""
    packaged = importlib.resources.files("asa_deploy") / folder
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[1] / folder


def models_dir() -> Path:
    """Where named model specs live: $ASA_DEPLOY_MODELS, else the installed ``models/``."""
    return Path(os.environ.get("ASA_DEPLOY_MODELS", _shipped("models")))


def hw_configs_dir() -> Path:
    """Where named chips live: $ASA_DEPLOY_HW_CONFIGS, else the installed ``hw_configs/``."""
    return Path(os.environ.get("ASA_DEPLOY_HW_CONFIGS", _shipped("hw_configs")))


def list_models() -> list[tuple[str, str]]:
    """(name, first line of its description) of every spec in ``models_dir()``."""
    import yaml

    out = []
    for path in sorted(models_dir().glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        out.append((path.stem, str(spec.get("description", "")).strip().splitlines()[0]))
    return out
