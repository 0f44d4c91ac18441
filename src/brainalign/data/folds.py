"""The authors' 5-fold stimulus split (lists/stratified-fold-assignment.pkl, braindnn@1222378f)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brainalign.data.safe_pickle import load_numeric_array_pickle
from brainalign.data.stimuli import N_SOUNDS
from brainalign.errors import InputError

N_FOLDS = 5
SOUNDS_PER_FOLD = 33


def load_folds(path: str | Path) -> np.ndarray:
    """Fold index (0..4) of each sound, int64 (165,), in canonical stimulus order.

    The file is a joblib pickle, treated as untrusted: only a numeric numpy array may come out
    of it (restricted unpickler), and it must hold 33 sounds in each of the 5 folds.
    """
    path = Path(path)
    raw = load_numeric_array_pickle(path)
    if raw.shape != (N_SOUNDS,):
        raise InputError(path, f"expected a fold array of shape ({N_SOUNDS},), got {raw.shape}")
    if not np.all(np.isfinite(raw)) or not np.all(raw == np.round(raw)):
        raise InputError(path, "fold values must be whole numbers")
    folds = raw.astype(np.int64)
    counts = np.bincount(folds, minlength=N_FOLDS) if folds.min() >= 0 else None
    if counts is None or len(counts) != N_FOLDS or not np.all(counts == SOUNDS_PER_FOLD):
        raise InputError(
            path,
            f"expected values 0..{N_FOLDS - 1} with {SOUNDS_PER_FOLD} sounds each, "
            f"got counts {np.unique(folds, return_counts=True)}",
        )
    return folds
