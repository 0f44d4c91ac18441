"""RSA variants of the paper: layer-wise (max over layers), cross-validated layer selection,
the topline (noise ceiling), each optionally restricted to one ROI by the caller.

NaN policies (paper-spec section 7): with ``nan_policy='authors'`` (default) each variant
handles NaN as the authors' code does:
- layer-wise: NaN voxels are NOT dropped, so a subject with any NaN voxel gets rho = NaN and
  drops out of the NaN-ignoring mean/SD; the best layer is numpy's argmax of the layer means
  (NaN counts as the maximum) and the max is Python's ``max`` over the list of layer means;
- cross-validated: NaN voxels are dropped per subject; a layer whose rho is NaN (a constant
  layer gives a NaN RDM) wins numpy's argmax in every fold pair, and the subject's rho is NaN;
- topline: a subject whose RDM has any NaN is excluded; with one subject left the score is NaN.
With ``nan_policy='omit'`` every variant drops NaN voxels, NaN rhos never win a selection, and
aggregates ignore NaN (uniform, NaN-safe behaviour).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from brainalign.alignment.rdm import RDM_EPS, rdm, spearman_many, upper_indices
from brainalign.errors import InputError

NAN_POLICIES = ("authors", "omit")


@dataclass(frozen=True)
class RSAConfig:
    """RSA parameters; defaults are the paper's protocol."""

    eps: float = RDM_EPS
    nan_policy: str = "authors"

    def __post_init__(self) -> None:
        if self.nan_policy not in NAN_POLICIES:
            raise InputError(
                "rsa.nan_policy", f"expected one of {NAN_POLICIES}, got {self.nan_policy!r}"
            )
        if not (self.eps >= 0):
            raise InputError("rsa.eps", f"expected >= 0, got {self.eps}")


def _argmax(values: np.ndarray, policy: str) -> int:
    """numpy argmax (NaN wins, first maximum) or its NaN-safe variant."""
    values = np.asarray(values, dtype=np.float64)
    if policy == "omit":
        values = np.where(np.isnan(values), -np.inf, values)
    return int(np.argmax(values))


def _drop_nan_voxels(x: np.ndarray) -> np.ndarray:
    return x[:, ~np.isnan(x).any(axis=0)]


def layer_rdms(layers: list[np.ndarray], config: RSAConfig | None = None) -> np.ndarray:
    """RDMs of each layer, stacked (n_layers, n, n)."""
    config = config or RSAConfig()
    return np.stack([rdm(x, config.eps) for x in layers])


# ------------------------------------------------------------------------------ layer-wise


def layerwise_rsa(
    fmri: np.ndarray, model_rdms: np.ndarray, config: RSAConfig | None = None
) -> np.ndarray:
    """rho of one subject's fMRI patterns (n, n_vox) with every layer RDM -> (n_layers,)."""
    config = config or RSAConfig()
    if config.nan_policy == "omit":
        fmri = _drop_nan_voxels(fmri)
    f = rdm(fmri, config.eps)
    iu = upper_indices(f.shape[0])
    return spearman_many(f[iu], model_rdms[:, iu[0], iu[1]])


@dataclass
class LayerwiseSummary:
    """Across-subject summary: per-layer mean and SD, best layer, max-layer rho and its SD."""

    mean: np.ndarray
    sd: np.ndarray
    n_subjects: np.ndarray
    best_layer: int
    max_rho: float
    max_sd: float


