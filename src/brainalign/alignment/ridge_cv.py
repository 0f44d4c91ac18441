"""Nested cross-validated ridge regression, the paper's protocol, vectorised across voxels.

Protocol (paper-spec.md section 4, behaviours of section 7), per target column (voxel or
component) ``y`` and fold array ``folds``:

- outer fold k is the test set; on the other sounds T an inner leave-one-fold-out search picks
  (alpha, layer) jointly. Each candidate is scored once on the pooled inner predictions of all
  of T: ``r2(y_T, pooled)``, where ``r2`` is the squared Pearson r of ``corrcoef(y, pred)[1, 0]``,
  r < 0 clipped to 0, and 0 when ``std(y) == 0`` exactly;
- a model = ridge on one layer, X and y centred with the training means, no scaling;
- candidates are enumerated alpha-major then layer; the best is numpy's ``argmax`` (first
  maximum; a NaN score counts as the maximum, the first NaN wins);
- edge rule: while the best alpha equals the lowest (highest) alpha tried so far, try alpha/2
  (alpha*2) with the best layer only; the new candidate wins only if strictly better; stop at
  the first step that does not win, or when ``alpha/2 < 1e-49`` or ``alpha*2 > 1e50``;
- the chosen pair is refit on T and predicts fold k; the voxel's score is ``r2`` of the pooled
  out-of-fold predictions of all sounds.

How it is fast: per (outer fold, inner fold, layer) one thin SVD of the centred training
activations ``Xc = U diag(s) V^T`` gives every ridge solution at once: predictions on held-out
sounds are ``mean_y + (Xtest - mean_X) V diag(s / (s^2 + alpha)) U^T (y - mean_y)``. For a fixed
alpha this is one small (n_test x n_train) matrix applied to all voxels by a single matrix
product; the 8 grid alphas are stacked into one product. The edge rule is evaluated for all
voxels at once: every voxel in a lower (upper) chain sits at the same alpha at a given step
(they all started at the grid edge and doubled/halved together), so a step is one product per
layer over the voxels still in the chain. Singular values below ``rcond * s_max`` (numerically
zero: the direction removed by centring, or an all-zero layer) are dropped, which is the
exact-arithmetic ridge solution; deep inside lower-edge chains (alpha < 1e-8) where the stopping
point is decided by floating-point rounding, this can stop at a different tiny alpha than
scikit-learn's Cholesky solver (paper-spec section 7 defines exactness accordingly).

All arithmetic is float64 (activations are cast). scikit-learn's Ridge computes in the dtype
of X, so with float32 activations the authors' numbers carry float32 rounding; this engine
computes the exact-arithmetic protocol instead (documented deviation).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from brainalign.alignment.backends import BACKENDS, Backend, NumpyBackend, get_backend
from brainalign.errors import InputError

log = logging.getLogger(__name__)

PAPER_ALPHAS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 50.0)
PAPER_ALPHA_LIMITS = (1e-49, 1e50)
NAN_POLICIES = ("authors", "omit")


@dataclass(frozen=True)
class RegressionConfig:
    """Regression protocol parameters; defaults are the paper's protocol.

    ``nan_policy``: ``authors`` reproduces numpy's argmax (a NaN inner score wins the search);
    ``omit`` never selects a NaN-scoring candidate and aggregates with NaN-ignoring statistics.
    ``constant_tol``: a target with ``std(y) <= constant_tol`` scores 0 (authors: exactly 0).
    ``rcond``: relative cut-off for numerically zero singular values (None: max(n, d) * eps).
    ``voxel_chunk``: voxels processed together (bounds memory).
    ``blas_threads``: BLAS threads for the numpy backend (None: leave as is). The engine's
    matrices are small (about 100 x 100 per product), where multi-threaded OpenBLAS spends more
    time handing work between threads than computing, badly so on a shared machine.
    """

    alphas: tuple[float, ...] = PAPER_ALPHAS
    extend_edges: bool = True
    alpha_limits: tuple[float, float] = PAPER_ALPHA_LIMITS
    nan_policy: str = "authors"
    constant_tol: float = 0.0
    backend: str = "auto"
    voxel_chunk: int = 4096
    rcond: float | None = None
    blas_threads: int | None = 1

    def __post_init__(self) -> None:
        if len(self.alphas) == 0 or any(not np.isfinite(a) or a <= 0 for a in self.alphas):
            raise InputError(
                "regression.alphas", f"expected positive finite numbers, got {self.alphas}"
            )
        if len(self.alpha_limits) != 2:
            raise InputError(
                "regression.alpha_limits", f"expected [low, high], got {self.alpha_limits}"
            )
        lo, hi = self.alpha_limits
        if not (0 < lo < hi):
            raise InputError(
                "regression.alpha_limits", f"expected 0 < low < high, got {self.alpha_limits}"
            )
        if self.nan_policy not in NAN_POLICIES:
            raise InputError(
                "regression.nan_policy", f"expected one of {NAN_POLICIES}, got {self.nan_policy!r}"
            )
        if not (self.constant_tol >= 0):
            raise InputError("regression.constant_tol", f"expected >= 0, got {self.constant_tol}")
        if self.backend not in BACKENDS:
            raise InputError(
                "regression.backend", f"expected one of {BACKENDS}, got {self.backend!r}"
            )
        if self.blas_threads is not None and self.blas_threads < 1:
            raise InputError(
                "regression.blas_threads", f"expected >= 1 or null, got {self.blas_threads}"
            )
        if self.voxel_chunk < 1:
            raise InputError("regression.voxel_chunk", f"expected >= 1, got {self.voxel_chunk}")


@dataclass
class RidgeResult:
    """Per-target results of the nested CV.

    ``score`` (n_targets,) is the final clipped r^2; ``predictions`` (n_sounds, n_targets) the
    pooled out-of-fold predictions; per outer fold (rows in ``fold_ids`` order): ``alpha`` and
    ``layer`` (index into ``layer_names``) chosen, ``inner_score`` of the chosen candidate, and
    ``n_extensions``, the number of edge-rule evaluations made.
    """

    score: np.ndarray
    predictions: np.ndarray = field(repr=False)
    alpha: np.ndarray = field(repr=False)
    layer: np.ndarray = field(repr=False)
    inner_score: np.ndarray = field(repr=False)
    n_extensions: np.ndarray = field(repr=False)
    layer_names: tuple[str, ...]
    fold_ids: tuple[int, ...]
    backend: str


_NP = NumpyBackend()

# --------------------------------------------------------------------------------------------
# scoring


def target_std(y: np.ndarray) -> np.ndarray:
    """``np.std`` of each column, computed exactly as ``np.std`` on the 1-D column would be.

    Reduces along contiguous rows so numpy uses the same pairwise summation as on a 1-D
    array; this matters because the protocol's guard is ``std(y) == 0`` exactly.
    """
    return np.std(np.ascontiguousarray(np.asarray(y).T), axis=1)


def _pearson(bk: Backend, y, p):
    """Pearson r between ``y`` (n, C) and each ``p`` (..., n, C), as ``np.corrcoef`` computes it."""
    n = y.shape[0]
    yc = y - bk.mean(y, 0)
    pc = p - bk.mean(p, -2)
    sxy = bk.sum(yc * pc, -2) / (n - 1)
    syy = bk.sum(yc * yc, 0) / (n - 1)
    spp = bk.sum(pc * pc, -2) / (n - 1)
    r = sxy / bk.sqrt(spp) / bk.sqrt(syy)
    return bk.clip(r, -1.0, 1.0)


def clipped_r2(r: np.ndarray, y_std: np.ndarray, constant_tol: float = 0.0) -> np.ndarray:
    """The protocol's score from r: ``max(r, 0)**2``, NaN kept, 0 where ``std(y) <= tol``."""
    r = np.asarray(r, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        out = np.where(r < 0, 0.0, r) ** 2
    return np.where(y_std <= constant_tol, 0.0, out)


def r2_score_columns(y: np.ndarray, pred: np.ndarray, constant_tol: float = 0.0) -> np.ndarray:
    """Clipped r^2 of each column of ``pred`` against the same column of ``y`` (numpy)."""
    y = np.asarray(y)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = _pearson(_NP, np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64))
    return clipped_r2(r, target_std(y), constant_tol)


