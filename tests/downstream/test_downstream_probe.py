"""The layer-weighted MLP probe: architecture, init, Adam, early stopping, grid, split rules."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.model_selection import ParameterGrid
from torch import nn

from brainalign.downstream.config import DownstreamConfig, ProbeConfig
from brainalign.downstream.embeddings import compute_embeddings
from brainalign.downstream.hear_tasks import load_task
from brainalign.downstream.metrics import get_metric
from brainalign.downstream.probe import (
    Adam,
    FitResult,
    LayerWeightedMLP,
    SplitInputs,
    deterministic_torch,
    evaluate_task,
    fit_probe,
    prepare_split,
    select_best,
)
from brainalign.errors import InputError

from .ds_helpers import band_embedder

CPU = torch.device("cpu")


def test_architecture_and_layer_weights() -> None:
    model = LayerWeightedMLP(3, 16, (32, 24), 5, 0.1, "xavier_normal")
    kinds = [type(m) for m in model.hidden]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.Dropout, nn.ReLU] * 2
    assert [m.p for m in model.hidden if isinstance(m, nn.Dropout)] == [0.1, 0.1]
    assert model.hidden[0].in_features == 16 and model.hidden[4].out_features == 24
    assert model.output.in_features == 24 and model.output.out_features == 5
    assert torch.equal(model.layer_weights.data, torch.ones(3))
    with torch.no_grad():
        model.layer_weights.copy_(torch.tensor([-2.0, 1.0, 1.0]))
    w = model.normalised_layer_weights()
    assert torch.allclose(w, torch.tensor([0.5, 0.25, 0.25]))
    # the forward pass uses the normalised weighted sum of the layers
    model.eval()
    x = torch.randn(4, 3, 16)
    mixed = (x * w[None, :, None]).sum(dim=1)
    expected = model.output(model.hidden(mixed))
    assert torch.allclose(model(x), expected)


def test_xavier_gains() -> None:
    """Hidden Linear layers use gain 'linear' (1), the output gain 'relu' (sqrt 2)."""
    torch.manual_seed(0)
    model = LayerWeightedMLP(1, 1024, (1024, 1024), 1024, 0.1, "xavier_uniform")
    bound = math.sqrt(6 / 2048)
    for linear, gain in ((model.hidden[0], 1.0), (model.hidden[4], 1.0),
                         (model.output, math.sqrt(2))):
        w = linear.weight.detach()
        assert w.abs().max().item() <= gain * bound + 1e-7
        assert w.abs().max().item() > 0.999 * gain * bound
    torch.manual_seed(0)
    normal = LayerWeightedMLP(1, 1024, (1024,), 1024, 0.1, "xavier_normal")
    assert normal.hidden[0].weight.std().item() == pytest.approx(math.sqrt(2 / 2048), rel=0.01)
    assert normal.output.weight.std().item() == pytest.approx(math.sqrt(2) * math.sqrt(2 / 2048),
                                                              rel=0.01)


@pytest.mark.parametrize("fused", [True, False])
def test_adam_equals_torch_adam(fused: bool) -> None:
    def run(make: object) -> list[torch.Tensor]:
        torch.manual_seed(0)
        params = [nn.Parameter(torch.randn(30, 7)), nn.Parameter(torch.randn(7))]
        opt = make(params)  # type: ignore[operator]
        gen = torch.Generator().manual_seed(1)
        for _ in range(15):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
        return [p.detach().clone() for p in params]

    mine = run(lambda ps: Adam(ps, 3e-3, fused=fused))
    ref = run(lambda ps: torch.optim.Adam(ps, 3e-3, fused=fused, foreach=False if not fused
                                          else None))
    assert all(torch.equal(a, b) for a, b in zip(mine, ref, strict=True))


def test_grid_is_the_papers_16_configs_in_parametergrid_order() -> None:
    cfg = DownstreamConfig()
    grid = cfg.grid()
    assert len(grid) == 16
    ref = ParameterGrid({"hidden_dims": [[1024], [1024, 1024]],
                         "lr": [3.2e-3, 1e-3, 3.2e-4, 1e-4],
                         "initialization": ["xavier_uniform", "xavier_normal"]})
    assert [g.as_dict() for g in grid] == [
        {"hidden_dims": r["hidden_dims"], "lr": r["lr"], "initialization": r["initialization"]}
        for r in ref
    ]
    assert (cfg.batch_size, cfg.max_epochs, cfg.patience, cfg.dropout) == (1024, 200, 20, 0.1)


def _blobs(n_train: int, n_valid: int, seed: int = 0, n_layers: int = 2, dim: int = 6
           ) -> SplitInputs:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, n_layers, dim)) * 2

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        idx = rng.integers(0, 3, size=n)
        x = centres[idx] + rng.normal(size=(n, n_layers, dim))
        y = np.zeros((n, 3), np.float32)
        y[np.arange(n), idx] = 1
        return x.astype(np.float32), y

    xtr, ytr = draw(n_train)
    xva, yva = draw(n_valid)
    xte, yte = draw(n_valid)
    return SplitInputs(xtr, ytr, xva, yva, xte, yte, None)


def _fit(inputs: SplitInputs, **cfg_kw: object) -> FitResult:
    cfg = DownstreamConfig(**cfg_kw)  # type: ignore[arg-type]
    metrics = {"top1_acc": get_metric("top1_acc")}
    with deterministic_torch(1, CPU):
        return fit_probe(inputs, "multiclass", metrics,
                         ProbeConfig((64,), 1e-3, "xavier_uniform"), cfg, CPU)


def test_early_stopping_and_best_checkpoint_restored() -> None:
    res = _fit(_blobs(90, 60), patience=20, max_epochs=200)
    curve = res.valid_curve
    best = int(np.argmax(curve))  # first maximum = first strict improvement to it
    assert res.best_epoch == best + 1
    assert res.epochs_run == res.best_epoch + 20 or res.epochs_run == 200
    assert all(c <= curve[best] for c in curve[best + 1:])
    # the reported validation score is that of the restored best epoch
    assert res.valid["top1_acc"] == curve[best]
    assert res.test["top1_acc"] > 0.8


def test_max_epochs_bounds_training() -> None:
    res = _fit(_blobs(60, 30), patience=50, max_epochs=7)
    assert res.epochs_run == 7 and len(res.valid_curve) == 7


def test_multilabel_fit_uses_bce_and_map() -> None:
    inputs = _blobs(80, 40, seed=2)
    multi = SplitInputs(inputs.x_train, inputs.y_train, inputs.x_valid, inputs.y_valid,
                        inputs.x_test, inputs.y_test, None)
    cfg = DownstreamConfig(max_epochs=30, patience=5)
    with deterministic_torch(1, CPU):
        res = fit_probe(multi, "multilabel", {"mAP": get_metric("mAP")},
                        ProbeConfig((32,), 3.2e-3, "xavier_normal"), cfg, CPU)
    assert 0.5 < res.test["mAP"] <= 1.0


def test_single_example_batch_is_skipped() -> None:
    """n_train = batch_size + 1 leaves a last batch of one clip: BatchNorm must not fail."""
    res = _fit(_blobs(9, 10), batch_size=8, max_epochs=3, patience=3)
    assert res.epochs_run == 3


def test_select_best_ties_and_nan() -> None:
    def r(v: float) -> FitResult:
        return FitResult(ProbeConfig((1,), 1e-3, "xavier_uniform"), 1, 1, {"m": v}, {"m": v},
                         [1.0], 0.0, [v])

    assert select_best([r(0.5), r(0.7), r(0.7)], "m") == 1
    assert select_best([r(float("nan")), r(0.2)], "m") == 1
    assert select_best([r(float("nan")), r(float("nan"))], "m") == 0


def _small_cfg(**kw: object) -> DownstreamConfig:
    base = {"hidden_dims": [[64], [64, 64]], "max_epochs": 40, "patience": 5}
    base.update(kw)
    return DownstreamConfig.from_params(base)


def test_kfold_rules_grid_on_split0_reused(toy_kfold: Path) -> None:
    task = load_task(toy_kfold)
    emb = compute_embeddings(task, "toy", band_embedder(), 16_000, progress=False)
    cfg = _small_cfg()
    res = evaluate_task(task, emb, cfg, progress=False)
    assert len(res["grid"]) == 16 and len(res["splits"]) == 4
    chosen = res["chosen_index"]
    valid0 = [g["valid"]["top1_acc"] for g in res["grid"]]
    assert chosen == int(np.argmax(valid0))
    assert res["splits"][0]["test"] == res["grid"][chosen]["test"]
    assert all(s["config"] == res["chosen_config"] for s in res["splits"])
    assert [s["train"] for s in res["splits"]][1] == ["fold00", "fold03"]
    tests = [s["test"]["top1_acc"] for s in res["splits"]]
    assert res["score"] == pytest.approx(np.mean(tests))
    # layer sizes differ (12 vs 20): per-layer PCA to min(n_train, smallest dim) = 12
    assert res["layer_dims"] == {"bands": 12, "proj": 20}
    assert res["pca_components"] == [12, 12, 12, 12]
    assert res["score"] > 0.6  # the toy classes are separable from band energies


def test_trainvaltest_uses_best_valid_config(toy_trainvaltest: Path) -> None:
    task = load_task(toy_trainvaltest)
    emb = compute_embeddings(task, "toy", band_embedder(proj_dim=12), 16_000, progress=False)
    res = evaluate_task(task, emb, _small_cfg(), progress=False)
    assert len(res["splits"]) == 1 and res["pca_components"] == [None]
    assert res["score"] == res["grid"][res["chosen_index"]]["test"]["top1_acc"]


def test_max_input_dim_reduces_wide_equal_layers(toy_trainvaltest: Path) -> None:
    """The CPU-budget option (not in the paper): equal-size layers wider than the cap get PCA."""
    task = load_task(toy_trainvaltest)
    emb = compute_embeddings(task, "toy", band_embedder(proj_dim=12), 16_000, progress=False)
    ds = task.data_splits()[0]
    assert prepare_split(task, emb, ds).pca_components is None  # the paper's rule
    capped = prepare_split(task, emb, ds, max_input_dim=8)
    assert capped.pca_components == 8 and capped.x_train.shape[-1] == 8
    assert prepare_split(task, emb, ds, max_input_dim=64).pca_components is None


def test_two_runs_identical_and_workers_do_not_change_results(toy_kfold: Path) -> None:
    task = load_task(toy_kfold)
    emb = compute_embeddings(task, "toy", band_embedder(), 16_000, progress=False)
    cfg = _small_cfg(max_epochs=15)
    first = evaluate_task(task, emb, cfg, progress=False)
    second = evaluate_task(task, emb, cfg, progress=False)
    assert first == second
    parallel = evaluate_task(task, emb, _small_cfg(max_epochs=15, workers=2), progress=False)
    assert parallel == first


def test_prepare_split_needs_two_training_clips(make_task) -> None:  # type: ignore[no-untyped-def]
    from .ds_helpers import class_split

    root = make_task("tiny", {"train": {"x.wav": ["a"]}, "valid": class_split("v", ["a", "b"], 1),
                              "test": class_split("t", ["a", "b"], 1)})
    task = load_task(root)
    emb = compute_embeddings(task, "toy", band_embedder(), 16_000, progress=False)
    with pytest.raises(InputError, match="at least 2 training clips"):
        prepare_split(task, emb, task.data_splits()[0])


def test_params_validation() -> None:
    with pytest.raises(InputError, match=r"params.yaml: downstream.lr: unknown key"):
        DownstreamConfig.from_params({"lr": 0.1})
    with pytest.raises(InputError, match=r"downstream.learning_rates\[1\]: expected a number > 0"):
        DownstreamConfig.from_params({"learning_rates": [0.1, -1]})
    with pytest.raises(InputError, match=r"downstream.initializations\[0\]"):
        DownstreamConfig.from_params({"initializations": ["kaiming"]})
    with pytest.raises(InputError, match=r"downstream.patience: expected an integer"):
        DownstreamConfig.from_params({"patience": 2.5})
    assert DownstreamConfig.from_params(None) == DownstreamConfig()
    assert DownstreamConfig.from_params({"hidden_dims": [[8]]}).hidden_dims == ((8,),)
