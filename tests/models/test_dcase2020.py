"""DCASE2020 loader: a synthetic legacy-format checkpoint, the CLI path, Tuckute's hook extraction.

No DCASE package exists on PyPI; equality is checked against a re-statement of the fork's own
forward (modules/encoder.py ``_l_pass`` with view/cat and residual sums, baseline_dcase.py's
bridge) read out with its ``SaveOutput`` hook logic (models/extractor_utils.py), on the same
random real-size network: tolerance 1e-5 (float32; measured 1.2e-7). The shared
librosa-style front end (:mod:`brainalign.models.frontends.librosa_legacy`) is tested here too.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures import dcase2020 as F  # noqa: E402
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
from brainalign.models import dcase2020 as M  # noqa: E402
from brainalign.models.frontends import librosa_legacy as L  # noqa: E402
from brainalign.models.registry import get_spec  # noqa: E402
from brainalign.models.weights import parameter_count  # noqa: E402

torch.set_num_threads(1)
MODEL = "braindnn_dcase2020"
PAPER_PARAMS = 4_573_711
PAPER_DIMS = {"GRU_1": 512, "GRU_2": 512, "GRU_3": 512, "GRU_4": 256, "Linear": 4367}
TOL = 1e-5


# --------------------------------------------------------------------------- helpers
def _drop_blob_pin(registry: Path) -> None:
    """The registry pins the real file's git blob; a synthetic file needs that pin removed."""
    data = json.loads(registry.read_text())
    for entry in data["weights"]:
        if entry["path"] == f"weights/{MODEL}/{F.FILE}":
            entry.pop("git_blob_sha1", None)
    registry.write_text(json.dumps(data, indent=1))


@pytest.fixture
def ws(tmp_path, monkeypatch, mirror_root):
    w = workspace(tmp_path, monkeypatch, mirror_root)
    _drop_blob_pin(w.registry)
    w.params([MODEL], extract={"models": [MODEL], "threads": 1})
    return w


def _fetch(ws, monkeypatch, state: dict | None = None, *, reduced: bool = True,
           cli: bool = False) -> Path:
    """Write the checkpoint (or ``state``) at its real URL in the test mirror and fetch it
    (``cli``: ``brainalign fetch --group github --group weights``, the stimuli included)."""
    if reduced:
        override_spec(monkeypatch, F.reduced_spec())
    src = ws.root / "written" / F.FILE
    src.parent.mkdir(parents=True, exist_ok=True)
    if state is None:
        F.write_files(MODEL, src.parent, reduced=reduced)
    else:
        torch.save(state, src, _use_new_zipfile_serialization=False)
    put(ws.mirror, source_urls(MODEL)[F.FILE], src)
    if cli:
        ws.fetch_weights(MODEL)
    else:
        fetch(["weights"], ws.data, models=[MODEL])
    return ws.data / "weights" / MODEL / F.FILE


def _build(ws, **options):
    return M.build(get_spec(MODEL), context(ws.data, MODEL, ws.registry, **options))


def _clip(seconds: float, rate: int = M.SAMPLE_RATE, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * rate)
    t = torch.arange(n) / rate
    return (0.3 * torch.sin(2 * torch.pi * 330 * t) + 0.05 * torch.randn(n, generator=g))[None]


def _real_runner(**options) -> M.DCASERunner:
    """The real-size architecture with default (seeded) random weights, wrapped by the runner."""
    torch.manual_seed(0)
    net = M.build_network()
    spec = get_spec(MODEL)
    return M.DCASERunner(spec, context(Path("."), MODEL, None, **options), net=net)


