"""Speech2Text (braindnn_s2t): synthetic Hub files -> fetch -> extract, strict loading, safety,
the real configuration's counts and shapes, and equality with transformers' own feature
extractor, encoder and ``generate(...).encoder_hidden_states`` on the same random weights."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures import s2t as F  # noqa: E402
from weights_helpers import (  # noqa: E402
    add_payload,
    context,
    override_spec,
    put,
    source_urls,
    truncate,
    workspace,
)

from brainalign.errors import InputError  # noqa: E402
from brainalign.models import s2t as S  # noqa: E402
from brainalign.models.frontends import kaldi  # noqa: E402
from brainalign.models.weights import parameter_count, sha256_file  # noqa: E402

M = F.MODEL
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return F.write_files(M, tmp_path_factory.mktemp("s2t"), reduced=True)


@pytest.fixture(scope="module")
def spec():
    return F.reduced_spec(M)


def _fetched(tmp_path, monkeypatch, mirror_root, spec, files: dict[str, Path]):
    ws = workspace(tmp_path, monkeypatch, mirror_root)
    for name, url in source_urls(M).items():
        put(ws.mirror, url, files[name])
    override_spec(monkeypatch, spec)
    ws.params([M])
    ws.fetch_weights(M)
    return ws


def _runner(spec, files: dict[str, Path]) -> S.S2TRunner:
    """A runner from the files in a folder (no registry), as ``build`` assembles it."""
    cfg = S.parse_config(S.read_json(files[S.CONFIG_FILE], "c"), spec.config, path="c", model=M)
    encoder = S.load_encoder(cfg, S.read_state_dict(files[S.WEIGHTS_FILE]), path="w", model=M)
    return S.S2TRunner(spec, torch.device("cpu"), encoder, {})


def _clips(n: int = 2, samples: int = 32000) -> torch.Tensor:
    gen = torch.Generator().manual_seed(5)
    t = torch.arange(samples) / S.SAMPLE_RATE
    noise = 0.05 * torch.randn(n, samples, generator=gen)
    return (noise + 0.3 * torch.sin(2 * torch.pi * 330.0 * t)).clamp(-1, 1).float()


def test_cli_fetch_and_extract_the_165_sounds(tmp_path, monkeypatch, mirror_root, spec, files):
    ws = _fetched(tmp_path, monkeypatch, mirror_root, spec, files)
    acts = ws.extract(M)
    assert acts.layer_names == list(spec.layers) == ["Embedding", "Encoder_1", "Encoder_2"]
    for arr in acts.layers.values():
        assert arr.shape == (165, F.REDUCED["d_model"]) and np.isfinite(arr).all()
    recorded = acts.meta["weights"]["files"]
    assert set(recorded) == {S.WEIGHTS_FILE, S.CONFIG_FILE, S.PREPROCESSOR_FILE}
    for name, info in recorded.items():
        assert info["sha256"] == sha256_file(files[name]) == sha256_file(
            ws.data / "weights" / M / name)
        assert info["hf_repo"] == S.HF_REPO
    runner = acts.meta["runner"]
    assert runner["preprocessor"]["num_mel_bins"] == 80 and runner["attention"] == "eager"
    assert runner["config"]["d_model"] == 16 and runner["fbank"]["dither"] == 0.0
    again = ws.extract(M)  # two runs, identical activations
    for k in acts.layers:
        assert np.array_equal(acts.layers[k], again.layers[k])


def test_renamed_key_fails_naming_key_file_and_model(tmp_path, monkeypatch, mirror_root, spec,
                                                     files):
    state = F.random_state(F.config_json(True))
    key = "model.encoder.layers.1.fc1.weight"
    state[key.replace("fc1", "fc_1")] = state.pop(key)
    bad = tmp_path / "bad" / S.WEIGHTS_FILE
    bad.parent.mkdir()
    torch.save(state, bad)
    ws = _fetched(tmp_path, monkeypatch, mirror_root, spec, {**files, S.WEIGHTS_FILE: bad})
    with pytest.raises(InputError) as err:
        S.build(spec, context(ws.data, M, ws.registry))
    msg = str(err.value)
    assert f"missing key '{key}'" in msg and "unexpected key 'model.encoder.layers.1.fc_1" in msg
    assert S.WEIGHTS_FILE in msg and repr(M) in msg


def test_truncated_file_fails_its_checksum(tmp_path, monkeypatch, mirror_root, spec, files):
    ws = _fetched(tmp_path, monkeypatch, mirror_root, spec, files)
    truncate(ws.data / "weights" / M / S.WEIGHTS_FILE)
    with pytest.raises(InputError, match="checksum mismatch"):
        S.build(spec, context(ws.data, M, ws.registry))


class _Marker:
    """A pickle payload that would leave a file behind if it ever ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_pickle_payload_is_refused(tmp_path, monkeypatch, mirror_root, spec, files):
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil" / S.WEIGHTS_FILE
    evil.parent.mkdir()
    state = add_payload(F.random_state(F.config_json(True)))
    torch.save({**state, "x": _Marker(marker)}, evil)
    ws = _fetched(tmp_path, monkeypatch, mirror_root, spec, {**files, S.WEIGHTS_FILE: evil})
    with pytest.raises(InputError, match="refusing to unpickle"):
        S.build(spec, context(ws.data, M, ws.registry))
    assert not marker.exists()