# --------------------------------------------------------------------------------------------
# ridge factors


@dataclass
class _Factor:
    """Ridge solutions of one (training set, layer), any alpha: u (n_tr, r), s (r,), a (n_te, r)."""

    u: object
    s: object
    a: object
    s_np: np.ndarray

    def matrix(self, bk: Backend, alphas: Sequence[float]):
        """Stacked operators (n_alpha * n_te, n_tr) mapping centred y to centred predictions."""
        s = self.s_np
        w = s[None, :] / (s[None, :] ** 2 + np.asarray(alphas, dtype=np.float64)[:, None])
        w_b = bk.asarray(w)
        n_te, n_tr = self.a.shape[0], self.u.shape[0]
        if s.size == 0:
            return bk.asarray(np.zeros((len(alphas) * n_te, n_tr)))
        stacked = (self.a[None, :, :] * w_b[:, None, :]).reshape(len(alphas) * n_te, -1)
        return stacked @ self.u.T


def _factor(bk: Backend, x_train: np.ndarray, x_test: np.ndarray, rcond: float | None) -> _Factor:
    """Thin SVD of the centred training activations, truncated at ``rcond * s_max``."""
    mean = x_train.mean(axis=0, keepdims=True)
    xc = bk.asarray(x_train - mean)
    u, s, vt = bk.svd(xc)
    s_np = bk.to_numpy(s)
    cut = rcond if rcond is not None else max(x_train.shape) * np.finfo(np.float64).eps
    keep = int(np.sum(s_np > cut * s_np[0])) if s_np.size and s_np[0] > 0 else 0
    a = bk.asarray(x_test - mean) @ vt[:keep].T
    return _Factor(u=u[:, :keep], s=s[:keep], a=a, s_np=s_np[:keep].copy())