def _fork_activations(net: nn.Module, feats: torch.Tensor) -> dict[str, np.ndarray]:
    """The fork's forward (encoder._l_pass, residuals, bridge, decoder) + SaveOutput hooks."""
    acts: dict[str, object] = {}

    def hook(module, _inp, out):
        name = str(module)
        n = sum(1 for k in acts if k.split("--")[0] == name)
        acts[f"{name}--{n}"] = out

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, nn.GRU) or type(m) is nn.Linear]

    def l_pass(layer, x):
        b, t, _ = x.size()
        h = layer(x)[0].view(b, t, 2, -1)
        return torch.cat([h[:, :, 0, :], h[:, :, 1, :]], dim=-1)

    enc, dec = net.encoder, net.decoder
    with torch.inference_mode():
        h = l_pass(enc.gru_1, feats)
        for layer in (enc.gru_2, enc.gru_3):
            h_ = l_pass(layer, h)
            h = h + h_ if h.size()[-1] == h_.size()[-1] else h_
        bridge = h[:, -1, :].unsqueeze(1).expand(-1, 22, -1)
        dec.classifier(dec.rnn(bridge)[0])
    for handle in handles:
        handle.remove()
    out = {}
    for k, v in acts.items():
        if k.startswith("GRU"):
            out[f"{k}--hidden"] = v[1].numpy().squeeze().reshape(-1)
        else:
            out[k] = v.numpy().squeeze().mean(axis=0)
    return out


# --------------------------------------------------------------------------- CLI path
def test_cli_fetch_and_extract_165_sounds(ws, monkeypatch):
    path = _fetch(ws, monkeypatch, cli=True)
    assert not zipfile.is_zipfile(path)  # the legacy (torch 1.3) container
    acts = ws.extract(MODEL)
    assert acts.layer_names == list(M.LAYERS)
    dims = {"GRU_1": 8, "GRU_2": 8, "GRU_3": 8, "GRU_4": 3, "Linear": 7}  # reduced widths
    for key, arr in acts.layers.items():
        assert arr.shape == (165, dims[key]) and np.isfinite(arr).all(), key
        assert arr.std(axis=0).max() > 0, key
    recorded = json.loads(ws.registry.read_text())
    sha = next(e["sha256"] for e in recorded["weights"] if e["path"].endswith(F.FILE))
    files = acts.meta["weights"]["files"]
    assert files[F.FILE]["sha256"] == sha and sha is not None
    runner = acts.meta["runner"]
    assert runner["rnn_reduction"] == "final_state" and runner["input_rate"] == "resampled"
    assert runner["librosa_frontend"] == "original" and runner["weights_file"] == F.FILE
    assert acts.meta["sample_rate"] == M.SAMPLE_RATE == 44_100
    assert acts.meta["paper_keys"] == M.PAPER_KEYS


def test_registry_blob_pin_refuses_a_synthetic_file(tmp_path, monkeypatch, mirror_root):
    w = workspace(tmp_path, monkeypatch, mirror_root)  # registry copy with the git blob pin
    F.write_files(MODEL, tmp_path / "written", reduced=True)
    put(w.mirror, source_urls(MODEL)[F.FILE], tmp_path / "written" / F.FILE)
    with pytest.raises(InputError, match="not git blob 84992d7a"):
        fetch(["weights"], w.data, models=[MODEL])


# --------------------------------------------------------------------------- safety, strictness
def test_renamed_key_fails_naming_key_file_and_model(ws, monkeypatch):
    state = F.state_dict(F.REDUCED)
    state["encoder.gru_2.weight_hh_l0_rev"] = state.pop("encoder.gru_2.weight_hh_l0_reverse")
    _fetch(ws, monkeypatch, state)
    with pytest.raises(InputError) as err:
        _build(ws)
    msg = str(err.value)
    assert "encoder.gru_2.weight_hh_l0_reverse" in msg and "encoder.gru_2.weight_hh_l0_rev'" in msg
    assert F.FILE in msg and MODEL in msg


def test_wrong_width_fails_the_config_check(ws, monkeypatch):
    _fetch(ws, monkeypatch, F.state_dict({**F.REDUCED, "nb_classes": 9}))
    with pytest.raises(InputError, match="nb_classes=9 .expected 7."):
        _build(ws)


def test_truncated_file_fails_its_checksum_before_reading(ws, monkeypatch):
    path = _fetch(ws, monkeypatch)
    truncate(path)

    def never(*_a, **_k):
        raise AssertionError("deserialised before the checksum check")

    monkeypatch.setattr(M, "safe_load", never)
    with pytest.raises(InputError, match="checksum mismatch"):
        _build(ws)


