"""Seeded, stratified train/validation splits of a dataset's recordings.

Splits are made per recording, never per window, so no recording feeds both sides; every class
with at least two recordings lands on both sides, so validation accuracy covers every class.
"""

from __future__ import annotations

import numpy as np

from asa_deploy.errors import DataSpecError


def stratified_split(
    labels: np.ndarray,
    *,
    n_val: int | None = None,
    val_fraction: float = 0.2,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Split recording indices into sorted ``(train_idx, val_idx)``, each class proportionally.

    ``n_val`` fixes the validation size exactly; otherwise it is ``round(val_fraction * N)``,
    raised or lowered as needed so each class with >= 2 recordings keeps one on each side.
    Classes with a single recording go to training. ``n_val=0`` or ``val_fraction=0`` holds out
    nothing (training then keeps its last epoch). The same ``seed`` gives the same split.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise DataSpecError(
            f"stratified_split needs a non-empty 1-D label array, got {labels.shape}"
        )
    if n_val == 0 or (n_val is None and val_fraction == 0):
        return np.arange(len(labels)), np.array([], dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    low = (counts >= 2).astype(np.int64)
    high = np.maximum(counts - 1, 0)
    if n_val is None:
        if not 0.0 < val_fraction < 1.0:
            raise DataSpecError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        n_val = int(np.clip(round(val_fraction * len(labels)), low.sum(), high.sum()))
    elif not low.sum() <= n_val <= high.sum():
        raise DataSpecError(
            f"n_val={n_val} is impossible for {len(labels)} recordings in {len(classes)} classes: "
            f"a stratified split can hold out between {low.sum()} (one per class with >= 2 "
            f"recordings) and {high.sum()} (all but one per class); choose n_val in that range"
        )
    ideal = n_val * counts / len(labels)
    quota = np.clip(np.floor(ideal).astype(np.int64), low, high)
    # Largest remainder: give or take one recording where the quota is furthest from its share.
    while quota.sum() < n_val:
        quota[np.argmax(np.where(quota < high, ideal - quota, -np.inf))] += 1
    while quota.sum() > n_val:
        quota[np.argmax(np.where(quota > low, quota - ideal, -np.inf))] -= 1
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(labels), dtype=bool)
    for cls, take in zip(classes, quota, strict=True):
        is_val[rng.permutation(np.flatnonzero(labels == cls))[:take]] = True
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)