@dataclass
class _InnerData:
    """Targets of one outer training set, split for its inner folds (one voxel chunk).

    Per inner fold: the inner-training targets centred by their mean (``ycen``), that mean
    (``mu``), the held-out block's targets centred by the outer-training mean (``ycb``), and its
    positions (``t_idx``); plus ``syy`` = sum of squares of the centred outer-training targets.
    """

    y_t: object
    folds: list[tuple[object, object, object, object]]
    syy: object
    n: int

    @classmethod
    def build(cls, bk: Backend, y_t, inner) -> _InnerData:
        ybar = bk.mean(y_t, 0)
        yc = y_t - ybar
        parts = []
        for _s_pos, _t_pos, s_idx, t_idx, _facs in inner:
            ys = y_t[s_idx]
            mu = bk.mean(ys, 0)
            parts.append((ys - mu, mu, yc[t_idx], t_idx))
        return cls(y_t=y_t, folds=parts, syy=bk.sum(yc * yc, 0), n=int(y_t.shape[0]))


def _inner_r(
    bk: Backend,
    blk: _InnerData,
    ops: list,
    sums: list,
    q: int,
    cols: np.ndarray | None,
    low_precision: bool,
) -> np.ndarray:
    """Pearson r of the pooled inner predictions of ``q`` stacked candidates -> (q, n_cols).

    ``ops[m]`` (q * n_m, n_s) maps fold m's centred inner-training targets to its centred
    held-out predictions; ``sums[m]`` (q, n_s) are the per-candidate column sums of those rows.
    Two passes as ``np.corrcoef``: the pooled prediction mean is obtained from the row sums,
    then each block is centred by it and accumulated, so no (q, n, C) array is materialised.
    """
    n = blk.n
    idx = None if cols is None else bk.index(cols)
    parts = (
        blk.folds
        if idx is None
        else [(ycen[:, idx], mu[:, idx], ycb[:, idx], t_idx) for ycen, mu, ycb, t_idx in blk.folds]
    )
    if low_precision:  # predictions take y's (float32) dtype: materialise and round them
        y_t = blk.y_t if idx is None else blk.y_t[:, idx]
        pred = bk.empty((q, n, y_t.shape[1]))
        for op, (ycen, mu, _ycb, t_idx) in zip(ops, parts, strict=True):
            pred[:, t_idx, :] = (op @ ycen).reshape(q, -1, ycen.shape[1]) + mu
        return bk.to_numpy(_pearson(bk, y_t, bk.round32(pred)))
    total = 0
    for op_sum, (ycen, mu, ycb, _t) in zip(sums, parts, strict=True):
        total = total + op_sum @ ycen + ycb.shape[0] * mu
    pbar = total / n
    s2 = s3 = 0
    for op, (ycen, mu, ycb, _t) in zip(ops, parts, strict=True):
        p = (op @ ycen).reshape(q, ycb.shape[0], ycen.shape[1])
        p += (mu - pbar)[:, None, :]
        s2 = s2 + bk.sum(p * p, 1)
        s3 = s3 + bk.sum(p * ycb[None], 1)
    syy = blk.syy if idx is None else blk.syy[idx]
    r = (s3 / (n - 1)) / bk.sqrt(s2 / (n - 1)) / bk.sqrt(syy / (n - 1))
    return bk.to_numpy(bk.clip(r, -1.0, 1.0))


