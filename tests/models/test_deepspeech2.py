"""DeepSpeech2 loader: a synthetic Lightning checkpoint with real OmegaConf pickles, the CLI path.

deepspeech_pytorch is not on PyPI (and needs Lightning 1.x): equality is checked against a
re-statement of the fork's forward (model.py: MaskConv's length masks, pack_padded_sequence,
the summed directions) read out with its ``SaveOutput`` hook logic (inference.py), on the same
random real-size network: tolerance 1e-5 (float32; measured 4.8e-7).
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

from fixtures import deepspeech2 as F  # noqa: E402
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
from brainalign.models import deepspeech2 as M  # noqa: E402
from brainalign.models.registry import get_spec  # noqa: E402
from brainalign.models.weights import parameter_count, safe_load  # noqa: E402

torch.set_num_threads(1)
MODEL = "braindnn_deepspeech"
PAPER_PARAMS = 86_618_400
PAPER_DIMS = {"HardTanh_1": 2592, "HardTanh_2": 1312, **{f"LSTM_{i}": 2048 for i in range(1, 6)}}
TOL = 1e-5


# --------------------------------------------------------------------------- helpers
@pytest.fixture
def ws(tmp_path, monkeypatch, mirror_root):
    w = workspace(tmp_path, monkeypatch, mirror_root)
    w.params([MODEL], extract={"models": [MODEL], "threads": 1})
    return w


def _fetch(ws, monkeypatch, *, cli: bool = False, **write) -> Path:
    """Write a reduced checkpoint at its real URL in the test mirror and fetch it."""
    override_spec(monkeypatch, F.reduced_spec())
    src = ws.root / "written" / F.FILE
    src.parent.mkdir(parents=True, exist_ok=True)
    F.write_checkpoint(src, dict(F.REDUCED), **write)
    put(ws.mirror, source_urls(MODEL)[F.FILE], src)
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
    return (0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.05 * torch.randn(n, generator=g))[None]


def _real_runner(device: str = "cpu", **options) -> M.DeepSpeechRunner:
    torch.manual_seed(0)
    with torch.device(device):
        net = M.build_network()
    ctx = context(Path("."), MODEL, None, device=device, **options)
    return M.DeepSpeechRunner(get_spec(MODEL), ctx, net=net)


def _fork_activations(net: nn.Module, spect: torch.Tensor) -> dict[str, np.ndarray]:
    """model.py DeepSpeech.forward up to the RNNs + inference.py SaveOutput (hooks)."""
    acts: dict[str, object] = {}

    def hook(module, _inp, out):
        name = str(module)
        n = sum(1 for k in acts if k.split("--")[0] == name)
        acts[f"{name}--{n}"] = out

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, nn.Hardtanh) or type(m) is nn.LSTM]
    lengths = torch.IntTensor([spect.size(3)])
    seq_len = lengths
    for m in net.conv.seq_module:
        if type(m) is nn.Conv2d:
            seq_len = (seq_len + 2 * m.padding[1] - m.dilation[1] * (m.kernel_size[1] - 1)
                       - 1) // m.stride[1] + 1
    with torch.inference_mode():
        x = spect
        for module in net.conv.seq_module:  # MaskConv.forward
            x = module(x)
            mask = torch.BoolTensor(x.size()).fill_(0)
            for i, length in enumerate(seq_len):
                if (mask[i].size(2) - length.item()) > 0:
                    mask[i].narrow(2, length.item(), mask[i].size(2) - length.item()).fill_(1)
            x = x.masked_fill(mask, 0)
        sizes = x.size()
        x = x.view(sizes[0], sizes[1] * sizes[2], sizes[3]).transpose(1, 2).transpose(0, 1)
        for brnn in net.rnns:  # BatchRNN.forward
            if brnn.batch_norm is not None:
                x = brnn.batch_norm(x.contiguous())
            x = nn.utils.rnn.pack_padded_sequence(x, seq_len)
            x, _h = brnn.rnn(x)
            x, _ = nn.utils.rnn.pad_packed_sequence(x)
            x = x.view(x.size(0), x.size(1), 2, -1).sum(2).view(x.size(0), x.size(1), -1)
    for handle in handles:
        handle.remove()
    out = {}
    for k, v in acts.items():
        if k.startswith("Hardtanh"):
            a = v.numpy().squeeze()
            out[k] = a.reshape(a.shape[0] * a.shape[1], a.shape[2]).mean(axis=1)
        else:
            out[f"{k}--cell"] = v[1][1].numpy().squeeze().reshape(-1)
    return out


# --------------------------------------------------------------------------- CLI path
def test_cli_fetch_and_extract_165_sounds(ws, monkeypatch):
    path = _fetch(ws, monkeypatch, cli=True)
    assert zipfile.is_zipfile(path)  # torch >= 1.6 container, read with mmap
    acts = ws.extract(MODEL)
    assert acts.layer_names == list(M.LAYERS)
    c, h = F.REDUCED["conv_channels"], F.REDUCED["hidden_size"]
    dims = {"HardTanh_1": c * 81, "HardTanh_2": c * 41, **{f"LSTM_{i}": 2 * h for i in range(1, 6)}}
    for key, arr in acts.layers.items():
        assert arr.shape == (165, dims[key]) and np.isfinite(arr).all(), key
        assert arr.std(axis=0).max() > 0, key
    recorded = json.loads(ws.registry.read_text())
    sha = next(e["sha256"] for e in recorded["weights"] if e["path"].endswith(F.FILE))
    assert sha is not None and acts.meta["weights"]["files"][F.FILE]["sha256"] == sha
    runner = acts.meta["runner"]
    assert runner["config"] == F.REDUCED and runner["rnn_reduction"] == "final_state"
    assert runner["model_cfg_type"] == "deepspeech_pytorch.configs.train_config.BiDirectionalConfig"
    assert runner["pytorch_lightning_version"] == "1.1.6" and runner["dropped_metric_keys"] == []
    assert acts.meta["paper_keys"] == M.PAPER_KEYS


# --------------------------------------------------------------------------- safety, strictness
def test_plain_weights_only_refuses_the_checkpoint_and_stand_ins_read_it(tmp_path):
    path = F.write_checkpoint(tmp_path / F.FILE, dict(F.REDUCED))
    with pytest.raises(InputError, match="refusing to unpickle.*deepspeech_pytorch"):
        safe_load(path)
    ckpt = safe_load(path, stand_ins=M.STAND_INS)
    assert set(ckpt) >= {"state_dict", "hyper_parameters", "callbacks", "optimizer_states"}
    hp = ckpt["hyper_parameters"]
    assert M.plain(hp["model_cfg"]) == {"rnn_type": "lstm", "hidden_size": 8, "hidden_layers": 5}
    assert M.plain(hp["spect_cfg"]) == {"sample_rate": 16000, "window_size": 0.02,
                                         "window_stride": 0.01, "window": "hamming"}
    assert len(M.plain(hp["labels"])) == 29
    assert [M.plain(k) for k in ckpt["callbacks"]] == [
        "deepspeech_pytorch.checkpoint.FileCheckpointHandler"]


def test_a_global_outside_the_stand_in_list_is_refused(ws, monkeypatch):
    _fetch(ws, monkeypatch, extra={"module_class": torch.nn.Linear})
    with pytest.raises(InputError, match="refusing to unpickle.*torch.nn.modules.linear.Linear"):
        _build(ws)


def test_os_system_payload_is_refused(ws, monkeypatch):
    _fetch(ws, monkeypatch, extra=add_payload({}))
    calls = []
    monkeypatch.setattr("os.system", lambda *a: calls.append(a))
    with pytest.raises(InputError, match="refusing to unpickle.*system"):
        _build(ws)
    assert calls == []


def test_renamed_key_fails_naming_key_file_and_model(ws, monkeypatch):
    def rename(state):
        state["rnns.3.batch_norm.module.running_varr"] = state.pop(
            "rnns.3.batch_norm.module.running_var")

    _fetch(ws, monkeypatch, state_edit=rename)
    with pytest.raises(InputError) as err:
        _build(ws)
    msg = str(err.value)
    assert "'rnns.3.batch_norm.module.running_var'" in msg and "running_varr" in msg
    assert F.FILE in msg and MODEL in msg


def test_metric_state_keys_of_lightning_1_0_are_dropped(ws, monkeypatch):
    def add_metrics(state):
        for key in M.METRIC_KEYS:
            state[key] = torch.tensor(3)

    _fetch(ws, monkeypatch, state_edit=add_metrics)
    assert _build(ws).info()["dropped_metric_keys"] == list(M.METRIC_KEYS)


def test_truncated_file_fails_its_checksum_before_reading(ws, monkeypatch):
    path = _fetch(ws, monkeypatch)
    truncate(path)

    def never(*_a, **_k):
        raise AssertionError("deserialised before the checksum check")

    monkeypatch.setattr(M, "safe_load", never)
    with pytest.raises(InputError, match="checksum mismatch"):
        _build(ws)


def test_wrong_hidden_size_fails_the_config_check(ws, monkeypatch):
    _fetch(ws, monkeypatch)
    override_spec(monkeypatch, M.SPECS[0])  # the real spec: hidden 1024 expected
    with pytest.raises(InputError, match="hidden_size=8 .expected 1024."):
        _build(ws)


@pytest.mark.parametrize(("options", "where"), [
    ({"rnn_reduction": "hidden"}, "rnn_reduction"),
    ({"librosa_frontend": "new"}, "librosa_frontend"),
    ({"input_rate": "native_as_44k"}, ""),
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
    assert M.layer_keys(net) == M.PAPER_KEYS
    assert str(net.conv.seq_module[2]) == "Hardtanh(min_val=0, max_val=20)"


def test_real_size_frames_for_two_seconds_on_meta():
    """161 x 201 -> 81 x 101 -> 41 x 101 (the LSTM widths: the CPU test below)."""
    runner = _real_runner("meta")
    shapes = {}
    hooks = [runner.net.conv.seq_module[i].register_forward_hook(
        lambda _m, _i, out, i=i: shapes.__setitem__(i, tuple(out.shape))) for i in (2, 5)]
    clip = torch.zeros(1, 32_000, device="meta")
    assert runner.spectrogram(clip).shape == (1, 1, 161, 201)
    out = runner.forward(clip, ["HardTanh_1", "HardTanh_2"])
    for h in hooks:
        h.remove()
    assert shapes == {2: (1, 32, 81, 101), 5: (1, 32, 41, 101)}
    assert {k: tuple(v.shape) for k, v in out.items()} == {"HardTanh_1": (1, 2592),
                                                           "HardTanh_2": (1, 1312)}


def test_real_size_layers_match_the_fork_hooks():
    runner = _real_runner()
    clip = _clip(0.4)
    spect = runner.spectrogram(clip)
    with torch.inference_mode():
        ours = runner.forward(clip, list(M.LAYERS))
    ref = _fork_activations(runner.net, spect)
    assert set(ref) == set(M.PAPER_KEYS.values())
    for layer, key in M.PAPER_KEYS.items():
        assert ours[layer].shape == (1, PAPER_DIMS[layer])
        assert float(np.abs(ours[layer][0].numpy() - ref[key]).max()) <= TOL, layer


def test_time_mean_option_and_a_layer_subset():
    runner = _real_runner(rnn_reduction="time_mean")
    clip = _clip(0.2)
    with torch.inference_mode():
        out = runner.forward(clip, ["LSTM_1"])
        x = runner.net.conv.seq_module(runner.spectrogram(clip))
        seq, _ = runner.net.rnns[0].rnn(x.flatten(1, 2).permute(2, 0, 1))
    assert list(out) == ["LSTM_1"]
    torch.testing.assert_close(out["LSTM_1"], seq.mean(dim=0), rtol=0, atol=1e-6)


def test_two_runs_are_identical(ws, monkeypatch):
    _fetch(ws, monkeypatch)
    clips = torch.cat([_clip(2.0, 1), _clip(2.0, 2)])
    with torch.inference_mode():
        a = _build(ws).forward(clips, list(M.LAYERS))
        b = _build(ws).forward(clips, list(M.LAYERS))
    for key in M.LAYERS:
        assert torch.equal(a[key], b[key]), key


# --------------------------------------------------------------------------- the front end
def test_spectrogram_equals_the_fork_parser():
    import librosa
    import scipy.signal

    clip = _clip(2.0)
    y = clip[0].numpy()

    def parse(magnitude):
        spect = torch.FloatTensor(np.log1p(magnitude))
        return (spect - spect.mean()) / spect.std()

    # original (librosa < 0.10): reflect-padded centred stft, periodic hamming
    w = scipy.signal.get_window("hamming", 320, fftbins=True)
    frames = librosa.util.frame(np.pad(y, 160, mode="reflect"), frame_length=320, hop_length=160)
    ref = parse(np.abs(np.fft.rfft(w[:, None] * frames, axis=0)).astype(np.float32))
    ours = _real_runner().spectrogram(clip)[0, 0]
    assert ours.shape == ref.shape == (161, 201)
    assert float((ours - ref).abs().max()) < 1e-4
    # librosa_0.11: librosa.stft's zero padding
    ref11 = parse(np.abs(librosa.stft(y, n_fft=320, hop_length=160, win_length=320,
                                      window="hamming")))
    ours11 = _real_runner(librosa_frontend="librosa_0.11").spectrogram(clip)[0, 0]
    assert float((ours11 - ref11).abs().max()) < 1e-4
    assert float((ours11 - ours).abs().max()) > 1e-2
