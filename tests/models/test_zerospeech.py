"""ZeroSpeech loader: a synthetic training checkpoint inside the release zip, the CLI path.

bshall/ZeroSpeech is not on PyPI: equality is checked against the fork's own read-out
(convert.py: the encoder's conv stack, ``SaveOutput`` hooks on every ``nn.ReLU``,
extractor_utils.py's time mean) on the same random real-size encoder: tolerance 1e-5 (float32;
measured 2.4e-7).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures import zerospeech as F  # noqa: E402
from weights_helpers import (  # noqa: E402
    add_payload,
    context,
    override_spec,
    source_urls,
    truncate,
    workspace,
)

from brainalign.data.fetch import fetch, mirror_path  # noqa: E402
from brainalign.errors import InputError  # noqa: E402
from brainalign.models import zerospeech as M  # noqa: E402
from brainalign.models.registry import get_spec  # noqa: E402
from brainalign.models.weights import parameter_count  # noqa: E402

torch.set_num_threads(1)
MODEL = "braindnn_zerospeech"
PAPER_PARAMS = 7_908_928
TOL = 1e-5


# --------------------------------------------------------------------------- helpers
def _ws(tmp_path: Path, monkeypatch, mirror_root: Path, name: str = "a"):
    (tmp_path / name).mkdir()
    w = workspace(tmp_path / name, monkeypatch, mirror_root)
    w.params([MODEL], extract={"models": [MODEL], "threads": 1})
    return w


@pytest.fixture
def ws(tmp_path, monkeypatch, mirror_root):
    return _ws(tmp_path, monkeypatch, mirror_root)


def _fetch(ws, monkeypatch, *, cli: bool = False, **write) -> Path:
    """Write a reduced checkpoint into a zip at the release URL in the test mirror; fetch it."""
    override_spec(monkeypatch, F.reduced_spec())
    src = ws.root / "written" / F.FILE
    src.parent.mkdir(parents=True, exist_ok=True)
    F.write_checkpoint(src, dict(F.REDUCED), reduced=True, **write)
    F.write_archive(mirror_path(source_urls(MODEL)[F.FILE], ws.mirror), src)
    if cli:
        ws.fetch_weights(MODEL)
    else:
        fetch(["weights"], ws.data, models=[MODEL])
    return ws.data / "weights" / MODEL / F.FILE


def _build(ws, **options):
    return M.build(get_spec(MODEL), context(ws.data, MODEL, ws.registry, **options))


def _clip(seconds: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * M.SAMPLE_RATE)
    t = torch.arange(n) / M.SAMPLE_RATE
    return (0.3 * torch.sin(2 * torch.pi * 180 * t) + 0.05 * torch.randn(n, generator=g))[None]


def _real_runner(device: str = "cpu", **options) -> M.ZeroSpeechRunner:
    torch.manual_seed(0)
    with torch.device(device):
        net = M.build_network()
        for m in net.modules():  # trained-like BN statistics instead of (0, 1)
            if isinstance(m, nn.BatchNorm1d) and device == "cpu":
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ctx = context(Path("."), MODEL, None, device=device, **options)
    return M.ZeroSpeechRunner(get_spec(MODEL), ctx, net=net)


def _fork_activations(net: nn.Module, mel: torch.Tensor) -> dict[str, np.ndarray]:
    """convert.py: hooks on every encoder nn.ReLU, then the whole conv stack."""
    acts: dict[str, torch.Tensor] = {}

    def hook(module, _inp, out):
        name = str(module)
        n = sum(1 for k in acts if k.split("--")[0] == name)
        acts[f"{name}--{n}"] = out

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, nn.modules.ReLU)]
    with torch.no_grad():
        net.encoder(mel)
    for handle in handles:
        handle.remove()
    return {k: np.mean(v.detach().numpy().squeeze(), axis=1) for k, v in acts.items()}


# --------------------------------------------------------------------------- CLI path
def test_cli_fetch_from_the_release_zip_and_extract_165_sounds(ws, monkeypatch):
    _fetch(ws, monkeypatch, cli=True)
    acts = ws.extract(MODEL)
    assert acts.layer_names == list(M.LAYERS)
    for key, arr in acts.layers.items():
        assert arr.shape == (165, F.REDUCED["channels"]) and np.isfinite(arr).all(), key
        assert arr.std(axis=0).max() > 0, key
    recorded = json.loads(ws.registry.read_text())
    entry = next(e for e in recorded["weights"]
                 if e["path"] == "downloads/zerospeech-2019english.zip")
    member_sha = entry["members"][0]["sha256"]
    files = acts.meta["weights"]["files"]
    assert member_sha is not None and files[F.FILE]["sha256"] == member_sha
    assert files[F.FILE]["member"] == F.FILE and files[F.FILE]["archive_sha256"] == entry["sha256"]
    runner = acts.meta["runner"]
    assert runner["config"] == F.REDUCED and runner["checkpoint_step"] == 500_000
    assert runner["librosa_frontend"] == "original"
    assert acts.meta["paper_keys"] == M.PAPER_KEYS


def test_zip_and_legacy_containers_give_the_same_activations(tmp_path, monkeypatch, mirror_root):
    clip = _clip(1.0)
    out = []
    for name, zipped in (("legacy", False), ("zip", True)):
        w = _ws(tmp_path, monkeypatch, mirror_root, name)
        _fetch(w, monkeypatch, zip_container=zipped)
        with torch.inference_mode():
            out.append(_build(w).forward(clip, list(M.LAYERS)))
    for key in M.LAYERS:
        assert torch.equal(out[0][key], out[1][key]), key


# --------------------------------------------------------------------------- safety, strictness
def test_renamed_key_fails_naming_key_file_and_model(ws, monkeypatch):
    def rename(state):
        state["codebook.ema_counts"] = state.pop("codebook.ema_count")

    _fetch(ws, monkeypatch, state_edit=rename)
    with pytest.raises(InputError) as err:
        _build(ws)
    msg = str(err.value)
    assert "'codebook.ema_count'" in msg and "'codebook.ema_counts'" in msg
    assert F.FILE in msg and MODEL in msg


def test_wrong_width_fails_the_config_check(ws, monkeypatch):
    _fetch(ws, monkeypatch)
    override_spec(monkeypatch, M.SPECS[0])  # the real spec: 768 channels expected
    with pytest.raises(InputError, match="channels=4 .expected 768."):
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
    _fetch(ws, monkeypatch, extra=add_payload({}))
    calls = []
    monkeypatch.setattr("os.system", lambda *a: calls.append(a))
    with pytest.raises(InputError, match="refusing to unpickle.*system"):
        _build(ws)
    assert calls == []


@pytest.mark.parametrize(("options", "where"), [
    ({"librosa_frontend": "librosa_0.7"}, "librosa_frontend"),
    ({"rnn_reduction": "time_mean"}, ""),
])
def test_bad_options_give_one_clear_error(options, where):
    with pytest.raises(InputError) as err:
        _real_runner("meta", **options)
    assert err.value.where == f"extract.options.{MODEL}" + (f".{where}" if where else "")


# --------------------------------------------------------------------------- the paper's facts
def test_parameter_count_and_key_strings_of_the_real_configuration():
    assert parameter_count(M.build_network) == PAPER_PARAMS
    with torch.device("meta"):
        net = M.build_network()
    assert M.relu_keys(net) == M.PAPER_KEYS
    assert sum(b.numel() for b in net.buffers()) > 0  # codebook + BN statistics: not counted


def test_real_size_frames_for_two_seconds_on_meta():
    runner = _real_runner("meta")
    shapes = {}
    hooks = [runner.net.encoder[i].register_forward_hook(
        lambda _m, _i, out, k=k: shapes.__setitem__(k, tuple(out.shape)))
        for k, i in M.RELU_INDEX.items()]
    clip = torch.zeros(1, 32_000, device="meta")
    assert runner.features(clip).shape == (1, 80, 201)
    out = runner.forward(clip, list(M.LAYERS))
    for h in hooks:
        h.remove()
    assert shapes == {"ReLU_1": (1, 768, 199), "ReLU_2": (1, 768, 199),
                      **{f"ReLU_{i}": (1, 768, 99) for i in (3, 4, 5)}}
    assert all(tuple(v.shape) == (1, 768) for v in out.values())
    assert M.frames(32_000) == {"mel": 201, "ReLU_1": 199, "ReLU_2": 199, "ReLU_3": 99,
                                "ReLU_4": 99, "ReLU_5": 99}
    assert M.MIN_SAMPLES == 480 and min(M.frames(479).values()) == 0
    assert min(M.frames(480).values()) == 1


def test_real_size_layers_match_the_fork_hooks():
    runner = _real_runner()
    clip = _clip(0.5)
    mel = runner.features(clip)
    with torch.inference_mode():
        ours = runner.forward(clip, list(M.LAYERS))
    ref = _fork_activations(runner.net, mel)
    assert set(ref) == set(M.PAPER_KEYS.values())
    for layer, key in M.PAPER_KEYS.items():
        assert ours[layer].shape == (1, 768)
        assert float(np.abs(ours[layer][0].numpy() - ref[key]).max()) <= TOL, layer
    short = runner.forward(_clip(480 / M.SAMPLE_RATE), ["ReLU_5"])  # min_samples: 1 frame
    assert short["ReLU_5"].shape == (1, 768) and torch.isfinite(short["ReLU_5"]).all()


def test_two_runs_are_identical(ws, monkeypatch):
    _fetch(ws, monkeypatch)
    clips = torch.cat([_clip(2.0, 1), _clip(2.0, 2)])
    with torch.inference_mode():
        a = _build(ws).forward(clips, list(M.LAYERS))
        b = _build(ws).forward(clips, list(M.LAYERS))
    for key in M.LAYERS:
        assert torch.equal(a[key], b[key]), key


# --------------------------------------------------------------------------- the front end
def test_features_equal_the_fork_front_end():
    import librosa
    import scipy.signal

    clip = _clip(2.0)
    wav = clip[0].numpy()
    wav = wav / np.abs(wav).max() * 0.999
    pre = scipy.signal.lfilter([1, -0.97], [1], wav)
    basis = librosa.filters.mel(sr=16000, n_fft=2048, n_mels=80, fmin=50, norm="slaney")
    # original (librosa 0.7.2): np.pad(reflect) of the whole signal, periodic hann of 400
    w = librosa.util.pad_center(scipy.signal.get_window("hann", 400, fftbins=True), size=2048)
    frames = librosa.util.frame(np.pad(pre, 1024, mode="reflect"), frame_length=2048,
                                hop_length=160)
    mel = basis @ np.abs(np.fft.rfft(w[:, None] * frames, axis=0))
    ref = librosa.amplitude_to_db(mel, top_db=80) / 80 + 1
    ours = _real_runner().features(clip)[0].numpy()
    assert ours.shape == ref.shape == (80, 201)
    assert np.abs(ours - ref).max() < 1e-4
    # librosa_0.11: the same call (y= keyword) under librosa 0.11: zero padding, same filters
    mel11 = librosa.feature.melspectrogram(y=pre, sr=16000, n_fft=2048, n_mels=80,
                                           hop_length=160, win_length=400, fmin=50, power=1)
    ref11 = librosa.amplitude_to_db(mel11, top_db=80) / 80 + 1
    ours11 = _real_runner(librosa_frontend="librosa_0.11").features(clip)[0].numpy()
    assert np.abs(ours11 - ref11).max() < 1e-4
    assert np.abs(ours11 - ours).max() > 1e-3