def summarize_layerwise(rho: np.ndarray, nan_policy: str = "authors") -> LayerwiseSummary:
    """Summarise rho (n_subjects, n_layers): NaN-ignoring mean and SD (ddof=1) per layer."""
    rho = np.asarray(rho, dtype=np.float64)
    n_ok = (~np.isnan(rho)).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.where(np.isnan(rho), 0.0, rho).sum(axis=0)
        mean = np.where(n_ok > 0, total / np.maximum(n_ok, 1), np.nan)
        dev = np.where(np.isnan(rho), 0.0, rho - mean) ** 2
        sd = np.where(n_ok > 1, np.sqrt(dev.sum(axis=0) / np.maximum(n_ok - 1, 1)), np.nan)
    best = _argmax(mean, nan_policy)
    if nan_policy == "omit":
        max_rho = float(mean[best])
    else:  # Python's max() over the list, as the authors' notebook
        max_rho = float(mean[0])
        for v in mean[1:]:
            if v > max_rho:
                max_rho = float(v)
    return LayerwiseSummary(
        mean=mean, sd=sd, n_subjects=n_ok, best_layer=best, max_rho=max_rho, max_sd=float(sd[best])
    )


# ------------------------------------------------------------------------- cross-validated


@dataclass
class CVResult:
    """One subject's cross-validated RSA: rho, the assembled RDM and the selected-layer matrix."""

    rho: float
    assembled: np.ndarray
    selected: np.ndarray


def fold_pairs(folds: np.ndarray) -> list[tuple[int, int]]:
    """Fold pairs (i, j >= i) over the sorted unique folds, in the protocol's order."""
    uf = np.unique(folds)
    return [(int(uf[i]), int(uf[j])) for i in range(len(uf)) for j in range(i, len(uf))]


def cv_rsa(
    fmri: np.ndarray, model_rdms: np.ndarray, folds: np.ndarray, config: RSAConfig | None = None
) -> CVResult:
    """Cross-validated layer selection for one subject's fMRI patterns (n, n_vox).

    For every fold pair (i, j), j >= i, in order: cells whose row is in fold i or whose column is
    in fold j are held out; the layer with the best rho on the remaining strict-upper-triangle
    cells fills the held-out cells of the assembled RDM (later pairs overwrite earlier ones).
    NaN voxels are dropped (both policies).
    """
    config = config or RSAConfig()
    folds = np.asarray(folds)
    if len(np.unique(folds)) < 2:
        raise InputError("folds", "cross-validated RSA needs at least 2 folds")
    f = rdm(_drop_nan_voxels(fmri), config.eps)
    n = f.shape[0]
    iu = upper_indices(n)
    fu = f[iu]
    mu = model_rdms[:, iu[0], iu[1]]
    assembled = np.zeros((n, n))
    selected = np.zeros((n, n), dtype=np.int64)
    for i, j in fold_pairs(folds):
        train = ~(folds == i)[:, None] & ~(folds == j)[None, :]
        keep = train[iu]
        rhos = spearman_many(fu[keep], mu[:, keep])
        best = _argmax(rhos, config.nan_policy)
        assembled[~train] = model_rdms[best][~train]
        selected[~train] = best
    rho = spearman_many(fu, assembled[iu][None, :])[0]
    return CVResult(rho=float(rho), assembled=assembled, selected=selected)


# --------------------------------------------------------------------------------- topline


def topline(
    fmri_by_subject: list[np.ndarray], config: RSAConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-subject-out noise ceiling.

    Returns (rho per kept subject, indices of the kept subjects). Each subject's RDM is compared
    with the mean RDM of the other kept subjects: ``spearmanr(mean of others, subject)``.
    """
    config = config or RSAConfig()
    rdms, kept = [], []
    for s, x in enumerate(fmri_by_subject):
        if config.nan_policy == "omit":
            x = _drop_nan_voxels(x)
        r = rdm(x, config.eps)
        if not np.isnan(r).any():
            rdms.append(r)
            kept.append(s)
    if not rdms:
        return np.array([]), np.array([], dtype=np.int64)
    stack = np.array(rdms)
    iu = upper_indices(stack.shape[1])
    out = np.empty(len(rdms))
    for i in range(len(rdms)):
        others = np.delete(stack, i, axis=0)
        if others.shape[0] == 0:
            out[i] = np.nan
            continue
        mean_others = others.mean(axis=0)
        out[i] = spearman_many(mean_others[iu], stack[i][iu][None, :])[0]
    return out, np.asarray(kept, dtype=np.int64)
