"""Training configuration: everything that decides the result, stored in every checkpoint."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields

from asa_deploy.defaults import AMP_MODES, MEMORY_MODES, TEST_WINDOWS, TORCH_DEVICE
from asa_deploy.errors import ModelSpecError

# What each recipe sets for training; its network-level settings are nn.network.apply_recipe's.
# Fields left None in a TrainConfig take the recipe's value; explicit values win.
RECIPE_TRAINING = {
    "default": {"lr": 1e-3, "loss": "mse"},
    "paper": {"lr": 1e-4, "loss": "mse"},  # docs/asa-method.md section 5: Adam 1e-4, cosine, MSE on rates
}
# Where and how the same arithmetic runs, not what it computes: a checkpoint resumes under other
# values (a run started on a GPU continues on the CPU, or with --memory lean). Results are identical
# for any number of workers; across devices and memory modes they agree up to float rounding.
# ``amp`` changes the arithmetic itself (bfloat16 keeps 8 bits of mantissa), so it stays part of
# the run.
EXECUTION_FIELDS = ("device", "workers", "memory")


@dataclass
class TrainConfig:
    data: str = "synthetic:gesture"
    model: str = "dvs-small"
    attention: str = "none"
    epochs: int = 10
    batch_size: int = 32
    lr: float | None = None  # None: the recipe's
    lr_min: float = 1e-6
    weight_decay: float = 1e-4
    loss: str | None = None  # "mse" on output rates against one-hot (the paper's), or "ce" on
    # spike counts; None: the recipe's
    seed: int = 0
    val_fraction: float = 0.2
    n_val: int | None = None
    T: int | None = None  # default: the model spec's T
    dt_us: int | None = None  # default: the dataset's default bin width
    downsample: int | None = None
    binarize: bool = False
    eval_windows: int = TEST_WINDOWS  # windows per validation recording, majority vote
    params: dict = field(default_factory=dict)  # model spec parameter overrides (channel widths)
    neuron: str | None = None  # None: the model spec's; "iaf": chip-native training
    asa_lambda: float | None = None
    asa_r: int | None = None
    recipe: str = "default"  # "default" (threshold-scaled BN start) or "paper" (docs/asa-method.md 5)
    release_masks: bool = False  # ASA: the authors' batch-union masks, importance MLP frozen
    # Synops cost (train/cost.py): loss += synops_weight x (network-driven synops per window, or
    # with a budget relu(total synops per window - budget)) / synops with every neuron firing once
    # per step. 0: no cost term (the cost is still logged).
    synops_weight: float = 0.0
    synops_budget: float | None = None
    device: str = "auto"  # auto, cpu, cuda or cuda:N (train/accelerator.py)
    workers: int = 0  # DataLoader processes framing the data off the training thread
    amp: str = "off"  # mixed precision of the forward pass: off, bf16 or fp16 (GPU only)
    memory: str = "standard"  # "lean": conv blocks keep less for the backward (train/memory.py)

    def __post_init__(self) -> None:
        """The Python API refuses what the CLI's parser refuses (a negative batch trained to NaN)."""
        def positive(value) -> bool:
            return isinstance(value, int | float) and not isinstance(value, bool) \
                and math.isfinite(value) and value > 0

        if self.recipe not in RECIPE_TRAINING:
            raise ModelSpecError(f"training configuration: recipe {self.recipe!r} unknown; use "
                                 f"one of {list(RECIPE_TRAINING)}")
        for name, value in RECIPE_TRAINING[self.recipe].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        bad = [f"{name}={getattr(self, name)!r} (must be a positive integer)"
               for name in ("epochs", "batch_size", "eval_windows")
               if not (isinstance(getattr(self, name), int) and positive(getattr(self, name)))]
        bad += [f"{name}={getattr(self, name)!r} (must be a positive integer or None)"
                for name in ("T", "dt_us", "downsample", "asa_r")
                if getattr(self, name) is not None
                and not (isinstance(getattr(self, name), int) and positive(getattr(self, name)))]
        if not positive(self.lr):
            bad.append(f"lr={self.lr!r} (must be a finite number > 0)")
        bad += [f"{name}={getattr(self, name)!r} (must be a finite number >= 0)"
                for name in ("lr_min", "weight_decay")
                if not (positive(getattr(self, name)) or getattr(self, name) == 0)]
        if not (isinstance(self.val_fraction, int | float) and 0 <= self.val_fraction < 1):
            bad.append(f"val_fraction={self.val_fraction!r} (must lie in [0, 1))")
        if self.n_val is not None and not (isinstance(self.n_val, int) and self.n_val >= 0):
            bad.append(f"n_val={self.n_val!r} (must be a non-negative integer or None)")
        if not (positive(self.synops_weight) or self.synops_weight == 0):
            bad.append(f"synops_weight={self.synops_weight!r} (must be a finite number >= 0)")
        if self.synops_budget is not None and not positive(self.synops_budget):
            bad.append(f"synops_budget={self.synops_budget!r} (must be a finite number > 0 or None)")
        elif self.synops_budget is not None and not self.synops_weight:
            bad.append(f"synops_budget={self.synops_budget!r} with synops_weight 0 (a budget needs a "
                       f"weight: set --synops-weight, e.g. 1)")
        if self.asa_lambda is not None and not (positive(self.asa_lambda) and self.asa_lambda < 1):
            bad.append(f"asa_lambda={self.asa_lambda!r} (must lie in (0, 1))")
        bad += [f"params[{k!r}]={v!r} (must be a positive integer)"
                for k, v in self.params.items() if not (isinstance(v, int) and positive(v))]
        if not (isinstance(self.device, str) and re.fullmatch(TORCH_DEVICE, self.device)):
            bad.append(f"device={self.device!r} (must be auto, cpu, cuda or cuda:N)")
        if not (isinstance(self.workers, int) and not isinstance(self.workers, bool)
                and self.workers >= 0):
            bad.append(f"workers={self.workers!r} (must be a non-negative integer)")
        if self.amp not in AMP_MODES:
            bad.append(f"amp={self.amp!r} (must be one of {', '.join(AMP_MODES)})")
        if self.memory not in MEMORY_MODES:
            bad.append(f"memory={self.memory!r} (must be one of {', '.join(MEMORY_MODES)})")
        elif self.memory == "lean" and self.amp != "off":
            bad.append(f"memory='lean' with amp={self.amp!r} (the lean conv blocks compute in "
                       f"float32; mixed precision already halves what the forward keeps: use "
                       f"--memory standard with --amp, or --amp off with --memory lean)")
        if bad:
            raise ModelSpecError("training configuration: " + "; ".join(bad))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def differences(self, other: TrainConfig) -> list[str]:
        """Human-readable fields that differ, e.g. ``model: 'arch-a' (checkpoint) vs 'arch-d'``;
        ``EXECUTION_FIELDS`` (device, workers) do not make another run."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {a[k]!r} (checkpoint) vs {b[k]!r} (now)" for k in a
                if a[k] != b[k] and k not in EXECUTION_FIELDS]
