"""Domain errors: each says what went wrong, where, and what to do (docs/design.md section 5)."""

from __future__ import annotations


class AsaDeployError(Exception):
    """Base class of every error asa_deploy raises on purpose."""


class DataSpecError(AsaDeployError):
    """A data spec (``nmnist:PATH``, ``synthetic:NAME``, ...) that cannot be opened."""


class BadRecordingError(AsaDeployError):
    """One recording that cannot be used; datasets skip and count it instead of failing."""

    def __init__(self, source: str, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")

    def __reduce__(self):  # rebuilt from both fields when a worker process hands it back
        return type(self), (self.source, self.problem)


class ArtifactError(AsaDeployError):
    """An artifact file (``model.pt``, ``chip_config.json``, ...) that is missing, truncated, corrupt
    or not what its name says; the message names the file and the command that rewrites it.
    ``path`` and ``problem`` (the message without file and remedy) let callers combine several."""

    def __init__(self, message: str, *, path: str | None = None, problem: str | None = None):
        super().__init__(message)
        self.path = path
        self.problem = problem


class ModelSpecError(AsaDeployError):
    """A network spec that cannot be built, or a checkpoint that does not match one."""


class ChipSpecError(AsaDeployError):
    """A hw_config file (``hw_configs/<chip>.toml``) that is missing a field or holds a bad value."""


class ChipConfigError(AsaDeployError):
    """A ChipConfig (``chip_config.json``) with a wrong schema, out-of-range integers or bad shapes."""


class CompileError(AsaDeployError):
    """A network the chip cannot run: an unsupported layer, a design-rule violation or no mapping."""


class ComputeDeviceError(AsaDeployError):
    """A torch device (``--device``) or precision (``--amp``) this machine or torch build cannot run."""


class WriteFailedError(AsaDeployError, OSError):
    """A file that could not be written (read-only folder, full disk). Still an ``OSError``, for
    callers that fall back on one (the event cache). ``result``: what the command had computed
    when the write failed, so that it prints it instead of losing it (``io.results_kept``)."""

    def __init__(self, path: str, cause: OSError):
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))
        self.result = None

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"
