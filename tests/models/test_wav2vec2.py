"""wav2vec2 (braindnn_wav2vec2): synthetic Hub files -> fetch -> extract, strict loading, safety,
the real configuration's counts and shapes, and equality with transformers' own model and
tokenizer on the same random weights."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures import wav2vec2 as F  # noqa: E402
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
from brainalign.models import wav2vec2 as W  # noqa: E402
from brainalign.models.weights import parameter_count, sha256_file  # noqa: E402

M = F.MODEL
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return F.write_files(M, tmp_path_factory.mktemp("w2v"), reduced=True)


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


def _runner(spec, files: dict[str, Path], **options) -> W.Wav2Vec2Runner:
    """A runner from the files in a folder (no registry), as ``build`` assembles it."""
    opts = W.parse_options(spec, options)
    cfg = W.parse_config(W.read_json(files[W.CONFIG_FILE], "c"), spec.config, path="c", model=M,
                         attention=opts["attention"])
    model = W.load_model(cfg, W.read_state_dict(files[W.WEIGHTS_FILE]), path="w", model=M)
    return W.Wav2Vec2Runner(spec, torch.device("cpu"), model, opts, True, {})


def _clips(n: int = 2, samples: int = 32000) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    t = torch.arange(samples) / W.SAMPLE_RATE
    noise = 0.05 * torch.randn(n, samples, generator=gen)
    return (noise + 0.3 * torch.sin(2 * torch.pi * 440.0 * t)).clamp(-1, 1).float()


def test_cli_fetch_and_extract_the_165_sounds(tmp_path, monkeypatch, mirror_root, spec, files):
    ws = _fetched(tmp_path, monkeypatch, mirror_root, spec, files)
    acts = ws.extract(M)
    assert acts.layer_names == list(spec.layers) == ["Embedding", "Encoder_1", "Encoder_2"]
    for arr in acts.layers.values():
        assert arr.shape == (165, F.REDUCED["hidden_size"]) and np.isfinite(arr).all()
    recorded = acts.meta["weights"]["files"]
    assert set(recorded) == {W.WEIGHTS_FILE, W.CONFIG_FILE, W.TOKENIZER_FILE}
    for name, info in recorded.items():
        assert info["sha256"] == sha256_file(files[name]) == sha256_file(
            ws.data / "weights" / M / name)
        assert info["revision"] == W.HF_REVISION
    runner = acts.meta["runner"]
    assert runner["options"] == {"normalize_eps": 1e-5, "attention": "sdpa"}
    assert runner["tokenizer"] == {"do_normalize": True, "return_attention_mask": False}
    assert runner["masked_spec_embed_stored"] is True and runner["config"]["hidden_size"] == 32
    again = ws.extract(M)  # two runs, identical activations
    for k in acts.layers:
        assert np.array_equal(acts.layers[k], again.layers[k])


def test_renamed_key_fails_naming_key_file_and_model(tmp_path, monkeypatch, mirror_root, spec,
                                                     files):
    from safetensors.torch import save_file

    state = F.random_state(F.config_json(True))
    state["wav2vec2.encoder.layer_norm.gamma"] = state.pop("wav2vec2.encoder.layer_norm.weight")
    bad = tmp_path / "bad" / W.WEIGHTS_FILE
    bad.parent.mkdir()
    save_file(dict(state), bad, metadata={"format": "pt"})
    ws = _fetched(tmp_path, monkeypatch, mirror_root, spec, {**files, W.WEIGHTS_FILE: bad})
    with pytest.raises(InputError) as err:
        W.build(spec, context(ws.data, M, ws.registry))
    msg = str(err.value)
    assert "missing key 'wav2vec2.encoder.layer_norm.weight'" in msg
    assert "unexpected key 'wav2vec2.encoder.layer_norm.gamma'" in msg
    assert W.WEIGHTS_FILE in msg and repr(M) in msg


def test_truncated_file_fails_its_checksum(tmp_path, monkeypatch, mirror_root, spec, files):
    ws = _fetched(tmp_path, monkeypatch, mirror_root, spec, files)
    truncate(ws.data / "weights" / M / W.WEIGHTS_FILE)
    with pytest.raises(InputError, match="checksum mismatch"):
        W.build(spec, context(ws.data, M, ws.registry))


class _Marker:
    """A pickle payload that would leave a file behind if it ever ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_pickle_payloads_are_refused(tmp_path, monkeypatch, mirror_root, spec, files):
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil" / W.WEIGHTS_FILE
    evil.parent.mkdir()
    torch.save({**F.random_state(F.config_json(True)), "x": _Marker(marker)}, evil)
    ws = _fetched(tmp_path, monkeypatch, mirror_root, spec, {**files, W.WEIGHTS_FILE: evil})
    # the registry pins model.safetensors: a pickle there is never unpickled
    with pytest.raises(InputError, match="not a readable safetensors file"):
        W.build(spec, context(ws.data, M, ws.registry))
    # the same tensors as pytorch_model.bin: refused by weights_only before anything runs
    bin_path = tmp_path / "evil.bin"
    torch.save(add_payload(F.random_state(F.config_json(True))), bin_path)
    with pytest.raises(InputError, match="refusing to unpickle"):
        W.read_state_dict(bin_path)
    assert not marker.exists()


