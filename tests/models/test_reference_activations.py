"""`brainalign verify-activations` on a small archive laid out as Tuckute's model_actv.tar."""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from brainalign.cli import app
from brainalign.data.stimuli import canonical_names
from brainalign.errors import InputError
from brainalign.models.activations import Activations, save_activations
from brainalign.models.reference import TUCKUTE_FOLDERS, verify_activations
from brainalign.models.registry import get_spec, stage_dependencies

REPO = Path(__file__).resolve().parents[2]
STIMULI = canonical_names()
H5_MODEL, PKL_MODEL = "braindnn_kell2018_word", "braindnn_dcase2020"


def _activations(model: str, seed: int, dim: int = 6) -> Activations:
    rng = np.random.default_rng(seed)
    spec = get_spec(model)
    layers = {name: rng.standard_normal((165, dim + i)).astype(np.float32)
              for i, name in enumerate(spec.layers)}
    return Activations(model=model, layers=layers, stimuli=STIMULI)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _h5(layers: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as h5:
        for name, arr in layers.items():
            h5.create_dataset(name, data=arr)
        h5.create_dataset("layer_list", data=np.array(list(layers), dtype="S"))
    return buf.getvalue()


def _archive(path: Path, h5_layers: dict, pkl_rows: list[dict], extra: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        _add(tar, f"model_actv/model-actv/{TUCKUTE_FOLDERS[H5_MODEL]}/natsound_activations.h5",
             _h5(h5_layers))
        # the permuted network: must never be read
        _add(tar, f"model_actv/model-actv/{TUCKUTE_FOLDERS[H5_MODEL]}/"
             "natsound_activations_randnetw.h5", b"not even hdf5")
        folder = f"model_actv/model-actv/{TUCKUTE_FOLDERS[PKL_MODEL]}"
        for stim, row in zip(STIMULI, pkl_rows, strict=True):
            _add(tar, f"{folder}/{stim}_activations.pkl", pickle.dumps(row))
            _add(tar, f"{folder}/{stim}_activations_randnetw.pkl", b"garbage")
        for name, data in (extra or {}).items():
            _add(tar, name, data)
    return path


@pytest.fixture
def published(tmp_path):
    """Our activations of two models, and an archive holding near copies of them."""
    ours_h5, ours_pkl = _activations(H5_MODEL, 0), _activations(PKL_MODEL, 1)
    rng = np.random.default_rng(2)
    # in-house model: datasets named by our layer names; small noise (r ~ 0.9999)
    h5_layers = {k: v + 0.01 * rng.standard_normal(v.shape) for k, v in ours_h5.layers.items()}
    # external model: one pickle per sound keyed by the authors' layer keys
    spec = get_spec(PKL_MODEL)
    rows = [{spec.paper_keys[k]: v[i].astype(np.float64) for k, v in ours_pkl.layers.items()}
            for i in range(165)]
    paths = []
    for acts in (ours_h5, ours_pkl):
        path = tmp_path / "build" / "activations" / f"{acts.model}.npz"
        save_activations(path, acts)
        paths.append(path)
    return tmp_path, paths, h5_layers, rows


def test_close_copies_pass(published):
    tmp, paths, h5_layers, rows = published
    archive = _archive(tmp / "model_actv.tar", h5_layers, rows)
    result = verify_activations(archive, paths)
    assert {(r.model, r.verdict) for r in result} == {(H5_MODEL, "ok"), (PKL_MODEL, "ok")}
    assert len(result) == len(get_spec(H5_MODEL).layers) + len(get_spec(PKL_MODEL).layers)
    pkl = [r for r in result if r.model == PKL_MODEL]
    assert all(r.pearson_r == pytest.approx(1.0) and r.max_rel_diff < 1e-6 for r in pkl)
    assert pkl[0].reference_key == "GRU(64, 256, batch_first=True, bidirectional=True)--0--hidden"
    assert all(0.99 < r.pearson_r < 1.0 for r in result if r.model == H5_MODEL)


def test_disagreeing_missing_and_misshapen_layers_fail(published):
    tmp, paths, h5_layers, rows = published
    h5_layers = dict(h5_layers)
    h5_layers["relu0"] = np.random.default_rng(9).standard_normal(h5_layers["relu0"].shape)
    del h5_layers["relu1"]
    h5_layers["avgpool"] = h5_layers["avgpool"][:, :3]
    archive = _archive(tmp / "model_actv.tar", h5_layers, rows)
    verdicts = {r.layer: r.verdict for r in verify_activations(archive, paths[:1])}
    assert verdicts["relu0"] == "differs" and verdicts["relu1"] == "missing"
    assert verdicts["avgpool"] == "shape" and verdicts["maxpool0"] == "ok"
    # a stricter relative tolerance fails the noisy copies too
    strict = verify_activations(archive, paths[:1], max_rel_diff=1e-6)
    assert {r.verdict for r in strict} == {"differs", "missing", "shape"}


def test_cli_table_report_and_exit_code(published, monkeypatch):
    tmp, paths, h5_layers, rows = published
    _archive(tmp / "data" / "downloads" / "model_actv.tar", h5_layers, rows)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"] = {m: stage_dependencies(m) for m in (H5_MODEL, PKL_MODEL, "soundnet")}
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp)
    result = CliRunner().invoke(app, ["verify-activations"])
    assert result.exit_code == 0, result.output
    assert "layers within tolerance" in result.output and "soundnet" not in result.output
    report = json.loads((tmp / "build/verify_activations/verify_activations.json").read_text())
    assert len(report) == 14 and {r["verdict"] for r in report} == {"ok"}
    result = CliRunner().invoke(app, ["verify-activations", "--min-r", "0.999999"])
    assert result.exit_code == 1
    assert "differs" in result.output


def test_a_pickle_with_a_payload_is_refused(published):
    tmp, paths, h5_layers, rows = published

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    rows = list(rows)
    rows[3] = {"x": Evil()}
    archive = _archive(tmp / "model_actv.tar", h5_layers, rows)
    with pytest.raises(InputError, match="refusing to unpickle global posix.system"):
        verify_activations(archive, paths[1:])


def test_no_counterpart_and_no_archive(published):
    tmp, paths, h5_layers, rows = published
    archive = _archive(tmp / "model_actv.tar", h5_layers, rows)
    other = tmp / "soundnet.npz"
    save_activations(other, Activations("soundnet", {"conv1": np.zeros((165, 2), np.float32)},
                                        STIMULI))
    with pytest.raises(InputError, match="no counterpart"):
        verify_activations(archive, [other])
    with pytest.raises(InputError, match="reference archive not found"):
        verify_activations(tmp / "absent.tar", paths)