# --------------------------------------------------------------------------------------------
# validation


def _check_inputs(
    layers: Sequence[np.ndarray], y: np.ndarray, folds: np.ndarray, layer_names: Sequence[str]
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    y = np.asarray(y)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.dtype not in (np.float32, np.float64):
        raise InputError(
            "targets",
            f"expected a float32/float64 array (n_sounds, n_targets), got {y.dtype} {y.shape}",
        )
    n = y.shape[0]
    if not np.all(np.isfinite(y)):
        raise InputError("targets", "NaN or inf in targets; drop incomplete voxels first")
    if len(layers) == 0:
        raise InputError("activations", "no layers")
    if len(layer_names) != len(layers):
        raise InputError("activations", "layer_names and layers differ in length")
    out = []
    for name, x in zip(layer_names, layers, strict=True):
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[0] != n:
            raise InputError(f"activations:{name}", f"expected shape ({n}, dim), got {x.shape}")
        if x.dtype.kind not in "fiu":
            raise InputError(f"activations:{name}", f"expected a numeric array, got {x.dtype}")
        x = x.astype(np.float64)
        if not np.all(np.isfinite(x)):
            raise InputError(f"activations:{name}", "NaN or inf in activations")
        out.append(x)
    folds = np.asarray(folds)
    if folds.shape != (n,):
        raise InputError("folds", f"expected shape ({n},), got {folds.shape}")
    if len(np.unique(folds)) < 3:
        raise InputError("folds", f"nested CV needs at least 3 folds, got {len(np.unique(folds))}")
    return out, y, folds


# --------------------------------------------------------------------------------------------
# engine


def nested_cv_ridge(
    layers: Sequence[np.ndarray],
    y: np.ndarray,
    folds: np.ndarray,
    config: RegressionConfig | None = None,
    layer_names: Sequence[str] | None = None,
    progress: bool = False,
) -> RidgeResult:
    """Run the paper's nested-CV ridge protocol for every column of ``y`` at once.

    ``layers``: candidate layers, each (n_sounds, dim), in their listed order; ``y``: targets
    (n_sounds, n_targets) without NaN; ``folds``: fold id per sound (>= 3 folds).
    """
    config = config or RegressionConfig()
    layer_names = (
        tuple(layer_names)
        if layer_names is not None
        else tuple(f"layer{i}" for i in range(len(layers)))
    )
    xs, y, folds = _check_inputs(layers, y, folds, layer_names)
    bk = get_backend(config.backend)
    with threadpool_limits(limits=config.blas_threads, user_api="blas"):
        return _run(xs, y, folds, config, layer_names, bk, progress)



_PLAN_CACHE: dict[str, list] = {}
"""The factors of the last (layers, folds, alphas, rcond, backend) seen: the ``regress`` stage
runs the same model's layers against NH2015, B2021 and the components in turn, and the SVDs do
not depend on the targets. Keyed by content, so a different input never hits."""


def _plan_key(xs: list[np.ndarray], folds: np.ndarray, grid: np.ndarray,
              config: RegressionConfig, bk: Backend) -> str:
    digest = hashlib.blake2b(digest_size=20)
    for x in xs:
        digest.update(f"{x.shape}{x.dtype}".encode())
        digest.update(np.ascontiguousarray(x).data)
    digest.update(np.ascontiguousarray(folds).data)
    digest.update(repr((grid.tolist(), config.rcond, type(bk).__name__,
                        str(getattr(bk, "device", "")))).encode())
    return digest.hexdigest()


def _cached_plans(xs: list[np.ndarray], folds: np.ndarray, fold_ids: tuple[int, ...],
                  grid: np.ndarray, config: RegressionConfig, bk: Backend) -> list:
    """Per outer fold: (train idx, test idx, inner folds with their factors, refit factors)."""
    key = _plan_key(xs, folds, grid, config, bk)
    if key in _PLAN_CACHE:
        return _PLAN_CACHE[key]
    n_alpha = grid.size
    plans = []
    for k in fold_ids:
        tr = np.flatnonzero(folds != k)
        te = np.flatnonzero(folds == k)
        f_tr = folds[tr]
        inner = []
        for m in np.unique(f_tr):
            s_pos = np.flatnonzero(f_tr != m)
            t_pos = np.flatnonzero(f_tr == m)
            facs = []
            for x in xs:
                fac = _factor(bk, x[tr[s_pos]], x[tr[t_pos]], config.rcond)
                mat = fac.matrix(bk, grid)
                row_sums = mat.reshape(n_alpha, len(t_pos), len(s_pos)).sum(1)
                facs.append((fac, mat, row_sums))
            inner.append((s_pos, t_pos, bk.index(s_pos), bk.index(t_pos), facs))
        refit = [_factor(bk, x[tr], x[te], config.rcond) for x in xs]
        plans.append((tr, te, inner, refit))
    _PLAN_CACHE.clear()
    _PLAN_CACHE[key] = plans
    return plans

def _run(
    xs: list[np.ndarray],
    y: np.ndarray,
    folds: np.ndarray,
    config: RegressionConfig,
    layer_names: tuple[str, ...],
    bk: Backend,
    progress: bool,
) -> RidgeResult:
    n, n_tgt = y.shape
    n_layers = len(xs)
    grid = np.asarray(config.alphas, dtype=np.float64)
    n_alpha = grid.size
    fold_ids = tuple(int(f) for f in np.unique(folds))
    n_folds = len(fold_ids)
    omit = config.nan_policy == "omit"
    low_precision = y.dtype == np.float32  # predictions take y's dtype
    # Per outer fold: training/test indices, inner folds and ridge factors (voxel independent).
    plans = _cached_plans(xs, folds, fold_ids, grid, config, bk)

    score_pred = np.empty((n, n_tgt), dtype=y.dtype)
    alpha_out = np.empty((n_folds, n_tgt))
    layer_out = np.empty((n_folds, n_tgt), dtype=np.int64)
    inner_out = np.empty((n_folds, n_tgt))
    next_out = np.zeros((n_folds, n_tgt), dtype=np.int64)

    chunks = [
        np.arange(i, min(i + config.voxel_chunk, n_tgt))
        for i in range(0, n_tgt, config.voxel_chunk)
    ]
    bar = tqdm(
        total=len(chunks) * n_folds, desc="ridge nested CV", disable=not progress, leave=False
    )
    for cols in chunks:
        yc_np = y[:, cols].astype(np.float64)
        for fi, (tr, te, inner, refit) in enumerate(plans):
            y_t_np = yc_np[tr]
            std_t = target_std(y[np.ix_(tr, cols)])
            y_t = bk.asarray(y_t_np)
            c = len(cols)
            blk = _InnerData.build(bk, y_t, inner)

            # ---- grid: scores (n_alpha * n_layers, C), alpha-major
            scores = np.empty((n_alpha * n_layers, c))
            for li in range(n_layers):
                ops = [facs[li][1] for *_, facs in inner]
                sums = [facs[li][2] for *_, facs in inner]
                with np.errstate(invalid="ignore", divide="ignore"):
                    r = _inner_r(bk, blk, ops, sums, n_alpha, None, low_precision)
                scores[li::n_layers] = clipped_r2(r, std_t, config.constant_tol)

            def evaluate(
                idx: np.ndarray,
                layer_idx: np.ndarray,
                alpha: float,
                _inner=inner,
                _blk=blk,
                _std_t=std_t,
            ) -> np.ndarray:
                """Inner CV score of (alpha, layer_idx[i]) for chunk columns idx."""
                out = np.empty(idx.size)
                for li in np.unique(layer_idx):
                    sel = idx[layer_idx == li]
                    ops = [facs[li][0].matrix(bk, [alpha]) for *_, facs in _inner]
                    sums = [o.sum(0)[None, :] for o in ops]
                    with np.errstate(invalid="ignore", divide="ignore"):
                        r = _inner_r(bk, _blk, ops, sums, 1, sel, low_precision)
                    out[layer_idx == li] = clipped_r2(r[0], _std_t[sel], config.constant_tol)
                return out

            eff = np.where(np.isnan(scores), -np.inf, scores) if omit else scores
            best = np.argmax(eff, axis=0)
            best_score = eff[best, np.arange(c)]
            b_alpha = grid[best // n_layers]
            b_layer = best % n_layers
            n_ext = np.zeros(c, dtype=np.int64)
            if config.extend_edges:
                lo_edge, hi_edge = grid.min(), grid.max()
                lim_lo, lim_hi = config.alpha_limits
                at_lo = b_alpha == lo_edge
                for down, active in ((True, at_lo), (False, (b_alpha == hi_edge) & ~at_lo)):
                    cur = lo_edge if down else hi_edge
                    active = active.copy()
                    while active.any():
                        if cur / 2 < lim_lo or cur * 2 > lim_hi:
                            break
                        new = cur / 2 if down else cur * 2
                        idx = np.flatnonzero(active)
                        s_new = evaluate(idx, b_layer[idx], new)
                        n_ext[idx] += 1
                        old = best_score[idx]
                        if omit:
                            win = s_new > old
                        else:
                            with np.errstate(invalid="ignore"):
                                win = ~np.isnan(old) & (np.isnan(s_new) | (s_new > old))
                        b_alpha[idx[win]] = new
                        best_score[idx[win]] = s_new[win]
                        active[idx[~win]] = False
                        cur = new

            # ---- refit on the outer training set, predict the outer test fold
            mu_t = bk.mean(y_t, 0)
            ycen_t = y_t - mu_t
            pred_te = np.empty((len(te), c))
            for li in np.unique(b_layer):
                sel = np.flatnonzero(b_layer == li)
                sel_b = bk.index(sel)
                fac = refit[li]
                coef = fac.u.T @ ycen_t[:, sel_b]
                s = fac.s_np[:, None]
                w = bk.asarray(s / (s**2 + b_alpha[sel][None, :]))
                p = fac.a @ (w * coef) + mu_t[:, sel_b]
                pred_te[:, sel] = bk.to_numpy(p)
            # predictions take y's dtype (the authors fill np.zeros_like(y))
            score_pred[np.ix_(te, cols)] = pred_te.astype(y.dtype)
            alpha_out[fi, cols] = b_alpha
            layer_out[fi, cols] = b_layer
            inner_out[fi, cols] = np.where(np.isneginf(best_score), np.nan, best_score)
            next_out[fi, cols] = n_ext
            bar.update()
    bar.close()
    final = r2_score_columns(y, score_pred, config.constant_tol)
    return RidgeResult(
        score=final,
        predictions=score_pred,
        alpha=alpha_out,
        layer=layer_out,
        inner_score=inner_out,
        n_extensions=next_out,
        layer_names=layer_names,
        fold_ids=fold_ids,
        backend=f"{bk.name}:{bk.device}",
    )
