"""Aggregation of per-voxel and per-subject scores, as the authors' analysis does it.

Regression: median of each subject's voxel scores (``np.median``: a NaN voxel score makes the
subject NaN; ``nan_policy='omit'`` uses ``np.nanmedian``), then mean over subjects ignoring NaN,
error = SEM = nanstd (ddof 0) / sqrt(n - 1) with n the non-NaN subjects (= std ddof 1 / sqrt n).
"""

from __future__ import annotations

import numpy as np


def subject_medians(
    scores: np.ndarray, subject: np.ndarray, nan_policy: str = "authors"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-subject median of ``scores`` -> (subject ids, medians, voxel counts)."""
    scores = np.asarray(scores, dtype=np.float64)
    subject = np.asarray(subject)
    ids = np.unique(subject)
    med = np.empty(ids.size)
    counts = np.empty(ids.size, dtype=np.int64)
    fn = np.nanmedian if nan_policy == "omit" else np.median
    for i, s in enumerate(ids):
        vals = scores[subject == s]
        counts[i] = vals.size
        if vals.size == 0 or (nan_policy == "omit" and np.isnan(vals).all()):
            med[i] = np.nan
        else:
            med[i] = fn(vals)
    return ids, med, counts


def mean_sem(values: np.ndarray) -> tuple[float, float, int]:
    """NaN-ignoring mean and SEM (std ddof 1 / sqrt n) over the non-NaN values, and n."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    n = int(v.size)
    if n == 0:
        return float("nan"), float("nan"), 0
    mean = float(v.mean())
    sem = float(np.std(v) / np.sqrt(n - 1)) if n > 1 else float("nan")
    return mean, sem, n
