"""The batched probe grid against the sequential one: the same fits, bit for bit, on CPU.

Tolerance: zero. With one torch thread per fit (the default) every number of a batched run
equals its sequential run's: scores, validation curves, best and last epochs, layer weights,
selections (see ``brainalign.downstream.batched``). ``fast`` mode is compared within float
tolerance instead.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from brainalign.downstream import batched
from brainalign.downstream.batched import Member, exact_mix_matches, fit_members
from brainalign.downstream.config import DownstreamConfig, ProbeConfig
from brainalign.downstream.embeddings import compute_embeddings
from brainalign.downstream.hear_tasks import load_task
from brainalign.downstream.metrics import (
    fast_mean_average_precision,
    get_metric,
    get_monitor,
    torch_mean_average_precision,
    torch_monitor,
)
from brainalign.downstream.probe import (
    FitResult,
    SplitInputs,
    deterministic_torch,
    evaluate_task,
    fit_probe,
)
from brainalign.errors import InputError

from .ds_helpers import band_embedder, base_meta, write_task

CPU = torch.device("cpu")
SMALL = {"hidden_dims": [[32], [32, 32]], "max_epochs": 30, "patience": 4}


def _inputs(n_train: int, n_valid: int, n_layers: int, dim: int, n_labels: int,
            multilabel: bool, seed: int = 0) -> SplitInputs:
    """Noisy clusters (multiclass) or sums of cluster centres (multilabel), per layer."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_labels, n_layers, dim)) * np.linspace(0.3, 1.5, n_layers)[
        None, :, None]

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        if multilabel:
            y = (rng.random((n, n_labels)) < 0.3).astype(np.float32)
            x = np.einsum("nk,kld->nld", y, centres)
        else:
            idx = rng.integers(0, n_labels, size=n)
            y = np.eye(n_labels, dtype=np.float32)[idx]
            x = centres[idx]
        return (x + rng.normal(size=x.shape)).astype(np.float32), y

    return SplitInputs(*draw(n_train), *draw(n_valid), *draw(n_valid), None)


def _same(a: FitResult, b: FitResult) -> bool:
    return (a.config == b.config and a.valid == b.valid and a.test == b.test
            and a.valid_curve == b.valid_curve and a.best_epoch == b.best_epoch
            and a.epochs_run == b.epochs_run and a.layer_weights == b.layer_weights)


def _both(inputs: SplitInputs, prediction_type: str, metric: str, cfg: DownstreamConfig,
          seeds: tuple[int, ...] = (0,), mode: str = "auto"
          ) -> tuple[list[FitResult], list[FitResult]]:
    metrics = {metric: get_metric(metric, "builtin")}
    grid = cfg.grid()
    with deterministic_torch(1, CPU):
        seq = [fit_probe(inputs, prediction_type, metrics, c, cfg, CPU,
                         monitor=get_monitor(metric), seed=s) for c in grid for s in seeds]
        bat = fit_members({0: inputs}, [Member(c, s, 0) for c in grid for s in seeds],
                          prediction_type, metrics, metric, cfg, CPU, mode=mode)
    return seq, bat


@pytest.mark.parametrize(("multilabel", "n_layers", "dim", "seeds"), [
    (False, 13, 40, (0,)),
    (True, 13, 40, (0,)),
    (True, 3, 64, (0, 7)),
    (False, 1, 24, (0,)),
])
def test_grid_bit_identical(multilabel: bool, n_layers: int, dim: int,
                            seeds: tuple[int, ...]) -> None:
    """All 16 configurations (both depths, every lr and init), some stopping early, some at
    max_epochs: every member equals its sequential fit exactly."""
    inputs = _inputs(200, 60, n_layers, dim, 5, multilabel)
    cfg = DownstreamConfig(hidden_dims=((48,), (48, 48)), max_epochs=20, patience=3,
                           batch_size=64)
    metric = "mAP" if multilabel else "top1_acc"
    seq, bat = _both(inputs, "multilabel" if multilabel else "multiclass", metric, cfg, seeds)
    assert len(bat) == len(seq) == 16 * len(seeds)
    assert [_same(a, b) for a, b in zip(seq, bat, strict=True)] == [True] * len(seq)
    stops = {r.epochs_run for r in seq}
    assert len(stops) > 1  # members left the stack at different epochs


