"""braindnn_vggish: synthetic release files in their containers, through fetch and extract;
strict, safe loading (numpy PCA file included); the real configuration's size, shapes and key
strings; equality with the torchvggish 0.2 package (network and front end)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures import vggish as fx  # noqa: E402
from weights_helpers import (  # noqa: E402
    add_payload,
    context,
    override_spec,
    put,
    source_urls,
    truncate,
    workspace,
)

from brainalign.data.fetch import fetch  # noqa: E402
from brainalign.errors import InputError  # noqa: E402
from brainalign.models import vggish as V  # noqa: E402
from brainalign.models.registry import get_spec  # noqa: E402
from brainalign.models.weights import parameter_count, sha256_file  # noqa: E402

MODEL = "braindnn_vggish"
REAL_DIMS = {"ReLU_0": 4096, "MaxPool_0": 2048, "ReLU_1": 4096, "MaxPool_1": 2048,
             "ReLU_2": 4096, "ReLU_3": 4096, "MaxPool_2": 2048, "ReLU_4": 4096, "ReLU_5": 4096,
             "MaxPool_3": 2048, "ReLU_6": 4096, "ReLU_7": 4096, "ReLU_8": 128}  # paper-models 3.8


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)


def _drop_published_prefixes(registry: Path) -> None:
    """Synthetic bytes cannot match the 8-hex sha256 prefixes the release file names carry."""
    raw = json.loads(registry.read_text())
    for entry in raw["weights"]:
        if entry["path"].startswith(f"weights/{MODEL}/"):
            entry.pop("sha256_prefix", None)
    registry.write_text(json.dumps(raw, indent=1))


def _fetched(tmp_path, monkeypatch, mirror_root, main=None, pca=None):
    """A workspace whose data/weights/braindnn_vggish holds the reduced synthetic files (or
    the given objects saved in their place), fetched through the registry."""
    ws = workspace(tmp_path, monkeypatch, mirror_root)
    files = fx.write_files(MODEL, tmp_path / "written", reduced=True)
    for name, obj in ((V.WEIGHT_FILE, main), (V.PCA_FILE, pca)):
        if obj is not None:
            fx.save_legacy(obj, files[name])
    urls = source_urls(MODEL)
    for name, path in files.items():
        put(ws.mirror, urls[name], path)
    _drop_published_prefixes(ws.registry)
    ws.params([MODEL], extract={"device": "cpu", "threads": 1})
    ws.fetch_weights(MODEL)
    return ws


def _runner(ws, spec=None, **options):
    return V.build(spec or fx.reduced_spec(), context(ws.data, MODEL, ws.registry, **options))


# --------------------------------------------------------------------------- CLI path
def test_fetch_and_extract_the_165_sounds(tmp_path, monkeypatch, mirror_root):
    ws = _fetched(tmp_path, monkeypatch, mirror_root)
    override_spec(monkeypatch, fx.reduced_spec())
    acts = ws.extract(MODEL)
    assert tuple(acts.layers) == V.LAYERS == get_spec(MODEL).layers
    c = 4  # reduced width: C * M per conv / pool map, the FC widths
    dims = {k: v.shape[1] for k, v in acts.layers.items()}
    assert dims == {"ReLU_0": c * 64, "MaxPool_0": c * 32, "ReLU_1": c * 32, "MaxPool_1": c * 16,
                    "ReLU_2": c * 16, "ReLU_3": c * 16, "MaxPool_2": c * 8, "ReLU_4": c * 8,
                    "ReLU_5": c * 8, "MaxPool_3": c * 4, "ReLU_6": 8, "ReLU_7": 8, "ReLU_8": 4}
    assert all(v.shape[0] == 165 and np.isfinite(v).all() for v in acts.layers.values())
    assert all(v.std() > 0 for k, v in acts.layers.items() if k != "ReLU_8")
    files = acts.meta["weights"]["files"]
    assert sorted(files) == sorted([V.WEIGHT_FILE, V.PCA_FILE])
    for name, info in files.items():
        assert info["sha256"] == sha256_file(ws.data / "weights" / MODEL / name)
    runner = acts.meta["runner"]
    assert runner["pca"]["applied"] is False
    assert runner["pca"]["pca_eigen_vectors"]["shape"] == [4, 4]
    assert runner["config"] == {"channels": [4] * 6, "fc": [8, 8, 4]}
    assert acts.meta["paper_keys"]["ReLU_6"] == "ReLU(inplace=True)--6"


def test_synthetic_bytes_fail_the_published_sha256_prefix(tmp_path, monkeypatch, mirror_root):
    ws = workspace(tmp_path, monkeypatch, mirror_root)
    files = fx.write_files(MODEL, tmp_path / "written", reduced=True)
    urls = source_urls(MODEL)
    for name, path in files.items():
        put(ws.mirror, urls[name], path)
    with pytest.raises(InputError, match="publishes the prefix 10086976: refusing it"):
        fetch(["weights"], ws.data, ws.mirror, ws.registry, models=[MODEL])


# --------------------------------------------------------------------------- safe, strict loading
def test_a_renamed_key_is_named(tmp_path, monkeypatch, mirror_root):
    state = fx.state_dict(fx.config(True))
    state["embeddings.5.bias"] = state.pop("embeddings.4.bias")
    ws = _fetched(tmp_path, monkeypatch, mirror_root, main=state)
    with pytest.raises(InputError) as err:
        _runner(ws)
    msg = str(err.value)
    assert "missing key 'embeddings.4.bias'" in msg and "unexpected key 'embeddings.5.bias'" in msg
    assert V.WEIGHT_FILE in msg and MODEL in msg


@pytest.mark.parametrize("name", [V.WEIGHT_FILE, V.PCA_FILE])
def test_a_truncated_file_fails_its_checksum_before_loading(tmp_path, monkeypatch, mirror_root,
                                                            name):
    ws = _fetched(tmp_path, monkeypatch, mirror_root)
    truncate(ws.data / "weights" / MODEL / name)

    def never(*_a, **_k):
        raise AssertionError("deserialised before the checksum")

    monkeypatch.setattr(V, "safe_load", never)
    with pytest.raises(InputError, match=f"{name}: weight checksum mismatch"):
        _runner(ws)


@pytest.mark.parametrize("which", ["main", "pca"])
def test_an_os_system_payload_is_refused(tmp_path, monkeypatch, mirror_root, which):
    cfg = fx.config(True)
    obj = fx.state_dict(cfg) if which == "main" else fx.pca_params(cfg["fc"][-1])
    ws = _fetched(tmp_path, monkeypatch, mirror_root, **{which: add_payload(obj)})

    def ran(*_a, **_k):
        raise AssertionError("the payload ran")

    monkeypatch.setattr(os, "system", ran)
    with pytest.raises(InputError, match="refusing to unpickle.*system"):
        _runner(ws)


def test_the_pca_file_is_read_as_numpy_and_validated(tmp_path, monkeypatch, mirror_root):
    ws = _fetched(tmp_path, monkeypatch, mirror_root)
    raw = (ws.data / "weights" / MODEL / V.PCA_FILE).read_bytes()
    assert fx.NUMPY1_GLOBAL in raw  # named as numpy 1 wrote it: still read, nothing else allowed
    assert _runner(ws).info()["pca"]["pca_means"] == {"shape": [4], "dtype": "float64"}


def test_a_pca_file_of_the_wrong_size_is_refused(tmp_path, monkeypatch, mirror_root):
    ws = _fetched(tmp_path, monkeypatch, mirror_root, pca=fx.pca_params(128))
    with pytest.raises(InputError, match=r"PCA parameters of shapes \(128, 128\)"):
        _runner(ws)


def test_a_checkpoint_of_another_size_is_refused(tmp_path, monkeypatch, mirror_root):
    ws = _fetched(tmp_path, monkeypatch, mirror_root)
    with pytest.raises(InputError, match=r"config is not that of.*channels=\(4, 4, 4, 4, 4, 4\)"):
        _runner(ws, spec=get_spec(MODEL))


def test_options_are_refused(tmp_path):
    with pytest.raises(InputError, match=r"extract\.options\.braindnn_vggish\.pooling"):
        V.build(get_spec(MODEL), context(tmp_path, MODEL, None, pooling="mean"))


# --------------------------------------------------------------------------- the real configuration
def test_parameter_count_of_the_real_model():
    assert parameter_count(lambda: V.network(V.CONFIG)) == 72_141_184  # paper-models 4.2


def test_frames_examples_and_layer_dims_for_2_s():
    wave = torch.from_numpy(_noise(2.0))
    assert tuple(V.log_mel(wave).shape) == (198, 64)
    assert tuple(V.examples(wave).shape) == (2, 1, 96, 64)  # the last 6 frames unused
    assert V.MIN_SAMPLES == get_spec(MODEL).min_samples == 15600
    assert V.examples(wave[:15600]).shape[0] == 1
    with pytest.raises(InputError, match="needs >= 15600 samples"):
        V.examples(wave[:15599])
    with torch.device("meta"):
        taps = V.network(V.CONFIG)(torch.empty(2, 1, 96, 64))
    assert {k: V.reduce(t).shape[0] for k, t in zip(V.NETWORK_ORDER, taps, strict=True)} \
        == REAL_DIMS
    assert tuple(taps[0].shape) == (2, 64, 96, 64) and tuple(taps[9].shape) == (2, 512, 6, 4)


def test_paper_keys_come_from_our_modules():
    """Tuckute's names: str(module) + '--<earlier calls with the same repr>'."""
    names: list[str] = []

    def hook(module, _inp, _out):
        names.append(f"{module}--{[n.split('--')[0] for n in names].count(str(module))}")

    with torch.device("meta"):
        net = V.network(V.CONFIG)
        for m in net.modules():
            if type(m) in (torch.nn.ReLU, torch.nn.MaxPool2d):
                m.register_forward_hook(hook)
        net(torch.empty(1, 1, 96, 64))
    assert dict(zip(V.NETWORK_ORDER, names, strict=True)) == dict(get_spec(MODEL).paper_keys)


