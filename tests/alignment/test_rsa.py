"""RSA: RDMs and comparisons equal the literal protocol, scipy and rsatoolbox."""

from __future__ import annotations

import numpy as np
import pytest
from alignment_reference import cv_layer_select, rdm_rho
from alignment_reference import rdm as ref_rdm
from scipy import stats

from brainalign.alignment.aggregate import mean_sem, subject_medians
from brainalign.alignment.rdm import compare_rdms, rdm, spearman_many, upper_indices
from brainalign.alignment.rsa import (
    RSAConfig,
    cv_rsa,
    fold_pairs,
    layer_rdms,
    layerwise_rsa,
    summarize_layerwise,
    topline,
)


def _data(seed=0, n=30, n_vox=25):
    rng = np.random.default_rng(seed)
    folds = np.repeat(np.arange(5), n // 5)
    rng.shuffle(folds)
    base = rng.standard_normal((n, 6))
    layers = [
        base @ rng.standard_normal((6, d)) + s * rng.standard_normal((n, d))
        for d, s in ((8, 0.5), (20, 2.0), (12, 1.0))
    ]
    fmri = base @ rng.standard_normal((6, n_vox)) + rng.standard_normal((n, n_vox))
    return layers, fmri, folds


def test_rdm_and_rho_match_literal_scipy_and_rsatoolbox():
    rsatoolbox = pytest.importorskip("rsatoolbox")
    layers, fmri, _ = _data()
    f = rdm(fmri)
    np.testing.assert_array_equal(f, ref_rdm(fmri))
    # rsatoolbox: correlation distance of z-scored patterns is the same RDM
    z = (fmri - fmri.mean(0)) / (fmri.std(0) + 1e-10)
    ds = rsatoolbox.data.Dataset(z)
    rt = rsatoolbox.rdm.calc_rdm(ds, method="correlation").get_matrices()[0]
    np.testing.assert_allclose(f, rt, rtol=0, atol=1e-12)
    models = layer_rdms(layers)
    rho = compare_rdms(f, models)
    for li, m in enumerate(models):
        assert abs(rho[li] - rdm_rho(f, m)) <= 1e-12
        iu = upper_indices(f.shape[0])
        mrt = rsatoolbox.rdm.RDMs(m[iu][None, :])
        frt = rsatoolbox.rdm.RDMs(f[iu][None, :])
        assert abs(rsatoolbox.rdm.compare(frt, mrt, method="spearman")[0, 0] - rho[li]) <= 1e-12


def test_spearman_nan_and_constant_propagate():
    a = np.arange(10.0)
    b = np.stack([a[::-1], np.full(10, 2.0), np.r_[np.nan, a[1:]], a**2])
    out = spearman_many(a, b)
    assert (
        abs(out[0] + 1) < 1e-15
        and np.isnan(out[1])
        and np.isnan(out[2])
        and abs(out[3] - 1) < 1e-15
    )
    with np.errstate(all="ignore"):
        assert np.isnan(spearman_many(np.r_[np.nan, a[1:]], b)).all()
    assert abs(out[3] - stats.spearmanr(a, a**2)[0]) < 1e-15


def test_cv_rsa_matches_literal_and_overwrite_rule():
    layers, fmri, folds = _data(1)
    res = cv_rsa(fmri, layer_rdms(layers), folds)
    rho, assembled, selected = cv_layer_select(fmri, layers, folds)
    assert abs(res.rho - rho) <= 1e-12
    np.testing.assert_array_equal(res.selected, selected.astype(np.int64))
    np.testing.assert_array_equal(res.assembled, assembled)
    assert len(fold_pairs(folds)) == 15
    # surviving value of cell (row fold a, column fold b) comes from pair (a, F-1) if a >= b
    # else (b, b): check against the per-pair selections
    models = layer_rdms(layers)
    f = rdm(fmri)
    iu = upper_indices(len(folds))
    pair_best = {}
    for i, j in fold_pairs(folds):
        train = ~(folds == i)[:, None] & ~(folds == j)[None, :]
        pair_best[(i, j)] = int(np.argmax(compare_rdms(f, models, mask=train)))
    for r, c in zip(*iu, strict=True):
        a, b = folds[r], folds[c]
        src = (a, 4) if a >= b else (b, b)
        assert res.selected[r, c] == pair_best[src]


def test_constant_layer_wins_and_nan_safe_option():
    layers, fmri, folds = _data(2)
    layers = [layers[0], np.zeros_like(layers[1]), layers[2]]
    models = layer_rdms(layers)
    assert np.isnan(models[1]).all()
    res = cv_rsa(fmri, models, folds)
    assert np.isnan(res.rho) and np.all(res.selected == 1)
    assert np.isnan(cv_layer_select(fmri, layers, folds)[0])
    safe = cv_rsa(fmri, models, folds, RSAConfig(nan_policy="omit"))
    assert np.isfinite(safe.rho) and not np.any(safe.selected == 1)


def test_layerwise_nan_subject_drops_out_and_summary():
    layers, fmri, _ = _data(3, n_vox=40)
    models = layer_rdms(layers)
    subj = [fmri[:, :20], fmri[:, 20:].copy()]
    subj[1][0, 3] = np.nan
    rho = np.stack([layerwise_rsa(s, models) for s in subj])
    assert np.isfinite(rho[0]).all() and np.isnan(rho[1]).all()
    np.testing.assert_allclose(rho[0], [rdm_rho(ref_rdm(subj[0]), m) for m in models], atol=1e-12)
    summ = summarize_layerwise(np.vstack([rho, rho[0] * 0.9]))
    assert summ.best_layer == int(np.argmax(rho[0]))
    assert summ.max_rho == pytest.approx(0.95 * rho[0].max(), abs=1e-15)
    assert summ.max_sd == pytest.approx(
        np.std([rho[0][summ.best_layer], 0.9 * rho[0][summ.best_layer]], ddof=1)
    )
    omit = np.stack([layerwise_rsa(s, models, RSAConfig(nan_policy="omit")) for s in subj])
    assert np.isfinite(omit).all()
    # Python's max over layer means: a NaN first layer mean makes the max NaN (authors' notebook)
    weird = summarize_layerwise(np.array([[np.nan, 0.2, 0.3]]))
    assert np.isnan(weird.max_rho) and weird.best_layer == 0
    assert summarize_layerwise(np.array([[np.nan, 0.2, 0.3]]), "omit").max_rho == 0.3


def test_topline_excludes_nan_subjects_and_single_subject_is_nan():
    rng = np.random.default_rng(4)
    base = rng.standard_normal((20, 5))
    subs = [base @ rng.standard_normal((5, 15)) + rng.standard_normal((20, 15)) for _ in range(4)]
    subs[2][3, 0] = np.nan
    rho, kept = topline(subs)
    assert list(kept) == [0, 1, 3]
    rdms = [ref_rdm(subs[i]) for i in kept]
    for i in range(3):
        others = np.mean([rdms[j] for j in range(3) if j != i], axis=0)
        assert abs(rho[i] - rdm_rho(others, rdms[i])) <= 1e-12
    one, kept1 = topline([subs[0], subs[2]])
    assert list(kept1) == [0] and np.isnan(one[0])
    _, kept_omit = topline(subs, RSAConfig(nan_policy="omit"))
    assert list(kept_omit) == [0, 1, 2, 3]


def test_aggregation_median_mean_sem():
    scores = np.array([0.1, 0.3, 0.2, 0.5, np.nan, 0.4, 0.6])
    subject = np.array([0, 0, 0, 1, 1, 2, 2])
    ids, med, counts = subject_medians(scores, subject)
    np.testing.assert_array_equal(ids, [0, 1, 2])
    assert med[0] == 0.2 and np.isnan(med[1]) and med[2] == 0.5
    mean, sem, n = mean_sem(med)
    assert n == 2 and mean == pytest.approx(0.35)
    assert sem == pytest.approx(np.std([0.2, 0.5], ddof=1) / np.sqrt(2))
    _, med_omit, _ = subject_medians(scores, subject, "omit")
    assert med_omit[1] == 0.5