def test_real_configuration_counts_layers_and_frames() -> None:
    from transformers import Speech2TextForConditionalGeneration
    from transformers.models.speech_to_text.modeling_speech_to_text import Speech2TextEncoder

    cfg = S.parse_config(F.config_json(), S.CONFIG, path="c", model=M)
    assert parameter_count(lambda: Speech2TextEncoder(cfg)) == 156_812_288
    with torch.device("meta"):
        net = Speech2TextForConditionalGeneration(cfg).eval()
        states = net.model.encoder(torch.empty(1, 198, 80), output_hidden_states=True
                                   ).hidden_states
    assert len(states) == len(S.LAYERS) == 13
    assert {tuple(s.shape) for s in states} == {(1, 50, 1024)}
    # the real file's keys (written from paper-models.md) are the model's persistent ones
    built = net.state_dict()
    shapes = F.checkpoint_shapes(F.config_json())
    assert set(shapes) == {k for k in built if "embed_positions" not in k}
    assert all(tuple(built[k].shape) == v for k, v in shapes.items())
    assert kaldi.S2T.n_frames(32000) == 198 and S.n_frames(32000) == 50
    assert S.MIN_SAMPLES == 560 and kaldi.S2T.n_frames(S.MIN_SAMPLES) == 2
    assert S.n_frames(S.MIN_SAMPLES) == 1


def test_equality_with_transformers(monkeypatch, spec, files) -> None:
    from transformers import Speech2TextFeatureExtractor, Speech2TextForConditionalGeneration

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = files[S.CONFIG_FILE].parent
    runner = _runner(spec, files)
    ref = Speech2TextForConditionalGeneration.from_pretrained(folder).eval()
    fe = Speech2TextFeatureExtractor.from_pretrained(folder)
    x = _clips()
    with torch.inference_mode():
        inputs = fe([c.numpy() for c in x], sampling_rate=16000, return_tensors="pt")
        feats = runner.prepare(x)
        assert feats.shape == (2, 198, 80)
        assert torch.equal(feats, inputs.input_features)  # bit-identical front end
        raw = torch.stack([kaldi.fbank(c, kaldi.S2T) for c in x])  # the preset: no CMVN
        assert torch.equal(raw, torch.from_numpy(np.stack(
            [fe._extract_fbank_features(c.numpy()) for c in x])))
        centred = raw - raw.mean(dim=1, keepdim=True)  # a torch float32 CMVN is not enough:
        torch_cmvn = centred / centred.std(dim=1, keepdim=True, unbiased=False)
        assert 1e-5 < (torch_cmvn - feats).abs().max().item() < 1e-3  # measured 3.9e-4
        ours = runner.forward(x, spec.layers)
        states = ref.model.encoder(inputs.input_features, attention_mask=inputs.attention_mask,
                                   output_hidden_states=True).hidden_states
        assert len(states) == len(spec.layers)
        for i, key in enumerate(spec.layers):
            assert states[i].shape == (2, 50, F.REDUCED["d_model"])
            diff = (ours[key] - states[i].mean(dim=1)).abs().max().item()
            assert diff <= 1e-5, (key, diff)  # measured 0.0
        # Tuckute's path: generate() with the config's 5 beams, batch 1
        one = runner.forward(x[:1], spec.layers)
        gen = ref.generate(inputs.input_features[:1], attention_mask=inputs.attention_mask[:1],
                           output_hidden_states=True, return_dict_in_generate=True,
                           max_new_tokens=2)
        assert ref.generation_config.num_beams == 5
        assert len(gen.encoder_hidden_states) == len(spec.layers)
        for i, key in enumerate(spec.layers):
            assert gen.encoder_hidden_states[i].shape[0] == 1  # not beam-expanded
            diff = (one[key] - gen.encoder_hidden_states[i].mean(dim=1)).abs().max().item()
            assert diff <= 1e-5, (key, diff)
        # Encoder_1..L-1: the un-normed residual stream; Encoder_L: layer_norm(last layer)
        outs = {}
        hooks = [layer.register_forward_hook(
            lambda _m, _i, o, n=n: outs.__setitem__(n, o[0]))
            for n, layer in enumerate(runner.encoder.layers, start=1)]
        states = runner.hidden_states(x)
        for h in hooks:
            h.remove()
        last = len(runner.encoder.layers)
        assert torch.equal(states[1], outs[1])
        assert torch.equal(states[last], runner.encoder.layer_norm(outs[last]))
        short = runner.forward(x[:, : S.MIN_SAMPLES], ["Encoder_2"])["Encoder_2"]
        assert short.isfinite().all()


def test_config_and_preprocessor_mismatches_and_options(tmp_path, spec) -> None:
    with pytest.raises(InputError, match="encoder_layers=6 \\(expected 12\\)"):
        S.parse_config({**F.config_json(), "encoder_layers": 6}, S.CONFIG, path="c", model=M)
    with pytest.raises(InputError, match="model_type='wav2vec2'"):
        S.parse_config({**F.config_json(), "model_type": "wav2vec2"}, S.CONFIG, path="c",
                       model=M)
    with pytest.raises(InputError, match="normalize_vars=False"):
        S.check_preprocessor({**F.PREPROCESSOR_JSON, "normalize_vars": False}, path="p", model=M)
    with pytest.raises(InputError, match="num_mel_bins=128"):
        S.check_preprocessor({**F.PREPROCESSOR_JSON, "num_mel_bins": 128}, path="p", model=M)
    with pytest.raises(InputError) as err:
        S.build(spec, context(tmp_path, M, None, attention="sdpa"))
    assert err.value.where == f"extract.options.{M}"
