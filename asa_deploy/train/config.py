"""Training configuration: everything that decides the result, stored in every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from asa_deploy.defaults import TEST_WINDOWS


@dataclass
class TrainConfig:
    data: str = "synthetic:gesture"
    model: str = "dvs-small"
    attention: str = "none"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    lr_min: float = 1e-6
    weight_decay: float = 1e-4
    loss: str = "mse"  # "mse" on output rates against one-hot (the paper's), or "ce" on spike counts
    seed: int = 0
    val_fraction: float = 0.2
    n_val: int | None = None
    T: int | None = None  # default: the model spec's T
    dt_us: int | None = None  # default: the dataset's default bin width
    downsample: int | None = None
    binarize: bool = False
    eval_windows: int = TEST_WINDOWS  # windows per validation recording, majority vote
    params: dict = field(default_factory=dict)  # model spec parameter overrides (channel widths)
    asa_lambda: float | None = None
    asa_r: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def differences(self, other: TrainConfig) -> list[str]:
        """Human-readable fields that differ, e.g. ``model: 'arch-a' (checkpoint) vs 'arch-d'``."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {a[k]!r} (checkpoint) vs {b[k]!r} (now)" for k in a if a[k] != b[k]]
