"""The factor cache of nested_cv_ridge: reused only for identical layers/folds, same results."""

from __future__ import annotations

import numpy as np

from brainalign.alignment import ridge_cv
from brainalign.alignment.ridge_cv import nested_cv_ridge


def _data(seed: int):
    rng = np.random.default_rng(seed)
    layers = [rng.normal(size=(40, 12)), rng.normal(size=(40, 50))]
    folds = np.repeat(np.arange(4), 10)
    return layers, folds, rng.normal(size=(40, 6))


def test_cached_factors_give_identical_results():
    layers, folds, y = _data(0)
    ridge_cv._PLAN_CACHE.clear()
    first = nested_cv_ridge(layers, y[:, :3], folds)
    key = next(iter(ridge_cv._PLAN_CACHE))
    second = nested_cv_ridge([x.copy() for x in layers], y[:, 3:], folds)  # a cache hit
    assert list(ridge_cv._PLAN_CACHE) == [key]
    ridge_cv._PLAN_CACHE.clear()
    fresh = nested_cv_ridge(layers, y[:, 3:], folds)
    np.testing.assert_array_equal(second.score, fresh.score)
    np.testing.assert_array_equal(second.alpha, fresh.alpha)
    np.testing.assert_array_equal(second.layer, fresh.layer)
    assert first.score.shape == (3,)


def test_different_layers_or_folds_do_not_hit():
    layers, folds, y = _data(1)
    ridge_cv._PLAN_CACHE.clear()
    nested_cv_ridge(layers, y, folds)
    key = next(iter(ridge_cv._PLAN_CACHE))
    changed = [layers[0].copy(), layers[1].copy()]
    changed[1][0, 0] += 1e-9
    nested_cv_ridge(changed, y, folds)
    assert next(iter(ridge_cv._PLAN_CACHE)) != key
    nested_cv_ridge(changed, y, np.roll(folds, 1))
    assert len(ridge_cv._PLAN_CACHE) == 1