# --------------------------------------------------------------------------- numerics
def test_two_runs_give_identical_activations(tmp_path, monkeypatch, mirror_root):
    ws = _fetched(tmp_path, monkeypatch, mirror_root)
    audio = torch.from_numpy(np.stack([_noise(2.0, s) for s in range(3)]))
    with torch.inference_mode():
        a = _runner(ws).forward(audio, V.LAYERS)
        b = _runner(ws).forward(audio, V.LAYERS)
        one = _runner(ws).forward(audio[1:2], V.LAYERS)
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k][1:2], one[k]) for k in V.LAYERS)


def _tuckute_reduce(a: np.ndarray) -> np.ndarray:
    """VGG-fork extractor_utils.detach_activations, numpy as she wrote it."""
    if a.ndim == 4:
        a = np.moveaxis(a, 2, 1)
        a = a.reshape(a.shape[0], a.shape[1], a.shape[2] * a.shape[3]).mean(axis=1)
    return a.mean(axis=0)


def test_equals_the_torchvggish_package_on_random_weights(mirror_root):
    from torchvggish import mel_features, vggish_input
    from torchvggish.torchvggish import VGG, make_layers

    np.testing.assert_allclose(V.mel_matrix(), mel_features.spectrogram_to_mel_matrix(
        num_mel_bins=64, num_spectrogram_bins=257, audio_sample_rate=16000,
        lower_edge_hertz=125, upper_edge_hertz=7500), rtol=0, atol=1e-12)
    sd = fx.state_dict(V.CONFIG, seed=1)
    ours = V.network(V.CONFIG).eval()
    ours.load_state_dict(sd, strict=True)
    theirs = VGG(make_layers(), postprocess=False).eval()
    theirs.load_state_dict(sd, strict=True)
    outs: list[torch.Tensor] = []
    for m in theirs.modules():
        if type(m) in (torch.nn.ReLU, torch.nn.MaxPool2d):
            m.register_forward_hook(lambda _m, _i, o: outs.append(o.clone()))
    wave = _noise(2.0)
    x = V.examples(torch.from_numpy(wave))
    # upstream reads int16 / 32768 (float64): the same float64 samples go to both
    x_ref = vggish_input.waveform_to_examples(wave.astype(np.float64), 16000).detach()
    assert float((x - x_ref).abs().max()) <= 1e-6  # measured 0.0
    with torch.no_grad():
        taps = ours(x)
        theirs(x_ref)
    assert len(outs) == len(taps) == 13
    for name, a, b in zip(V.NETWORK_ORDER, taps, outs, strict=True):
        assert float((a - b).abs().max()) <= 1e-5, name  # measured 0.0
        np.testing.assert_allclose(V.reduce(a).numpy(), _tuckute_reduce(b.numpy()),
                                   rtol=1e-5, atol=1e-6, err_msg=name)
