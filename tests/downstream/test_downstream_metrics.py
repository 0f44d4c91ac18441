"""HEAR metrics: builtin definitions against heareval's, and the z-scored Overall score."""

from __future__ import annotations

import numpy as np
import pytest

from brainalign.downstream.metrics import (
    BUILTIN_METRICS,
    SCENE_METRICS,
    fast_mean_average_precision,
    get_metric,
    get_monitor,
    heareval_scores,
    overall_scores,
)
from brainalign.errors import InputError


def _onehot(idx: np.ndarray, n: int) -> np.ndarray:
    y = np.zeros((idx.size, n), dtype=np.float32)
    y[np.arange(idx.size), idx] = 1
    return y


def _cases(multilabel: bool, seed: int = 0, count: int = 40):
    rng = np.random.default_rng(seed)
    for i in range(count):
        n, c = int(rng.integers(3, 50)), int(rng.integers(2, 14))
        pred = rng.random((n, c))
        if i % 3 == 0:
            pred = np.round(pred, 1)  # many ties
        if multilabel:
            y = (rng.random((n, c)) < rng.uniform(0.2, 0.6)).astype(np.float32)
            y[0] = 1
            y[1] = 0  # every class has a positive and a negative
        else:
            y = _onehot(rng.integers(0, c, size=n), c)
        yield pred, y


def test_heareval_score_is_importable() -> None:
    assert heareval_scores() is not None
    assert set(SCENE_METRICS) <= set(heareval_scores())


@pytest.mark.parametrize("name", ["top1_acc", "pitch_acc", "chroma_acc"])
def test_builtin_accuracies_equal_heareval(name: str) -> None:
    ref, mine = get_metric(name, "heareval"), get_metric(name, "builtin")
    for pred, y in _cases(multilabel=False):
        assert mine(pred, y) == ref(pred, y)
        assert get_monitor(name)(pred, y) == ref(pred, y)


@pytest.mark.parametrize("name", ["mAP", "d_prime", "aucroc"])
def test_builtin_ranking_metrics_equal_heareval(name: str) -> None:
    ref, mine = get_metric(name, "heareval"), get_metric(name, "builtin")
    for pred, y in _cases(multilabel=True):
        assert mine(pred, y) == pytest.approx(ref(pred, y), abs=1e-12, nan_ok=True)


def test_fast_map_matches_heareval_including_ties_and_empty_classes() -> None:
    ref = get_metric("mAP", "heareval")
    rng = np.random.default_rng(3)
    for pred, y in _cases(multilabel=True, seed=5, count=60):
        y = y.copy()
        if rng.random() < 0.3:
            y[:, 0] = 0  # a class without positives scores 0 in both
        assert fast_mean_average_precision(pred, y) == pytest.approx(ref(pred, y), abs=1e-12)


def test_metric_values_by_hand() -> None:
    pred = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.5, 0.5, 0.0], [0.1, 0.1, 0.8]])
    y = _onehot(np.array([0, 0, 0, 2]), 3)
    # row 2 ties between classes 0 and 1: argmax takes the lower index -> correct
    assert BUILTIN_METRICS["top1_acc"](pred, y) == 0.75
    # AP of one class: positives ranked 1st and 3rd of 4 -> (1 + 2/3) / 2
    scores = np.array([[0.9], [0.8], [0.7], [0.1]])
    targets = np.array([[1], [0], [1], [0]], dtype=np.float32)
    assert fast_mean_average_precision(scores, targets) == pytest.approx((1 + 2 / 3) / 2)
    assert get_metric("mAP", "heareval")(scores, targets) == pytest.approx((1 + 2 / 3) / 2)
    # chroma accuracy: label indices 0 and 12 share a chroma
    pred13 = np.zeros((1, 13))
    pred13[0, 12] = 1
    assert get_metric("chroma_acc", "heareval")(pred13, _onehot(np.array([0]), 13)) == 1.0


def test_unknown_metric_and_bad_shapes() -> None:
    with pytest.raises(InputError, match="unsupported metric"):
        get_metric("event_onset_200ms_fms")
    with pytest.raises(InputError, match="metrics_backend"):
        get_metric("mAP", "sklearn")
    with pytest.raises(InputError, match="equal shape"):
        get_metric("top1_acc", "builtin")(np.zeros((3, 2)), np.zeros((3, 3)))


def test_overall_is_mean_of_sample_sd_zscores() -> None:
    scores = {
        "m1": {"t1": 0.5, "t2": 0.9},
        "m2": {"t1": 0.7, "t2": 0.6},
        "m3": {"t1": 0.9, "t2": 0.9},
    }
    out = overall_scores(scores, ["t1", "t2"])
    t1 = np.array([0.5, 0.7, 0.9])
    t2 = np.array([0.9, 0.6, 0.9])
    z1 = (t1 - t1.mean()) / t1.std(ddof=1)
    z2 = (t2 - t2.mean()) / t2.std(ddof=1)
    for i, m in enumerate(["m1", "m2", "m3"]):
        assert out[m]["overall"] == pytest.approx((z1[i] + z2[i]) / 2)
        assert out[m]["z"]["t1"] == pytest.approx(z1[i])
    # sample SD: z-scores of 3 models have sum of squares n - 1 = 2
    assert sum(out[m]["z"]["t1"] ** 2 for m in scores) == pytest.approx(2.0)


def test_overall_edge_cases() -> None:
    with pytest.raises(InputError, match="at least 2 models"):
        overall_scores({"m1": {"t": 1.0}})
    with pytest.raises(InputError, match="missing a score"):
        overall_scores({"m1": {"t": 1.0}, "m2": {}}, ["t"])
    with pytest.raises(InputError, match="nan"):
        overall_scores({"m1": {"t": 1.0}, "m2": {"t": float("nan")}}, ["t"])
    flat = overall_scores({"m1": {"t": 0.5, "u": 0.1}, "m2": {"t": 0.5, "u": 0.3}})
    assert flat["m1"]["z"]["t"] == 0.0 and flat["m1"]["overall"] == pytest.approx(-0.5 / np.sqrt(2))