def test_os_system_payload_is_refused(ws, monkeypatch):
    _fetch(ws, monkeypatch, add_payload(F.state_dict(F.REDUCED)))
    calls = []
    monkeypatch.setattr("os.system", lambda *a: calls.append(a))
    with pytest.raises(InputError, match="refusing to unpickle.*system"):
        _build(ws)
    assert calls == []


@pytest.mark.parametrize(("options", "where"), [
    ({"rnn_reduction": "mean"}, "rnn_reduction"),
    ({"input_rate": "native"}, "input_rate"),
    ({"input_rate": "native_as_44k", "native_rate": 0}, "native_rate"),
    ({"native_rate": 16000}, "native_rate"),
    ({"librosa_frontend": "0.7"}, "librosa_frontend"),
    ({"hop": 256}, ""),
])
def test_bad_options_give_one_clear_error(options, where):
    with pytest.raises(InputError) as err:
        _real_runner(**options)
    assert err.value.where == f"extract.options.{MODEL}" + (f".{where}" if where else "")


# --------------------------------------------------------------------------- the paper's facts
def test_parameter_count_and_key_strings_of_the_real_configuration():
    assert parameter_count(M.build_network) == PAPER_PARAMS
    with torch.device("meta"):
        net = M.build_network()
    assert M.gru_keys(net) == M.PAPER_KEYS


def test_real_size_layers_match_the_fork_hooks():
    runner = _real_runner()
    clip = _clip(0.5)
    feats = runner.features(clip)
    with torch.inference_mode():
        ours = runner.forward(clip, list(M.LAYERS))
    ref = _fork_activations(runner.net, feats)
    assert set(ref) == set(M.PAPER_KEYS.values())
    for layer, key in M.PAPER_KEYS.items():
        assert ours[layer].shape == (1, PAPER_DIMS[layer])
        assert float(np.abs(ours[layer][0].numpy() - ref[key]).max()) <= TOL, layer


def test_time_mean_option():
    runner = _real_runner(rnn_reduction="time_mean")
    clip = _clip(0.3)
    with torch.inference_mode():
        out = runner.forward(clip, list(M.LAYERS))
        x = runner.features(clip)
        seq, _ = runner.net.encoder.gru_1(x)
    assert {k: v.shape[1] for k, v in out.items()} == PAPER_DIMS
    torch.testing.assert_close(out["GRU_1"], seq.mean(dim=1), rtol=0, atol=1e-6)


def test_frames_for_two_seconds_resampled_and_native():
    resampled = _real_runner()
    assert resampled.sample_rate == 44_100
    assert resampled.features(_clip(2.0)).shape == (1, 173, 64) and M.n_frames(88_200) == 173
    native = _real_runner(input_rate="native_as_44k")
    assert native.sample_rate == 20_000 and native.info()["native_rate"] == 20_000
    assert native.features(_clip(2.0, 20_000)).shape == (1, 79, 64)
    assert _real_runner(input_rate="native_as_44k", native_rate=16_000).sample_rate == 16_000
    assert M.SPECS[0].min_samples == 1 and resampled.features(_clip(1e-4)).shape == (1, 1, 64)


def test_two_runs_are_identical(ws, monkeypatch):
    _fetch(ws, monkeypatch)
    clips = torch.cat([_clip(2.0, seed=1), _clip(2.0, seed=2)])
    with torch.inference_mode():
        a = _build(ws).forward(clips, list(M.LAYERS))
        b = _build(ws).forward(clips, list(M.LAYERS))
    for key in M.LAYERS:
        assert torch.equal(a[key], b[key]), key