def test_edge_cases_bit_identical() -> None:
    """No dropout (no draws), a trailing one-clip batch (skipped), a NaN monitor (never
    improves: the last epoch is kept)."""
    inputs = _inputs(65, 30, 2, 16, 3, False)
    cfg = DownstreamConfig(hidden_dims=((16,),), learning_rates=(1e-3, 3.2e-3), max_epochs=6,
                           patience=3, batch_size=64, dropout=0.0)
    seq, bat = _both(inputs, "multiclass", "top1_acc", cfg)
    assert all(_same(a, b) for a, b in zip(seq, bat, strict=True))
    y_valid = inputs.y_valid.copy()
    y_valid[:, 2] = 0.0  # a class without positives: ROC AUC is undefined -> NaN every epoch
    nan_inputs = replace(inputs, y_valid=y_valid)
    seq, bat = _both(nan_inputs, "multilabel", "aucroc", replace(cfg, dropout=0.1))
    for a, b in zip(seq, bat, strict=True):
        assert math.isnan(b.valid_curve[0]) and b.epochs_run == 3 and b.best_epoch == 3
        assert a.best_epoch == b.best_epoch and a.test == b.test
        assert a.layer_weights == b.layer_weights


def test_workers_and_reruns_do_not_change_results() -> None:
    inputs = _inputs(150, 40, 4, 32, 4, True)
    cfg = DownstreamConfig(hidden_dims=((32,), (32, 32)), max_epochs=8, patience=2,
                           batch_size=64)
    metrics = {"mAP": get_metric("mAP", "builtin")}
    members = [Member(c, 0, 0) for c in cfg.grid()]

    def run(workers: int) -> list[FitResult]:
        with deterministic_torch(1, CPU):
            return fit_members({0: inputs}, members, "multilabel", metrics, "mAP",
                               replace(cfg, workers=workers), CPU)

    first, again, threaded = run(1), run(1), run(2)
    assert all(_same(a, b) and _same(a, c) for a, b, c in zip(first, again, threaded,
                                                               strict=True))


def test_fallback_mix_is_exact_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the block-wise layer mix ever disagreed with torch.sum, the run falls back to the
    sequential expression and stays exact."""
    monkeypatch.setattr(batched, "exact_mix_matches", lambda x, w: False)
    inputs = _inputs(100, 30, 5, 20, 3, False)
    cfg = DownstreamConfig(hidden_dims=((16,),), learning_rates=(1e-3,), max_epochs=5,
                           patience=5, batch_size=32)
    seq, bat = _both(inputs, "multiclass", "top1_acc", cfg)
    assert all(_same(a, b) for a, b in zip(seq, bat, strict=True))


@pytest.mark.parametrize(("n", "n_layers", "dim"), [(64, 13, 768), (37, 13, 12), (5, 1, 7),
                                                    (130, 20, 100)])
def test_exact_mix_matches_torch_sum(n: int, n_layers: int, dim: int) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, n_layers, dim, generator=gen)
    w = torch.rand(n_layers, generator=gen)
    assert exact_mix_matches(x, w / w.sum())


def test_fast_mode_within_tolerance() -> None:
    """fast (the CUDA default) mixes layers by a matrix product and monitors with torch: the
    same fits within float rounding. After 3 epochs the weights agree to ~1e-8; the mAP of 60
    validation clips moves by up to ~2e-3 when such a difference swaps two clips' ranks."""
    inputs = _inputs(200, 60, 13, 40, 5, True)
    cfg = DownstreamConfig(hidden_dims=((48,), (48, 48)), max_epochs=3, patience=5,
                           batch_size=64)
    seq, fast = _both(inputs, "multilabel", "mAP", cfg, mode="fast")
    for a, b in zip(seq, fast, strict=True):
        assert np.allclose(a.layer_weights, b.layer_weights, rtol=0, atol=1e-6)
        assert np.allclose(a.valid_curve, b.valid_curve, rtol=0, atol=1e-2)


