"""Simulated datasets in the lab-release format, and the voxel loader's validation."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from brainalign.data.components import load_components
from brainalign.data.fmri import ROI_LABELS, load_voxel_dataset
from brainalign.data.simulate import (
    DatasetSim,
    SimulateParams,
    simulate_release,
    split_half_reliability,
)
from brainalign.data.stimuli import canonical_names, read_category_labels
from brainalign.errors import InputError

SMALL = SimulateParams(
    nh2015=DatasetSim(n_subjects=8, voxels_per_subject=40, frac_incomplete=0.1),
    b2021=DatasetSim(n_subjects=20, voxels_per_subject=20, nan_subjects=2, frac_nan_voxels=0.1),
)


def _simulate(github_inputs, out: Path, params: SimulateParams = SMALL) -> dict:
    comp = load_components(github_inputs["components"])
    labels = read_category_labels(github_inputs["labels_csv"])
    return simulate_release(comp, [labels[n] for n in canonical_names()], out, params, "test")


@pytest.fixture(scope="module")
def release(github_inputs, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sim")
    _simulate(github_inputs, root)
    return root


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_lab_release_layout(release):
    nh = release / "neural" / "NH2015"
    b = release / "neural" / "B2021"
    for name in (
        "voxel_features_array.npy",
        "voxel_features_meta.npy",
        "neural_stim_meta.npy",
        "df_roi_meta.pkl",
        "PROVENANCE.json",
    ):
        assert (nh / name).is_file()
    for name in (
        "voxel_features_array.npy",
        "voxel_features_meta.npy",
        "df_roi_meta.pkl",
        "stim_info_v4.mat",
    ):
        assert (b / name).is_file()
    raw = np.load(nh / "voxel_features_array.npy")
    meta = np.load(nh / "voxel_features_meta.npy")
    assert raw.shape == (165, 8 * 40 + 32, 3)
    assert set(meta.dtype.names) >= {"subj_idx", "hemi", "x_ras", "y_ras", "voxel_id", "n_reps"}
    incomplete = meta["n_reps"] < 3
    assert incomplete.sum() == 32
    assert np.isnan(raw[:, incomplete, 2]).all() and not np.isnan(raw[:, ~incomplete]).any()
    stim = np.load(nh / "neural_stim_meta.npy")
    assert stim["filename"][0] == b"stim5_alarm_clock.wav" and stim.dtype.names[4] == "category"
    assert np.load(b / "voxel_features_array.npy").shape == (192, 400, 3)
    assert json.loads((nh / "PROVENANCE.json").read_text())["simulated"] is True


def test_loaded_shapes_subjects_rois(release):
    nh = load_voxel_dataset(release / "neural" / "NH2015", "NH2015")
    assert nh.responses.shape == (165, 320, 3) and nh.simulated
    assert nh.complete_voxels().all()  # n_reps < 3 voxels are dropped by the loader
    assert np.bincount(nh.subject)[1:].tolist() == [40] * 8
    assert set(nh.roi) <= set(ROI_LABELS) | {""} and set(ROI_LABELS) <= set(nh.roi)
    b = load_voxel_dataset(release / "neural" / "B2021", "B2021")
    assert b.responses.shape == (165, 400, 3) and len(b.subjects) == 20
    nan_subjects = np.unique(b.subject[~b.complete_voxels()])
    assert len(nan_subjects) == 2 and (~b.complete_voxels()).sum() == 4


def test_reliability_in_documented_range(release):
    nh = load_voxel_dataset(release / "neural" / "NH2015", "NH2015")
    rel = split_half_reliability(nh.responses)
    assert 0.45 < np.median(rel) < 0.65  # targets ~ U(0.3, 0.8): median 0.55
    assert np.percentile(rel, 5) > 0.1 and np.percentile(rel, 95) < 0.92


def test_simulation_is_byte_identical_on_rerun(github_inputs, release, tmp_path):
    _simulate(github_inputs, tmp_path / "again")
    assert _digest(tmp_path / "again") == _digest(release)


def test_seed_changes_the_data(github_inputs, release, tmp_path):
    params = SimulateParams(seed=7, nh2015=SMALL.nh2015, b2021=SMALL.b2021)
    _simulate(github_inputs, tmp_path / "s7", params)
    name = "neural/NH2015/voxel_features_array.npy"
    a, b = np.load(tmp_path / "s7" / name), np.load(release / name)
    assert a.shape == b.shape and not np.allclose(np.nan_to_num(a), np.nan_to_num(b))


@pytest.fixture
def nh_copy(release, tmp_path) -> Path:
    dst = tmp_path / "NH2015"
    shutil.copytree(release / "neural" / "NH2015", dst)
    return dst


def test_wrong_array_shape(nh_copy):
    np.save(nh_copy / "voxel_features_array.npy", np.zeros((160, 10, 3)))
    with pytest.raises(
        InputError, match=r"voxel_features_array.npy: expected shape \(165, n_voxels, 3\)"
    ):
        load_voxel_dataset(nh_copy, "NH2015")


def test_nan_only_voxel(nh_copy):
    arr = np.load(nh_copy / "voxel_features_array.npy")
    meta = np.load(nh_copy / "voxel_features_meta.npy")
    arr[:, int(np.flatnonzero(meta["n_reps"] == 3)[5]), :] = np.nan
    np.save(nh_copy / "voxel_features_array.npy", arr)
    with pytest.raises(InputError, match="hold only NaN"):
        load_voxel_dataset(nh_copy, "NH2015")


def test_stimulus_order_is_checked_against_canonical(nh_copy):
    stim = np.load(nh_copy / "neural_stim_meta.npy")
    stim[[0, 1]] = stim[[1, 0]]
    np.save(nh_copy / "neural_stim_meta.npy", stim)
    with pytest.raises(InputError, match="neural_stim_meta.npy: sounds are not in canonical order"):
        load_voxel_dataset(nh_copy, "NH2015")


def test_object_arrays_are_refused(nh_copy):
    np.save(
        nh_copy / "voxel_features_meta.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True
    )
    with pytest.raises(InputError, match="object arrays are refused"):
        load_voxel_dataset(nh_copy, "NH2015")


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("true",))


def test_malicious_roi_pickle_is_refused(nh_copy):
    (nh_copy / "df_roi_meta.pkl").write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(InputError, match="refusing to unpickle global"):
        load_voxel_dataset(nh_copy, "NH2015")


def test_legacy_pandas_pickle_loads(nh_copy):
    """A DataFrame pickled with object columns and protocol 2, as older pandas wrote them."""
    import pandas as pd

    frame = pd.read_pickle(nh_copy / "df_roi_meta.pkl")
    buf = io.BytesIO()
    pickle.dump(frame, buf, protocol=2)
    (nh_copy / "df_roi_meta.pkl").write_bytes(buf.getvalue())
    assert load_voxel_dataset(nh_copy, "NH2015").n_voxels == 320


def test_roi_rows_must_match_voxels(nh_copy):
    import pandas as pd

    frame = pd.read_pickle(nh_copy / "df_roi_meta.pkl")
    frame.iloc[:-1].to_pickle(nh_copy / "df_roi_meta.pkl")
    with pytest.raises(InputError, match="319 rows, expected one per used voxel"):
        load_voxel_dataset(nh_copy, "NH2015")


def test_unknown_dataset_and_missing_folder(tmp_path):
    with pytest.raises(InputError, match="expected one of"):
        load_voxel_dataset(tmp_path, "XY2020")
    with pytest.raises(InputError, match="folder not found"):
        load_voxel_dataset(tmp_path / "nope", "B2021")


def test_calibrated_toplines_are_near_the_published(github_inputs, tmp_path):
    """With the demo's parameters the simulated subjects agree with each other about as much as
    the real ones: RSA topline within 0.02 of the published NH2015 ~0.759 and B2021 ~0.752
    (Fig. 2), while each voxel keeps its drawn test-retest reliability."""
    import yaml

    from brainalign.alignment.rsa import topline
    from brainalign.params import section

    repo = Path(__file__).resolve().parents[2]
    demo = section(SimulateParams, yaml.safe_load((repo / "params.yaml").read_text())["simulate"],
                   "simulate")
    assert demo.nh2015.idiosyncrasy > 0 and demo.b2021.idiosyncrasy > 0
    _simulate(github_inputs, tmp_path, demo)
    for name, published in (("NH2015", 0.759), ("B2021", 0.752)):
        ds = load_voxel_dataset(tmp_path / "neural" / name, name)
        target = ds.target()
        rho, _ = topline([target[:, ds.subject == s] for s in ds.subjects])
        assert abs(float(np.mean(rho)) - published) < 0.02, (name, float(np.mean(rho)))
        rel = split_half_reliability(ds.responses[:165, ds.complete_voxels()])
        assert 0.45 < float(np.median(rel)) < 0.65
    # without the subject-specific variation, subjects agree far more (the old simulation)
    same = SimulateParams(nh2015=dataclasses.replace(demo.nh2015, idiosyncrasy=0.0))
    _simulate(github_inputs, tmp_path / "same", same)
    ds = load_voxel_dataset(tmp_path / "same" / "neural" / "NH2015", "NH2015")
    rho, _ = topline([ds.target()[:, ds.subject == s] for s in ds.subjects])
    assert float(np.mean(rho)) > 0.9
