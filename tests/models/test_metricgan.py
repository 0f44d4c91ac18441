"""MetricGAN+ (braindnn_metricgan): synthetic speechbrain/metricgan-plus-voicebank files through
fetch and extract, strict and safe loading, the paper's shapes and counts, and equality with
speechbrain 0.5.16's STFT / spectral_magnitude and EnhancementGenerator on the same random
weights, layer by layer (float32; tolerance 1e-5, measured max |diff| <= ~4e-6 on the LSTM
cell states).

Not testable offline: the published enhanced waveforms of paper-models.md section 3.15 (they
need the real weights).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from brainalign.data.fetch import fetch as fetch_inputs
from brainalign.errors import InputError
from brainalign.models import metricgan as M
from brainalign.models.extract import ExtractConfig, build_runner
from brainalign.models.weights import check_config, sha256_file

sys.path.insert(0, str(Path(__file__).parent))

import weights_helpers as H  # noqa: E402
from fixtures import metricgan as FX  # noqa: E402

MODEL = "braindnn_metricgan"
TOL = 1e-5
DIMS = {"LSTM_1": 400, "LSTM_2": 400, "LeakyReLU_1": 300, "Linear_2": 257}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _workspace(tmp_path: Path, monkeypatch: Any, mirror_root: Path, *,
               edit: Callable[[dict[str, Path]], None] | None = None,
               fetch: bool = True) -> H.Workspace:
    tmp_path.mkdir(parents=True, exist_ok=True)
    monkeypatch.delenv("BRAINALIGN_REGISTRY", raising=False)  # copy the committed registry
    ws = H.workspace(tmp_path, monkeypatch, mirror_root)
    ws.params([MODEL], extract={"device": "cpu", "threads": 1})
    paths = FX.write_files(MODEL, tmp_path / "files", reduced=True)
    if edit is not None:
        edit(paths)
    urls = H.source_urls(MODEL)
    assert sorted(urls) == sorted(M.FILES)
    for name, path in paths.items():
        H.put(ws.mirror, urls[name], path)
    if fetch:  # the fetch code path, weights group only (the CLI would also simulate data)
        fetch_inputs(["weights"], ws.data, ws.mirror, ws.registry, models=[MODEL])
    return ws


def _build(ws: H.Workspace, **options: Any) -> Any:
    return M.build(FX.reduced_spec(), H.context(ws.data, MODEL, ws.registry, **options))


def _clip(seconds: float = 2.0, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(1, int(seconds * M.SAMPLE_RATE), generator=gen)


# --------------------------------------------------------------------------- CLI path
def test_cli_fetch_and_extract_the_165_sounds(tmp_path, monkeypatch, mirror_root) -> None:
    ws = _workspace(tmp_path, monkeypatch, mirror_root, fetch=False)
    ws.fetch_weights(MODEL)
    acts = ws.extract(MODEL)
    assert acts.layer_names == list(M.LAYERS)
    for name, arr in acts.layers.items():
        assert arr.shape == (165, DIMS[name]), name
        assert np.isfinite(arr).all() and arr.std() > 0, name
    files = acts.meta["weights"]["files"]
    for name in M.FILES:
        assert files[name]["sha256"] == sha256_file(ws.data / "weights" / MODEL / name)
        assert files[name]["hf_repo"] == M.HF_REPO
    assert acts.meta["sample_rate"] == 16000 and acts.meta["paper_keys"] == M.PAPER_KEYS
    runner = acts.meta["runner"]
    assert runner["options"] == {"rnn_reduction": "final_state", "linear1": "post_activation"}
    assert runner["config"] == M.CONFIG and runner["frames_per_2s"] == 126


# --------------------------------------------------------------------------- safe, strict loading
def test_renamed_key_fails_naming_key_file_and_model(tmp_path, monkeypatch, mirror_root) -> None:
    def rename(paths: dict[str, Path]) -> None:
        state = torch.load(paths["enhance_model.ckpt"], weights_only=True)
        state["linear_1.weight"] = state.pop("linear1.weight")
        torch.save(state, paths["enhance_model.ckpt"])

    ws = _workspace(tmp_path, monkeypatch, mirror_root, edit=rename)
    with pytest.raises(InputError) as err:
        _build(ws)
    msg = str(err.value)
    assert "missing key 'linear1.weight'" in msg and "unexpected key 'linear_1.weight'" in msg
    assert "enhance_model.ckpt" in msg and MODEL in msg


def test_truncated_file_fails_its_checksum(tmp_path, monkeypatch, mirror_root) -> None:
    ws = _workspace(tmp_path, monkeypatch, mirror_root)
    H.truncate(ws.data / "weights" / MODEL / "enhance_model.ckpt")
    with pytest.raises(InputError, match="checksum mismatch"):
        _build(ws)


def test_os_system_payload_is_refused(tmp_path, monkeypatch, mirror_root) -> None:
    def poison(paths: dict[str, Path]) -> None:
        torch.save(H.add_payload(FX.state()), paths["enhance_model.ckpt"])

    ws = _workspace(tmp_path, monkeypatch, mirror_root, edit=poison)
    with pytest.raises(InputError, match="refusing to unpickle"):
        _build(ws)


# --------------------------------------------------------------------------- hyperparams.yaml
def test_hyperparams_are_read_as_data_and_checked(tmp_path) -> None:
    from brainalign.models.hyperparams import HNode, read_hyperparams

    path = tmp_path / "hyperparams.yaml"
    path.write_text(FX.HYPERPARAMS)
    hp = read_hyperparams(path)
    assert hp["window_fn"] == HNode("name", "torch.hamming_window", "")
    assert hp["enhance_model"].args["input_size"] == HNode("ref", "<n_fft> // 2 + 1")
    found = M.config_from_hyperparams(hp, str(path))
    assert found == M.CONFIG  # input_size: the !ref arithmetic gives 257
    check_config(found, M.CONFIG, path=path, model=MODEL)
    path.write_text(FX.HYPERPARAMS.replace("hidden_size: 200", "hidden_size: 100"))
    with pytest.raises(InputError, match=r"config is not that of .*generator\.hidden_size=100"):
        check_config(M.config_from_hyperparams(read_hyperparams(path), str(path)), M.CONFIG,
                     path=path, model=MODEL)
    path.write_text(FX.HYPERPARAMS.replace("power: 0.5", "power: 0.5\n    db: true"))
    with pytest.raises(InputError, match="unknown arguments"):
        M.config_from_hyperparams(read_hyperparams(path), str(path))
    path.write_text(FX.HYPERPARAMS + "evil: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(InputError, match="not a readable hyperparams file"):
        read_hyperparams(path)


# --------------------------------------------------------------------------- the paper's numbers
def test_parameter_count_layers_keys_and_frames() -> None:
    assert M.parameter_count_real() == 1_895_514
    with torch.device("meta"):
        gen = M.nets().Generator(M.CONFIG)
    # Tuckute's keys: str(module) + '--<k>' (+ the RNN suffixes of her detach code)
    assert f"{gen.blstm.rnn}--l1--cell" == M.PAPER_KEYS["LSTM_1"]
    assert f"{gen.blstm.rnn}--l2--cell" == M.PAPER_KEYS["LSTM_2"]
    assert f"{gen.linear1}--0" == M.PAPER_KEYS["LeakyReLU_1"]
    assert f"{gen.linear2}--0" == M.PAPER_KEYS["Linear_2"]
    assert M.ms_to_samples(16000, 32) == 512 and M.ms_to_samples(16000, 16) == 256
    assert M.n_frames(32000) == 126
    feats = M.nets().Features(M.CONFIG)(_clip())
    assert feats.shape == (1, 126, 257)


def test_layer_dims_determinism_and_options(tmp_path, monkeypatch, mirror_root) -> None:
    ws = _workspace(tmp_path, monkeypatch, mirror_root)
    default = _build(ws)
    x = torch.cat([_clip(seed=1), _clip(seed=2)])
    layers = list(M.LAYERS)
    with torch.inference_mode():
        first, second = default.forward(x, layers), default.forward(x, layers)
        one = default.forward(x[1:], ["Linear_2"])
        pre = _build(ws, linear1="pre_activation").forward(x, ["LeakyReLU_1"])
        mean = _build(ws, rnn_reduction="time_mean").forward(x, layers)
        taps = default.generator.taps(default.features(x[:1]))
    for k in layers:
        assert first[k].shape == (2, DIMS[k]) and torch.equal(first[k], second[k]), k
    assert torch.equal(one["Linear_2"][0], first["Linear_2"][1])  # one clip at a time
    torch.testing.assert_close(pre["LeakyReLU_1"][:1], taps["linear1"].mean(1))
    torch.testing.assert_close(first["LeakyReLU_1"][:1],
                               F.leaky_relu(taps["linear1"], 0.3).mean(1))
    torch.testing.assert_close(mean["LSTM_2"][:1], taps["lstm_out"].mean(1))
    assert torch.equal(mean["LeakyReLU_1"], first["LeakyReLU_1"])
    assert not torch.allclose(mean["LSTM_1"], first["LSTM_1"])
    for opts, key in (({"rnn_reduction": "mean"}, "rnn_reduction"),
                      ({"linear1": "leaky"}, "linear1"), ({"layer": 1}, "layer")):
        with pytest.raises(InputError, match=rf"extract\.options\.{MODEL}\.{key}"):
            build_runner(MODEL, ExtractConfig(models=(MODEL,), options={MODEL: opts}))


# --------------------------------------------------------------------------- vs speechbrain 0.5.16
def test_equals_speechbrain_layer_by_layer(tmp_path, monkeypatch, mirror_root) -> None:
    from speechbrain.lobes.models.MetricGAN import EnhancementGenerator
    from speechbrain.nnet.RNN import LSTM
    from speechbrain.processing.features import STFT, spectral_magnitude

    ws = _workspace(tmp_path, monkeypatch, mirror_root)
    state = torch.load(ws.data / "weights" / MODEL / "enhance_model.ckpt", weights_only=True)
    sb = EnhancementGenerator(input_size=257, hidden_size=200, num_layers=2, dropout=0).eval()
    assert list(sb.state_dict()) == list(state)  # the fixture's keys are speechbrain's
    sb.load_state_dict(state, strict=True)
    sb_l0 = LSTM(hidden_size=200, input_size=257, num_layers=1, bidirectional=True).eval()
    sb_l0.rnn.load_state_dict({k.removeprefix("blstm.rnn."): v for k, v in state.items()
                               if k.startswith("blstm.rnn.") and "_l0" in k}, strict=True)
    stft = STFT(sample_rate=16000, win_length=32, hop_length=16, n_fft=512,
                window_fn=torch.hamming_window)
    runs = [_build(ws, **opt) for opt in ({}, {"rnn_reduction": "time_mean"},
                                          {"linear1": "pre_activation"})]
    store: dict[str, Any] = {}
    for name in ("blstm", "linear1", "linear2"):
        sb.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: store.__setitem__(name, out))
    x = _clip(seed=5)
    with torch.inference_mode():
        feats = torch.log1p(spectral_magnitude(stft(x), power=0.5))
        mask = sb(feats, lengths=torch.tensor([1.0]))
        l0_out = sb_l0(feats, lengths=torch.tensor([1.0]))[0]
        ours = [r.forward(x, list(M.LAYERS)) for r in runs]
        our_feats = runs[0].features(x)
        our_mask = runs[0].generator(our_feats)
    out, (_h, c) = store["blstm"]
    diffs = {
        "features": (our_feats, feats),
        "mask": (our_mask, mask),
        "LSTM_1": (ours[0]["LSTM_1"], c[:2].reshape(1, -1)),
        "LSTM_2": (ours[0]["LSTM_2"], c[2:].reshape(1, -1)),
        "LeakyReLU_1": (ours[0]["LeakyReLU_1"], F.leaky_relu(store["linear1"], 0.3).mean(1)),
        "Linear_2": (ours[0]["Linear_2"], store["linear2"].mean(1)),
        "LSTM_1 time_mean": (ours[1]["LSTM_1"], l0_out.mean(1)),
        "LSTM_2 time_mean": (ours[1]["LSTM_2"], out.mean(1)),
        "LeakyReLU_1 pre": (ours[2]["LeakyReLU_1"], store["linear1"].mean(1)),
    }
    assert feats.shape == (1, 126, 257) and out.shape == (1, 126, 400)
    for name, (a, b) in diffs.items():
        assert a.shape == b.shape, name
        assert float((a - b).abs().max()) < TOL * max(1.0, float(b.abs().max())), name