def test_torch_monitors_equal_numpy() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random((300, 12)) < 0.2).astype(np.float32)
    y[:, 3] = 0  # a class without positives scores 0
    p = rng.random((4, 300, 12))
    p[1] = np.round(p[1], 1)  # many ties
    got = torch_mean_average_precision(torch.from_numpy(p), torch.from_numpy(y)).numpy()
    want = [fast_mean_average_precision(p[i], y) for i in range(4)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    onehot = np.eye(12, dtype=np.float32)[rng.integers(0, 12, 300)]
    for name in ("top1_acc", "pitch_acc", "chroma_acc"):
        fn = torch_monitor(name)
        assert fn is not None
        acc = fn(torch.from_numpy(p), torch.from_numpy(onehot)).numpy()
        assert list(acc) == [get_monitor(name)(p[i], onehot) for i in range(4)]
    assert torch_monitor("d_prime") is None


def _toy(tmp_path: Path, name: str, multilabel: bool, kfold: bool) -> Path:
    rng = np.random.default_rng(3)
    labels = ["a", "b", "c", "d"]

    def split(prefix: str, n: int) -> dict[str, list[str]]:
        if multilabel:
            return {f"{prefix}_{i}.wav": sorted(rng.choice(labels, rng.integers(1, 3),
                                                           replace=False).tolist())
                    for i in range(n)}
        return {f"{prefix}_{i}.wav": [labels[i % 4]] for i in range(n)}

    meta = base_meta(prediction_type="multilabel" if multilabel else "multiclass",
                     evaluation=["mAP", "top1_acc"] if multilabel else ["top1_acc", "mAP"])
    if kfold:
        meta.update(split_mode="new_split_kfold", nfolds=4)
        splits = {f"fold{k:02d}": split(f"f{k}", 16) for k in range(4)}
    else:
        splits = {"train": split("tr", 40), "valid": split("va", 16), "test": split("te", 16)}
    return write_task(tmp_path / name, splits, meta)


@pytest.mark.parametrize(("multilabel", "kfold"), [(False, False), (True, False), (False, True)])
def test_evaluate_task_batched_equals_sequential(tmp_path: Path, multilabel: bool,
                                                 kfold: bool) -> None:
    """The whole task record (grid, selection, refits on the other k-fold splits, scores) is
    the same with ``batched: true`` and ``false``."""
    task = load_task(_toy(tmp_path, "t", multilabel, kfold))
    emb = compute_embeddings(task, "toy", band_embedder(), 16_000, progress=False)
    batched_res = evaluate_task(task, emb, DownstreamConfig.from_params(SMALL), progress=False)
    sequential = evaluate_task(task, emb, DownstreamConfig.from_params({**SMALL,
                                                                        "batched": False}),
                               progress=False)
    assert json.dumps(batched_res, sort_keys=True) == json.dumps(sequential, sort_keys=True)
    assert len(batched_res["splits"]) == (4 if kfold else 1)


def test_seeds_select_on_the_mean_and_report_per_seed(tmp_path: Path) -> None:
    task = load_task(_toy(tmp_path, "t", False, True))
    emb = compute_embeddings(task, "toy", band_embedder(), 16_000, progress=False)
    res = evaluate_task(task, emb, DownstreamConfig.from_params({**SMALL, "seeds": [0, 5, 9]}),
                        progress=False)
    grid = res["grid"]
    assert all([s["seed"] for s in g["seeds"]] == [0, 5, 9] for g in grid)
    means = [np.mean([s["valid"]["top1_acc"] for s in g["seeds"]]) for g in grid]
    assert [g["valid"]["top1_acc"] for g in grid] == pytest.approx(means)
    assert res["chosen_index"] == int(np.argmax(means))
    split_tests = [np.mean([s["test"]["top1_acc"] for s in sp["seeds"]]) for sp in res["splits"]]
    assert res["score"] == pytest.approx(np.mean(split_tests))
    assert res["protocol"]["seeds"] == [0, 5, 9]
    # the seeds' fits are each a seeded fit: seed 0's equals the single-seed run's
    single = evaluate_task(task, emb, DownstreamConfig.from_params(SMALL), progress=False)
    assert [g["seeds"][0]["valid"] for g in grid] == [g["valid"] for g in single["grid"]]
    assert single["protocol"]["seeds"] == [0] and "seeds" not in single["grid"][0]
    sequential = evaluate_task(task, emb, DownstreamConfig.from_params(
        {**SMALL, "seeds": [0, 5, 9], "batched": False}), progress=False)
    assert json.dumps(sequential, sort_keys=True) == json.dumps(res, sort_keys=True)


def test_task_seeds_replace_the_seeds_of_one_task(tmp_path: Path) -> None:
    task = load_task(_toy(tmp_path, "t", False, True))
    emb = compute_embeddings(task, "toy", band_embedder(), 16_000, progress=False)
    cfg = DownstreamConfig.from_params({**SMALL, "task_seeds": {task.name: [0, 5, 9]}})
    assert cfg.seeds_for(task.name) == (0, 5, 9) and cfg.seeds_for("other") == (0,)
    res = evaluate_task(task, emb, cfg, progress=False)
    seeded = evaluate_task(task, emb, DownstreamConfig.from_params({**SMALL, "seeds": [0, 5, 9]}),
                           progress=False)
    assert res["protocol"]["seeds"] == [0, 5, 9]
    assert res["protocol"]["task_seeds"] == {task.name: [0, 5, 9]}
    for key in ("grid", "splits", "chosen_index", "score", "scores"):
        assert json.dumps(res[key], sort_keys=True) == json.dumps(seeded[key], sort_keys=True)
    for bad, message in [({"task_seeds": [0]}, "mapping"), ({"task_seeds": {"t": [1, 1]}},
                                                            "distinct"),
                         ({"task_seeds": {"a/b": [0]}}, "task folder name")]:
        with pytest.raises(InputError, match=message):
            DownstreamConfig.from_params(bad)


def test_params_seeds_batched_embed() -> None:
    cfg = DownstreamConfig.from_params({"seeds": [3, 1], "batched": False,
                                        "embed_batch_samples": None, "embed_dtype": "float16"})
    assert cfg.fit_seeds == (3, 1) and not cfg.batched and cfg.embed_batch_samples is None
    assert DownstreamConfig().fit_seeds == (0,) and DownstreamConfig().batched
    assert DownstreamConfig.from_params({"seed": 4}).fit_seeds == (4,)
    assert DownstreamConfig.from_params({"seed": 4, "seeds": [4]}).fit_seeds == (4,)
    assert "batched" not in DownstreamConfig().protocol()
    for bad, message in [({"seeds": []}, "non-empty list"), ({"seeds": [1, 1]}, "distinct"),
                         ({"seeds": [-1]}, r"seeds\[0\]"), ({"batched": 1}, "true or false"),
                         ({"seed": 0, "seeds": [1, 2]}, "conflicts with downstream.seed"),
                         ({"embed_dtype": "float64"}, "embed_dtype"),
                         ({"embed_batch_samples": 0}, "embed_batch_samples")]:
        with pytest.raises(InputError, match=message):
            DownstreamConfig.from_params(bad)


def test_members_on_several_splits_and_depths() -> None:
    """Refits on other splits (different training data and sizes) train in one run."""
    a = _inputs(120, 30, 3, 16, 4, False, seed=1)
    b = _inputs(97, 25, 3, 16, 4, False, seed=2)
    cfg = DownstreamConfig(hidden_dims=((32,), (32, 32)), max_epochs=6, patience=2,
                           batch_size=32, workers=2)
    conf1, conf2 = ProbeConfig((32,), 1e-3, "xavier_normal"), ProbeConfig((32, 32), 3.2e-3,
                                                                           "xavier_uniform")
    members = [Member(conf1, 0, 1), Member(conf2, 4, 2), Member(conf1, 4, 2)]
    metrics = {"top1_acc": get_metric("top1_acc", "builtin")}
    with deterministic_torch(1, CPU):
        got = fit_members({1: a, 2: b}, members, "multiclass", metrics, "top1_acc", cfg, CPU)
        want = [fit_probe({1: a, 2: b}[m.split], "multiclass", metrics, m.conf, cfg, CPU,
                          monitor=get_monitor("top1_acc"), seed=m.seed) for m in members]
    assert all(_same(x, y) for x, y in zip(want, got, strict=True))
