"""Representational dissimilarity matrices and their comparison, as the paper specifies.

RDM = 1 - Pearson correlation between the sound patterns (rows) after z-scoring every feature
(column) across sounds with ``(x - mean) / (std + eps)``, eps = 1e-10. Two RDMs are compared by
Spearman rho on the strict upper triangle. NaN anywhere in the compared cells gives NaN (scipy's
``nan_policy='propagate'``), as does a constant vector.

The RDM itself is computed with ``np.corrcoef`` (as the protocol), so tie structure and ranks are
bit-identical to the authors'; the Spearman correlation is vectorised over many RDMs at once.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

RDM_EPS = 1e-10


def rdm(x: np.ndarray, eps: float = RDM_EPS) -> np.ndarray:
    """RDM of patterns ``x`` (n_sounds, n_features): ``1 - corrcoef(zscore(x))``."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (x - np.mean(x, axis=0)) / (np.std(x, axis=0) + eps)
        return 1 - np.corrcoef(z)


def upper_indices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row/column indices of the strict upper triangle, in ``np.triu_indices`` order."""
    return np.triu_indices(n, k=1)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of vector ``a`` (m,) with each row of ``b`` (L, m), in np.corrcoef's order."""
    m = a.shape[-1]
    ac = a - a.mean()
    bc = b - b.mean(axis=-1, keepdims=True)
    sab = (bc * ac).sum(axis=-1) / (m - 1)
    saa = (ac * ac).sum() / (m - 1)
    sbb = (bc * bc).sum(axis=-1) / (m - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = sab / np.sqrt(sbb) / np.sqrt(saa)
    return np.clip(r, -1.0, 1.0)


def spearman_many(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rho of ``a`` (m,) with each row of ``b`` (L, m), as ``scipy.stats.spearmanr``.

    NaN where either input has a NaN or is constant.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.atleast_2d(np.asarray(b, dtype=np.float64))
    out = np.full(b.shape[0], np.nan)
    if a.size < 2 or np.isnan(a).any() or np.all(a == a[0]):
        return out
    ok = ~np.isnan(b).any(axis=1) & ~np.all(b == b[:, :1], axis=1)
    if ok.any():
        out[ok] = _pearson_rows(rankdata(a), rankdata(b[ok], axis=1))
    return out


def compare_rdms(
    fmri_rdm: np.ndarray, model_rdms: np.ndarray | list[np.ndarray], mask: np.ndarray | None = None
) -> np.ndarray:
    """Spearman rho of an fMRI RDM with each model RDM on the strict upper triangle.

    ``mask`` (n, n) bool restricts the compared cells (cells of the upper triangle where it is
    True). The fMRI RDM comes first, as in the protocol's ``spearmanr(fmri, model)``.
    """
    iu = upper_indices(fmri_rdm.shape[0])
    if mask is not None:
        keep = mask[iu]
        iu = (iu[0][keep], iu[1][keep])
    models = np.stack([np.asarray(m)[iu] for m in model_rdms])
    return spearman_many(fmri_rdm[iu], models)
