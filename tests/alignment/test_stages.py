"""Stage functions: outputs, metrics, parameter validation and bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from brainalign.alignment.aggregate import mean_sem, subject_medians
from brainalign.alignment.ridge_cv import RegressionConfig, nested_cv_ridge
from brainalign.alignment.stages import (
    parse_regression_params,
    parse_rsa_params,
    run_regression,
    run_rsa,
    run_topline,
)
from brainalign.data.components import load_components
from brainalign.data.fmri import VoxelDataset
from brainalign.data.folds import load_folds
from brainalign.data.stimuli import canonical_names
from brainalign.errors import InputError
from brainalign.models.activations import Activations, save_activations

N = 165


def _folds() -> np.ndarray:
    rng = np.random.default_rng(0)
    f = np.repeat(np.arange(5), 33)
    rng.shuffle(f)
    return f


def _acts(tmp_path, layers=None, stimuli=None, name="acts.npz"):
    rng = np.random.default_rng(1)
    layers = layers or {"l0": rng.standard_normal((N, 6)), "l1": rng.standard_normal((N, 10))}
    path = tmp_path / name
    save_activations(
        path,
        Activations(
            "toy",
            {k: v.astype(np.float32) for k, v in layers.items()},
            stimuli or canonical_names(),
        ),
    )
    return path, layers


def _dataset(layers) -> VoxelDataset:
    rng = np.random.default_rng(2)
    n_vox = 24
    signal = layers["l0"] @ rng.standard_normal((6, n_vox))
    resp = signal[:, :, None] + rng.standard_normal((N, n_vox, 3))
    resp[4, 3, 1] = np.nan  # an incomplete voxel (skipped in regression)
    subject = np.repeat([0, 1, 2], 8)
    roi = np.array(["Primary", "Posterior", ""] * 8, dtype=object)
    return VoxelDataset("NH2015", resp, subject, roi, canonical_names(), True, "synthetic")


def test_run_regression_voxels(tmp_path):
    path, layers = _acts(tmp_path)
    ds = _dataset(layers)
    out = tmp_path / "reg"
    m = run_regression(path, ds, _folds(), {"backend": "numpy"}, out, progress=False)
    vox = pd.read_parquet(out / "voxels.parquet")
    subj = pd.read_parquet(out / "subjects.parquet")
    assert json.loads((out / "metrics.json").read_text()) == m
    keep = ds.complete_voxels()
    assert not vox["regressed"][3] and np.isnan(vox["r2"][3]) and keep.sum() == 23
    x32 = [np.asarray(v, np.float32) for v in layers.values()]
    res = nested_cv_ridge(x32, ds.target()[:, keep], _folds(), RegressionConfig(backend="numpy"))
    np.testing.assert_array_equal(vox["r2"][keep].to_numpy(), res.score)
    np.testing.assert_array_equal(vox.loc[keep, "alpha_f0"].to_numpy(), res.alpha[0])
    _, med, _ = subject_medians(res.score, ds.subject[keep])
    mean, sem, n = mean_sem(med)
    assert m["mean_r2"] == mean and m["sem_r2"] == sem and m["n_subjects"] == n == 3
    np.testing.assert_array_equal(subj["median_r2"].to_numpy(), med)
    assert m["n_skipped_voxels"] == 1 and m["layers"] == ["l0", "l1"]
    assert set(vox["layer_f2"].dropna()) <= {"l0", "l1"}


def test_run_regression_components_on_real_inputs(tmp_path, github_inputs):
    comps = load_components(github_inputs["components"])
    folds = load_folds(github_inputs["folds"])
    rng = np.random.default_rng(3)
    z = comps.responses / comps.responses.std(0)
    layers = {
        "a": z @ rng.standard_normal((6, 8)) + 0.3 * rng.standard_normal((N, 8)),
        "b": rng.standard_normal((N, 5)),
    }
    path, _ = _acts(tmp_path, layers)
    m = run_regression(
        path, comps, github_inputs["folds"], {"backend": "numpy"}, tmp_path / "c", progress=False
    )
    df = pd.read_parquet(tmp_path / "c" / "components.parquet")
    assert list(df["component"]) == list(comps.names) == list(m["r2"])
    res = nested_cv_ridge(
        [np.float32(v) for v in layers.values()],
        comps.responses,
        folds,
        RegressionConfig(backend="numpy"),
    )
    np.testing.assert_array_equal(df["r2"].to_numpy(), res.score)
    assert all(v > 0.3 for v in m["r2"].values())


def test_run_rsa_and_topline(tmp_path):
    path, layers = _acts(tmp_path)
    ds = _dataset(layers)
    m = run_rsa(path, ds, _folds(), {"rois": ["all", "Primary"]}, tmp_path / "rsa")
    lw = pd.read_parquet(tmp_path / "rsa" / "rsa_layerwise.parquet")
    cv = pd.read_parquet(tmp_path / "rsa" / "rsa_cv.parquet")
    assert len(lw) == 2 * 3 * 2 and len(cv) == 2 * 3
    # subject 0 holds the NaN voxel: layer-wise rho is NaN there (authors), CV drops the voxel
    assert lw.query("roi == 'all' and subject == 0")["rho"].isna().all()
    assert cv["rho"].notna().all()
    assert m["rois"]["all"]["layerwise"]["n_subjects_by_layer"] == [2, 2]
    with np.load(tmp_path / "rsa" / "selected_layers.npz", allow_pickle=False) as z:
        assert json.loads(str(z["layers"])) == ["l0", "l1"]
        assert z["all/subject1"].shape == (N, N) and set(np.unique(z["all/subject1"])) <= {0, 1}
    t = run_topline(ds, {}, tmp_path / "top")
    assert t["rois"]["all"]["excluded_subjects"] == [0] and t["rois"]["all"]["n_subjects"] == 2
    assert json.loads((tmp_path / "top" / "metrics.json").read_text()) == t


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"alphas": "x"}, "regression.alphas"),
        ({"foo": 1}, "regression.foo"),
        ({"nan_policy": "drop"}, "regression.nan_policy"),
        ({"alphas": [0.1, -1]}, "regression.alphas"),
        ({"extend_edges": 1}, "regression.extend_edges"),
        ({"backend": "cupy"}, "regression.backend"),
        ({"alpha_limits": [1e-49, 1.0, 1e50]}, "regression.alpha_limits"),
        ({"voxel_chunk": 0}, "regression.voxel_chunk"),
        ({"constant_tol": "0"}, "regression.constant_tol"),
    ],
)
def test_regression_params_are_validated(params, key):
    with pytest.raises(InputError, match=key):
        parse_regression_params(params)


def test_rsa_params_are_validated():
    with pytest.raises(InputError, match="rsa.rois"):
        parse_rsa_params({"rois": ["Frontal"]})
    with pytest.raises(InputError, match="rsa.bar"):
        parse_rsa_params({"bar": 1})
    assert parse_rsa_params(None)[1] == ("all",)


def test_bad_inputs_raise_and_write_nothing(tmp_path):
    _, layers = _acts(tmp_path)
    ds = _dataset(layers)
    out = tmp_path / "out"
    names = list(canonical_names())
    swapped = names[:]
    swapped[0], swapped[1] = swapped[1], swapped[0]
    bad_order, _ = _acts(tmp_path, layers, tuple(swapped), "order.npz")
    with pytest.raises(InputError, match="order differs"):
        run_regression(bad_order, ds, _folds(), {}, out)
    nan_layers = {k: v.copy() for k, v in layers.items()}
    nan_layers["l1"][5, 2] = np.inf
    bad_nan, _ = _acts(tmp_path, nan_layers, None, "nan.npz")
    with pytest.raises(InputError, match="NaN or inf"):
        run_rsa(bad_nan, ds, _folds(), {}, out)
    good, _ = _acts(tmp_path)
    with pytest.raises(InputError, match="at least 3 folds"):
        run_regression(good, ds, np.repeat([0, 1], [82, 83]), {"backend": "numpy"}, out)
    with pytest.raises(InputError, match="at least 2 folds"):
        run_rsa(good, ds, np.zeros(N), {}, out)
    short = VoxelDataset(
        "NH2015",
        ds.responses[:, :8].copy(),
        ds.subject[:8],
        ds.roi[:8],
        canonical_names(),
        True,
        "x",
    )
    short.responses[0, :, 0] = np.nan
    with pytest.raises(InputError, match="no voxel without NaN"):
        run_regression(good, short, _folds(), {}, out)
    assert not out.exists() or not any(out.iterdir())


def test_constant_layer_is_handled_not_rejected(tmp_path, caplog):
    rng = np.random.default_rng(9)
    layers = {"zero": np.zeros((N, 4)), "x": rng.standard_normal((N, 5))}
    path, _ = _acts(tmp_path, layers)
    ds = _dataset({"l0": rng.standard_normal((N, 6))})
    m = run_rsa(path, ds, _folds(), {}, tmp_path / "r")
    assert "constant across sounds" in caplog.text
    assert m["cv_rho"] is None  # the NaN RDM of the constant layer wins every pair (authors)
    m2 = run_rsa(path, ds, _folds(), {"nan_policy": "omit"}, tmp_path / "r2")
    assert m2["cv_rho"] is not None