# --------------------------------------------------------------------------- the front end
def _v07_magnitude(y: np.ndarray, n_fft: int, hop: int, win_length: int,
                   window: str) -> np.ndarray:
    """librosa 0.7's stft: np.pad(reflect) of the whole signal, frames, windowed rfft."""
    import librosa
    import scipy.signal

    w = librosa.util.pad_center(scipy.signal.get_window(window, win_length, fftbins=True),
                                size=n_fft)
    frames = librosa.util.frame(np.pad(y, n_fft // 2, mode="reflect"), frame_length=n_fft,
                                hop_length=hop)
    return np.abs(np.fft.rfft(w[:, None] * frames, axis=0)).astype(np.float32)


def test_features_equal_librosa_original_and_0_11():
    import librosa

    clip = _clip(2.0)
    y = clip[0].numpy() / np.abs(clip[0].numpy()).max()
    # original (librosa 0.7.1): reflect pad, norm=1 = Slaney area ('slaney' in librosa >= 0.8)
    basis = librosa.filters.mel(sr=44100, n_fft=1024, n_mels=64, fmin=0.0, fmax=None,
                                htk=False, norm="slaney")
    ref = np.log(basis @ _v07_magnitude(y, 1024, 512, 1024, "hann") + np.finfo(float).eps).T
    ours = _real_runner().features(clip)[0].numpy()
    assert ours.shape == ref.shape == (173, 64)
    assert np.abs(ours - ref).max() < 1e-4  # log of float32 mel energies
    # librosa_0.11: the same call under librosa 0.11 (zero pad; numeric norm=1 = L1)
    mel = librosa.feature.melspectrogram(y=y, sr=44100, n_fft=1024, hop_length=512,
                                         win_length=1024, window="hann", center=True, power=1,
                                         n_mels=64, fmin=0.0, fmax=None, htk=False, norm=1)
    ref11 = np.log(mel + np.finfo(float).eps).T
    ours11 = _real_runner(librosa_frontend="librosa_0.11").features(clip)[0].numpy()
    assert np.abs(ours11 - ref11).max() < 1e-4
    assert np.abs(ours11 - ours).max() > 1.0  # the two behaviours really differ


@pytest.mark.parametrize(("sr", "n_fft", "n_mels", "fmin"), [(44100, 1024, 64, 0.0),
                                                             (16000, 2048, 80, 50.0)])
def test_mel_filters_equal_librosa(sr, n_fft, n_mels, fmin):
    import librosa

    for ours, theirs in (("slaney", "slaney"), ("l1", 1)):
        ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, norm=theirs)
        got = L.mel_filters(sr, n_fft, n_mels, fmin=fmin, norm=ours)
        assert got.dtype == np.float32 and got.shape == ref.shape
        assert np.abs(got - ref).max() <= 1e-7
    assert L.resolve_norm(1, L.BEHAVIOURS["original"]) == "slaney"
    assert L.resolve_norm(1, L.BEHAVIOURS["librosa_0.11"]) == "l1"
    assert L.resolve_norm("slaney", L.BEHAVIOURS["librosa_0.11"]) == "slaney"


def test_reflect_pad_is_numpy_reflect_for_any_length():
    for n in (1, 2, 3, 7, 100):
        x = np.arange(n, dtype=np.float32) ** 1.5
        for pad in (1, 3, 50, 1024):
            got = L.reflect_pad(torch.from_numpy(x)[None], pad)[0].numpy()
            assert np.array_equal(got, np.pad(x, pad, mode="reflect")), (n, pad)


def test_stft_and_db_equal_librosa():
    import librosa

    y = _clip(1.0, 16000)[0].numpy()
    for window, n_fft, hop, win in (("hann", 2048, 160, 400), ("hamming", 320, 160, 320)):
        ours = L.stft(torch.from_numpy(y)[None], n_fft, hop, win, window, True, "reflect")
        ref = _v07_magnitude(y, n_fft, hop, win, window)
        assert np.abs(ours[0].abs().numpy() - ref).max() < 1e-5 * ref.max()
        ours0 = L.stft(torch.from_numpy(y)[None], n_fft, hop, win, window, True, "constant")
        ref0 = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop, win_length=win,
                                   window=window, center=True, pad_mode="constant"))
        assert np.abs(ours0[0].abs().numpy() - ref0).max() < 1e-5 * ref0.max()
    s = np.abs(librosa.stft(y, n_fft=2048, hop_length=160, win_length=400))
    db = L.amplitude_to_db(torch.from_numpy(s)[None], top_db=80.0)[0].numpy()
    assert np.abs(db - librosa.amplitude_to_db(s, top_db=80)).max() < 1e-4
    assert L.peak_normalise(torch.zeros(1, 10)).abs().max() == 0