def test_real_configuration_counts_layers_and_frames() -> None:
    from transformers import Wav2Vec2ForCTC

    cfg = W.parse_config(F.config_json(), W.CONFIG, path="c", model=M)
    assert parameter_count(lambda: Wav2Vec2ForCTC(cfg)) == 94_395_552 + 768
    shapes = F.checkpoint_shapes(F.config_json(), masked_spec_embed=False)
    assert sum(int(np.prod(s)) for s in shapes.values()) == 94_395_552
    with torch.device("meta"):
        net = Wav2Vec2ForCTC(cfg).eval()
        states = net.wav2vec2(torch.empty(1, 32000), output_hidden_states=True).hidden_states
    assert len(states) == len(W.LAYERS) == 13
    assert {tuple(s.shape) for s in states} == {(1, 99, 768)}
    # the real files' keys (written from paper-models.md) are the model's, after the remap
    built = net.state_dict()
    remapped = W.remap_keys(F.checkpoint_shapes(F.config_json()), net)
    assert set(remapped) == set(built)
    assert all(tuple(built[k].shape) == v for k, v in remapped.items())
    assert W.n_frames(32000) == 99 and W.n_frames(W.MIN_SAMPLES) == 1
    assert W.MIN_SAMPLES == 400 and W.n_frames(399) == 0


def test_equality_with_transformers(tmp_path, monkeypatch, spec, files) -> None:
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, Wav2Vec2Tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    runner = _runner(spec, files)
    ref = Wav2Vec2ForCTC.from_pretrained(files[W.CONFIG_FILE].parent).eval()
    vocab = tmp_path / "vocab.json"
    vocab.write_text(json.dumps({"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4}))
    tok = Wav2Vec2Tokenizer(str(vocab), **F.TOKENIZER_JSON)
    x = _clips()
    with torch.inference_mode():
        inputs = tok([c.numpy() for c in x], return_tensors="pt").input_values
        assert torch.equal(runner.prepare(x), inputs)  # bit-identical tokenizer normalisation
        fe = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False)
        fe_in = fe([c.numpy() for c in x], sampling_rate=16000, return_tensors="pt").input_values
        assert torch.equal(W.normalize(x, 1e-7), fe_in)
        assert not torch.equal(fe_in, inputs)
        ours = runner.forward(x, spec.layers)
        states = ref(inputs, output_hidden_states=True).hidden_states
        assert len(states) == len(spec.layers)
        for i, key in enumerate(spec.layers):
            assert ours[key].shape == (2, F.REDUCED["hidden_size"])
            diff = (ours[key] - states[i].mean(dim=1)).abs().max().item()
            assert diff <= 1e-5, (key, diff)  # measured 0.0 (same modules, same inputs)
        assert [s.shape[1] for s in runner.hidden_states(x)] == [99] * 3
        assert runner.forward(x[:, : W.MIN_SAMPLES], ["Encoder_2"])["Encoder_2"].isfinite().all()
        eager = _runner(spec, files, attention="eager").forward(x, spec.layers)
        for key in spec.layers:
            assert torch.allclose(eager[key], ours[key], atol=1e-5)


def test_bin_and_safetensors_load_to_identical_activations(spec, files) -> None:
    folder = files[W.CONFIG_FILE].parent
    st = W.read_state_dict(files[W.WEIGHTS_FILE])
    pt = W.read_state_dict(folder / F.EXTRA_FILE)
    assert set(st) == set(pt)
    assert all(torch.equal(st[k], pt[k]) for k in st)
    cfg = W.parse_config(W.read_json(files[W.CONFIG_FILE], "c"), spec.config, path="c", model=M)
    opts = W.parse_options(spec, {})
    runners = [W.Wav2Vec2Runner(spec, torch.device("cpu"),
                                W.load_model(cfg, s, path="w", model=M), opts, True, {})
               for s in (st, pt)]
    # a file without masked_spec_embed (training-only) loads too, to the same activations
    no_mask = {k: v for k, v in pt.items() if k != W.MASK_KEY}
    model = W.load_model(cfg, no_mask, path="w", model=M)
    assert not hasattr(model.wav2vec2, "masked_spec_embed")
    runners.append(W.Wav2Vec2Runner(spec, torch.device("cpu"), model, opts, True, {}))
    x = _clips(1)
    with torch.inference_mode():
        outs = [r.forward(x, spec.layers) for r in runners]
    for key in spec.layers:
        assert torch.equal(outs[0][key], outs[1][key]) and torch.equal(outs[0][key], outs[2][key])


def test_config_mismatch_and_bad_options(tmp_path, spec) -> None:
    raw = {**F.config_json(), "hidden_size": 1024}
    with pytest.raises(InputError, match="hidden_size=1024 \\(expected 768\\)"):
        W.parse_config(raw, W.CONFIG, path="c", model=M)
    with pytest.raises(InputError, match="model_type='hubert'"):
        W.parse_config({**F.config_json(), "model_type": "hubert"}, W.CONFIG, path="c", model=M)
    where = f"extract.options.{M}"
    for options, key in (({"normalize_eps": 0}, "normalize_eps"),
                         ({"normalize_eps": -1e-5}, "normalize_eps"),
                         ({"normalize_eps": "1e-5"}, "normalize_eps"),
                         ({"normalize_eps": True}, "normalize_eps"),
                         ({"attention": "flash"}, "attention")):
        with pytest.raises(InputError) as err:
            W.build(spec, context(tmp_path, M, None, **options))  # before any file is read
        assert err.value.where == f"{where}.{key}"
    with pytest.raises(InputError, match="unknown option"):
        W.build(spec, context(tmp_path, M, None, eps=1e-5))
