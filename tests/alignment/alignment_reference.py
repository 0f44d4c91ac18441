"""A deliberately literal, slow reference of the paper's protocol, written from paper-spec.md.

One target at a time, plain loops, scikit-learn ``Ridge(alpha)`` (default solver 'auto', which
is Cholesky for dense input; default ``fit_intercept=True``) fitted on X and y centred with the
training means, exactly as the protocol does. RSA with numpy/scipy calls as specified. Used only
by the tests, to prove the vectorised engine equal to the protocol.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.linear_model import Ridge

GRID = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 50.0)
LIMITS = (1e-49, 1e50)


class CentredRidge:
    """Ridge on one layer, X and y centred with the training means, no scaling."""

    def __init__(self, alpha: float, layer: str) -> None:
        self.model = Ridge(alpha)
        self.layer = layer

    def fit(self, x: dict, y: np.ndarray) -> None:
        x = x[self.layer]
        self.mean_x = x.mean(axis=0)
        self.mean_y = y.mean()
        self.model.fit(x - self.mean_x, y - self.mean_y)

    def predict(self, x: dict) -> np.ndarray:
        return self.model.predict(x[self.layer] - self.mean_x) + self.mean_y


def r2(y: np.ndarray, pred: np.ndarray, tol: float | None = None) -> float:
    """Clipped squared Pearson r; a constant y (std exactly 0) scores 0."""
    if (np.std(y) == 0) if tol is None else (np.std(y) <= tol):
        return 0
    r = np.corrcoef(y, pred)[1, 0]
    if r < 0:
        r = 0
    return r**2


def pooled_cv_score(x: dict, y: np.ndarray, folds: np.ndarray, alpha: float, layer: str) -> float:
    """Leave-one-fold-out predictions pooled over all folds, scored once."""
    preds = np.zeros_like(y)
    for f in np.unique(folds):
        model = CentredRidge(alpha, layer)
        model.fit({k: v[folds != f] for k, v in x.items()}, y[folds != f])
        preds[folds == f] = model.predict({k: v[folds == f] for k, v in x.items()})
    return r2(y, preds)


def search(
    x: dict,
    y: np.ndarray,
    folds: np.ndarray,
    layers: list[str],
    grid=GRID,
    limits=LIMITS,
    extend=True,
    nan_safe=False,
):
    """Grid search (alpha-major, then layers) with the edge-extension rule."""
    candidates = [(a, layer) for a in grid for layer in layers]
    scores = [pooled_cv_score(x, y, folds, a, layer) for a, layer in candidates]
    bounds = [min(grid), max(grid)]

    def pick() -> int:
        arr = np.array(scores, dtype=float)
        if nan_safe:
            arr = np.where(np.isnan(arr), -np.inf, arr)
        return int(np.argmax(arr))

    best = pick()
    while extend:
        alpha, layer = candidates[best]
        if alpha not in bounds:
            break
        if alpha / 2 < limits[0] or alpha * 2 > limits[1]:
            break
        if alpha == bounds[0]:
            new = alpha / 2
            bounds[0] = new
        else:
            new = alpha * 2
            bounds[1] = new
        candidates.append((new, layer))
        scores.append(pooled_cv_score(x, y, folds, new, layer))
        best = pick()
    return candidates[best], candidates, scores


def nested(x: dict, y: np.ndarray, folds: np.ndarray, layers: list[str], **kw):
    """The full nested CV for one target: final score and per-fold search records."""
    preds = np.zeros_like(y)
    records = []
    for k in np.unique(folds):
        tr, te = folds != k, folds == k
        x_tr = {n: v[tr] for n, v in x.items()}
        (alpha, layer), cands, scores = search(x_tr, y[tr], folds[tr], layers, **kw)
        model = CentredRidge(alpha, layer)
        model.fit(x_tr, y[tr])
        preds[te] = model.predict({n: v[te] for n, v in x.items()})
        records.append(
            {
                "alpha": alpha,
                "layer": layer,
                "candidates": cands,
                "scores": scores,
                "x_tr": x_tr,
                "y_tr": y[tr],
                "f_tr": folds[tr],
            }
        )
    return r2(y, preds), records


# ---------------------------------------------------------------------------------- RSA


def rdm(x: np.ndarray, eps: float = 1e-10) -> np.ndarray:
    x = (x - np.mean(x, axis=0)) / (np.std(x, axis=0) + eps)
    return 1 - np.corrcoef(x)


def rdm_rho(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    iu = np.triu_indices_from(a, k=1)
    if mask is not None:
        keep = mask[iu]
        iu = (iu[0][keep], iu[1][keep])
    return stats.spearmanr(a[iu], b[iu])[0]


def cv_layer_select(fmri: np.ndarray, layers: list[np.ndarray], folds: np.ndarray):
    """Cross-validated layer selection over fold pairs (i, j >= i), later pairs overwrite."""
    uf = np.unique(folds)
    n = fmri.shape[0]
    assembled = np.zeros((n, n))
    selected = np.zeros((n, n))
    f_rdm = rdm(fmri)
    l_rdms = [rdm(x) for x in layers]
    for i in range(len(uf)):
        for j in range(i, len(uf)):
            train = ~(folds == uf[i])[:, None] * ~(folds == uf[j])[None, :]
            rhos = [rdm_rho(f_rdm, lr, mask=train) for lr in l_rdms]
            assembled[~train] = l_rdms[np.argmax(rhos)][~train]
            selected[~train] = np.argmax(rhos)
    return rdm_rho(f_rdm, assembled), assembled, selected
