"""Byte-reproducible NPZ: the same arrays always give the same file (DVC hashes, dvc.lock)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from brainalign.models.activations import Activations, load_activations, save_activations
from brainalign.npz import npz_bytes, write_npz


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"a/b": rng.standard_normal((5, 3)).astype(np.float32),
            "meta": np.array('{"k": 1}'), "ints": np.arange(7),
            "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)), "empty": np.zeros((0, 4))}


@pytest.mark.parametrize("compress", [False, True])
def test_same_arrays_same_bytes_and_numpy_reads_them(tmp_path, monkeypatch, compress):
    first = npz_bytes(_arrays(), compress=compress)
    # numpy.savez would stamp the current time; ours must not depend on the clock.
    monkeypatch.setattr("time.time", lambda: 2_000_000_000.0)
    assert npz_bytes(_arrays(), compress=compress) == first
    with zipfile.ZipFile(io.BytesIO(first)) as zf:
        assert [i.filename for i in zf.infolist()] == [f"{k}.npy" for k in _arrays()]
        # No ZIP64 headers below 4 GiB: their layout differs between CPython patch releases.
        assert all(i.extract_version == 20 for i in zf.infolist())
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        methods = {i.compress_type for i in zf.infolist()}
        assert methods == {zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED}
    path = tmp_path / "x.npz"
    write_npz(path, _arrays(), compress=compress)
    assert path.read_bytes() == first
    with np.load(path, allow_pickle=False) as npz:
        for key, value in _arrays().items():
            assert npz[key].shape == value.shape and npz[key].dtype == value.dtype
            np.testing.assert_array_equal(npz[key], value)


def test_object_arrays_are_refused_and_nothing_is_written(tmp_path):
    path = tmp_path / "x.npz"
    with pytest.raises(TypeError, match="'bad'.*pickle"):
        write_npz(path, {"ok": np.zeros(2), "bad": np.array([{"a": 1}], dtype=object)})
    assert list(tmp_path.iterdir()) == []


def test_activation_files_are_byte_identical_across_writes(tmp_path):
    acts = Activations(model="m", layers={"l1": np.ones((3, 2), np.float32)},
                       stimuli=("s1", "s2", "s3"), meta={"device": "cpu"})
    save_activations(tmp_path / "a.npz", acts)
    save_activations(tmp_path / "b.npz", acts)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    back = load_activations(tmp_path / "a.npz")
    np.testing.assert_array_equal(back.layers["l1"], acts.layers["l1"])
    assert back.stimuli == acts.stimuli
