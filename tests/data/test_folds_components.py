"""Fold file (restricted unpickling) and components.mat (reordering by stim_names)."""

from __future__ import annotations

import io
import pickle

import joblib
import numpy as np
import pytest
import scipy.io

from brainalign.data.components import COMPONENT_NAMES, load_components
from brainalign.data.folds import load_folds
from brainalign.data.stimuli import canonical_names
from brainalign.errors import InputError

# Decoded fold values published in data-formats.md (canonical order).
_FOLDS_TEXT = (
    "0,1,2,3,4,0,1,2,3,4,1,2,4,0,0,3,3,4,1,2,0,1,3,2,4,4,1,2,3,0,0,2,1,3,4,0,1,3,4,2,1,0,2,3,"
    "4,0,4,1,2,1,3,2,3,0,0,4,0,1,2,3,4,1,2,3,4,1,0,2,3,2,0,4,1,3,1,2,4,4,1,0,3,1,0,2,0,2,3,4,"
    "4,3,0,1,2,0,3,4,1,3,1,2,2,4,0,3,0,4,1,2,4,4,0,3,1,2,0,4,3,2,1,0,3,2,1,4,1,1,3,0,2,3,4,3,"
    "2,0,4,0,1,2,3,4,2,1,0,3,4,0,1,2,3,4,0,1,2,3,4,0,4,2,1,3,2,4,3,0,1"
)
PUBLISHED_FOLDS = [int(v) for v in _FOLDS_TEXT.split(",")]


def test_real_fold_file_equals_published_values(github_inputs):
    folds = load_folds(github_inputs["folds"])
    assert folds.dtype == np.int64
    assert folds.tolist() == PUBLISHED_FOLDS
    assert np.bincount(folds).tolist() == [33] * 5


def test_plain_pickle_and_joblib_both_load(tmp_path):
    arr = np.array(PUBLISHED_FOLDS, dtype=np.float64)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(arr))
    jl = tmp_path / "jl.pkl"
    joblib.dump(arr, jl)
    assert load_folds(plain).tolist() == PUBLISHED_FOLDS
    assert load_folds(jl).tolist() == PUBLISHED_FOLDS


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_is_refused_before_running(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(InputError, match="refusing to unpickle global"):
        load_folds(path)


def test_pickle_of_something_else_is_refused(tmp_path):
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps([0, 1, 2]))
    with pytest.raises(InputError, match="expected one numeric numpy array"):
        load_folds(path)


@pytest.mark.parametrize(
    ("arr", "message"),
    [
        (np.zeros(160), r"shape \(165,\)"),
        (np.arange(165) % 4, "33 sounds each"),
        (np.full(165, 0.5), "whole numbers"),
    ],
)
def test_bad_fold_arrays(tmp_path, arr, message):
    path = tmp_path / "f.pkl"
    joblib.dump(arr.astype(np.float64), path)
    with pytest.raises(InputError, match=message):
        load_folds(path)


def test_truncated_and_missing_fold_file(tmp_path, github_inputs):
    path = tmp_path / "trunc.pkl"
    path.write_bytes(github_inputs["folds"].read_bytes()[:300])
    with pytest.raises(InputError, match="trunc.pkl"):
        load_folds(path)
    with pytest.raises(InputError, match="file not found"):
        load_folds(tmp_path / "nope.pkl")


def test_components_reordered_to_canonical(github_inputs):
    comp = load_components(github_inputs["components"])
    mat = scipy.io.loadmat(str(github_inputs["components"]))
    names = [str(np.ravel(x)[0]).removesuffix(".wav") for x in np.ravel(mat["stim_names"])]
    assert names != list(canonical_names())  # the file is grouped by category
    assert comp.names == COMPONENT_NAMES
    assert comp.responses.shape == (165, 6) and comp.weights.shape == (6, 11065)
    for i, name in enumerate(canonical_names()):
        np.testing.assert_array_equal(comp.responses[i], mat["R"][names.index(name)])


def test_components_missing_variable(tmp_path):
    path = tmp_path / "c.mat"
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"R": np.zeros((165, 6))})
    path.write_bytes(buf.getvalue())
    with pytest.raises(InputError, match="missing variable 'W'"):
        load_components(path)
