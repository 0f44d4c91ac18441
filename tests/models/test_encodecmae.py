"""EnCodecMAE loaders: synthetic checkpoints in the upstream containers, through fetch and extract.

No package implements EnCodecMAE, so the loader is checked against a literal computation of the
upstream formulas written here from the state dict alone (torchaudio's Kaldi fbank called
directly, the sinusoidal PE formula, head h on channels h, h+H, ..., ResiDual), the attention
against ``torch.nn.MultiheadAttention`` with permuted weights, and the EnCodec front end
against encodec 0.1.1's own ``SEANetEncoder``. float32; tolerance 1e-5 (measured max |diff|:
reference 1.9e-6, SEANet 1.9e-7, attention 7e-8).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from brainalign.data.fetch import fetch, mirror_path
from brainalign.errors import InputError
from brainalign.models import encodecmae as E
from brainalign.models.extract import ExtractConfig, build_runner
from brainalign.models.registry import get_spec
from brainalign.models.weights import parameter_count, sha256_file

sys.path.insert(0, str(Path(__file__).parent))

import weights_helpers as H  # noqa: E402
from fixtures import encodecmae as FX  # noqa: E402

MODEL = "mel256-ec-base"
TOL = 1e-5


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _wave(n: int = 48000, batch: int = 1, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 24000
    return (0.3 * torch.sin(2 * math.pi * 330 * t) + 0.1 * torch.randn(batch, n, generator=gen))


def _registry_copy(tmp_path: Path) -> Path:
    """A registry copy without the EnCodec file's published sha256 prefix (d7cc33bc): a random
    stand-in cannot have it, and the first-use check would (rightly) refuse it."""
    registry = tmp_path / "registry.json"
    data = json.loads((H.REPO / "src/brainalign/data/registry.json").read_text())
    for entry in data["weights"]:
        if entry["path"].endswith(E.ENCODEC_FILE):
            entry.pop("sha256_prefix", None)
    registry.write_text(json.dumps(data))
    return registry


def _fetched(tmp_path: Path, model: str, files: dict[str, Path | dict]):
    """Place files (paths or checkpoint dicts) at their URLs in a mirror, fetch them (sha256
    recorded in a registry copy); return the BuildContext reading them and the data folder."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    mirror, data = tmp_path / "mirror", tmp_path / "data"
    registry = _registry_copy(tmp_path)
    urls = H.source_urls(model)
    for name, source in files.items():
        target = mirror_path(urls[name], mirror)
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, dict):
            torch.save(source, target)
        else:
            shutil.copyfile(source, target)
    fetch(["weights"], data, mirror, registry, models=[model])
    return H.context(data, model, registry), data / "weights" / model


def _runner(tmp_path: Path, model: str = MODEL, ckpt: dict | None = None, **options):
    ckpt = ckpt if ckpt is not None else FX.checkpoint(model, reduced=True)
    ctx, _ = _fetched(tmp_path, model, {f"{model}.pt": ckpt})
    return E.build(FX.reduced_spec(model), dataclasses.replace(ctx, options=options))


# --------------------------------------------------------------------------- literal reference
def _reference(state: dict, wave: torch.Tensor, heads: int, valid: int | None = None,
               postnorm: bool = True) -> list[torch.Tensor]:
    """Every layer (T, D) of one 1-D clip from the state dict alone, as the upstream formulas
    read (mel256: MelspectrogramProcessor, WavEncoder, PatchoutMask PE, ResiDual layers)."""
    import torchaudio.compliance.kaldi as kaldi

    fb = kaldi.fbank(wave[None], sample_frequency=24000, frame_length=26.56, frame_shift=13.28,
                     htk_compat=True, use_energy=False, window_type="hanning", num_mel_bins=256,
                     low_freq=20, high_freq=0)
    x = F.linear((fb + 6.12) / 4.82, state["wav_encoder.post_net.weight"],
                 state["wav_encoder.post_net.bias"])
    t, d = x.shape
    angle = torch.arange(t, dtype=torch.float)[:, None] * torch.exp(
        -torch.arange(0, d, 2, dtype=torch.float) * math.log(10000.0) / d)
    pe = torch.zeros(t, d)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)
    x = x + state["masker.positional_encoder.scale"] * pe
    x0 = x1 = x
    out = []
    n_layers = 1 + max(int(k.split(".")[2]) for k in state
                       if k.startswith("visible_encoder.encoder_layers."))
    for i in range(n_layers):
        p = f"visible_encoder.encoder_layers.{i}."

        def w(name: str, p: str = p) -> torch.Tensor:
            return state[p + name]

        q, k, v = (x0 @ w(f"att_layer.{n}.weight").T for n in ("wq", "wk", "wv"))
        merged = torch.zeros_like(q)
        head_dim = q.shape[1] // heads
        for h in range(heads):  # head h: channels h, h + H, h + 2H, ...
            s = q[:, h::heads] @ k[:, h::heads].T * head_dim ** -0.5
            if valid is not None:
                s[:, valid:] += -1e9
            merged[:, h::heads] = s.softmax(dim=-1) @ v[:, h::heads]
        a = merged @ w("att_layer.wo.weight").T
        x0 = F.layer_norm(x0 + a, (d,), w("norm1.weight"), w("norm1.bias"), 1e-5)
        x1 = x1 + a
        f = F.linear(F.relu(F.linear(x0, w("ff_layer.0.weight"), w("ff_layer.0.bias"))),
                     w("ff_layer.2.weight"), w("ff_layer.2.bias"))
        x0 = F.layer_norm(x0 + f, (d,), w("norm2.weight"), w("norm2.bias"), 1e-5)
        x1 = x1 + f
        out.append(x0)
    if postnorm:
        out[-1] = x0 + F.layer_norm(x1, (d,), state["visible_encoder.final_norm.weight"],
                                    state["visible_encoder.final_norm.bias"], 1e-5)
    return out


# --------------------------------------------------------------------------- CLI path
def test_cli_fetch_and_extract_on_the_165_sounds(tmp_path, monkeypatch, mirror_root) -> None:
    ws = H.workspace(tmp_path, monkeypatch, mirror_root)
    spec = FX.reduced_spec(MODEL)
    H.override_spec(monkeypatch, spec)
    files = FX.write_files(MODEL, tmp_path / "written", reduced=True)
    for name, url in H.source_urls(MODEL).items():
        H.put(ws.mirror, url, files[name])
    ws.params([MODEL])
    ws.fetch_weights(MODEL)
    acts = ws.extract(MODEL)
    assert acts.layer_names == ["0", "1", "2"] == list(spec.layers)
    for arr in acts.layers.values():
        assert arr.shape == (165, 24) and np.isfinite(arr).all()
    fetched = ws.data / "weights" / MODEL / f"{MODEL}.pt"
    assert acts.meta["weights"]["files"][f"{MODEL}.pt"]["sha256"] == sha256_file(fetched)
    runner = acts.meta["runner"]
    assert runner["config"]["num_layers"] == 3 and runner["frames_2s"] == 149
    assert runner["checkpoint"] == f"{MODEL}.pt" and runner["options"] == E.OPTIONS
    assert runner["ignored_keys"] == {"visible_encoder.post_net.": 2, "decoder.": 15,
                                      "head.": 2, "target_encoder.": 70}
    assert acts.meta["min_samples"] == 2049 and acts.meta["sample_rate"] == 24000
    assert acts.meta["paper_keys"] == {k: f"{MODEL}_{k}" for k in spec.layers}


# --------------------------------------------------------------------------- refusals
def test_strict_loading_names_the_key_file_and_model(tmp_path) -> None:
    ckpt = FX.checkpoint(MODEL, reduced=True)
    sd = ckpt["state_dict"]
    sd["visible_encoder.encoder_layers.1.norm1.gamma"] = sd.pop(
        "visible_encoder.encoder_layers.1.norm1.weight")
    with pytest.raises(InputError) as err:
        _runner(tmp_path / "renamed", ckpt=ckpt)
    msg = str(err.value)
    assert "norm1.gamma" in msg and "norm1.weight" in msg and MODEL in msg
    assert f"{MODEL}.pt" in msg
    # a key outside every known prefix is an error; one under a training-only prefix is not
    ckpt = FX.checkpoint(MODEL, reduced=True)
    ckpt["state_dict"]["masker.masker.bias"] = torch.zeros(3)
    with pytest.raises(InputError, match="unexpected key 'masker.masker.bias'"):
        _runner(tmp_path / "unknown", ckpt=ckpt)
    ckpt = FX.checkpoint(MODEL, reduced=True)
    ckpt["state_dict"]["decoder.renamed"] = ckpt["state_dict"].pop("decoder.final_norm.weight")
    assert _runner(tmp_path / "ignored", ckpt=ckpt).provenance["ignored_keys"]["decoder."] == 15
    ckpt = FX.checkpoint(MODEL, reduced=True)
    ckpt["state_dict"]["wav_encoder.post_net.weight"] = torch.zeros(24, 128)
    with pytest.raises(InputError, match=r"misshapen key 'wav_encoder.post_net.weight"):
        _runner(tmp_path / "shape", ckpt=ckpt)


def test_truncated_file_fails_its_checksum_before_loading(tmp_path, monkeypatch) -> None:
    ctx, folder = _fetched(tmp_path, MODEL, {f"{MODEL}.pt": FX.checkpoint(MODEL, reduced=True)})
    H.truncate(folder / f"{MODEL}.pt")

    def never(*_a, **_k):
        raise AssertionError("deserialised before the checksum check")

    monkeypatch.setattr(E, "safe_load", never)
    with pytest.raises(InputError, match="checksum mismatch"):
        E.build(FX.reduced_spec(MODEL), ctx)


def test_a_pickled_payload_is_refused(tmp_path) -> None:
    evil = H.add_payload(FX.checkpoint(MODEL, reduced=True))
    with pytest.raises(InputError, match="refusing to unpickle"):
        _runner(tmp_path, ckpt=evil)


def test_gin_config_must_be_the_models(tmp_path) -> None:
    bad = FX.checkpoint(MODEL, reduced=True, mods=["NUM_ENCODER_LAYERS=5"])
    with pytest.raises(InputError, match=r"num_layers=5 \(expected 3\)"):
        _runner(tmp_path / "layers", ckpt=bad)
    bad = FX.checkpoint(MODEL, reduced=True, mods=["NUM_MEL_BINS=128"])
    with pytest.raises(InputError, match="fbank_num_mel_bins=128"):
        _runner(tmp_path / "mel", ckpt=bad)
    bad = FX.checkpoint(MODEL, reduced=True,
                        mods=["encoder/encodecmae.models.transformers.TransformerEncoder."
                              "norm_type='prenorm'"])
    with pytest.raises(InputError, match="norm_type = 'prenorm'"):
        _runner(tmp_path / "norm", ckpt=bad)


def test_shared_ffn_copies_must_be_equal(tmp_path) -> None:
    runner = _runner(tmp_path / "ok")
    layers = runner.model.visible_encoder.encoder_layers
    assert layers[0].ff_layer is layers[2].ff_layer  # one module, as upstream
    ckpt = FX.checkpoint(MODEL, reduced=True)
    key = "visible_encoder.encoder_layers.2.ff_layer.0.weight"
    ckpt["state_dict"][key] = ckpt["state_dict"][key].clone() + 1e-3
    with pytest.raises(InputError, match=rf"{re.escape(key)} differs from .*layers\.0\."):
        _runner(tmp_path / "bad", ckpt=ckpt)


def test_large_head_count_is_checked_against_wq(tmp_path) -> None:
    model = "mel256-ec-large"
    runner = _runner(tmp_path / "ok", model)
    att = runner.model.visible_encoder.encoder_layers[0].att_layer
    assert att.wq.weight.shape == (24, 26) and att.wo.weight.shape == (26, 24)  # 12 x 2 != 26
    ckpt = FX.checkpoint(model, reduced=True)
    ckpt["state_dict"]["visible_encoder.encoder_layers.0.att_layer.wq.weight"] = torch.zeros(26, 26)
    with pytest.raises(InputError, match="wq.weight has 26 rows, but 12 heads of 2 channels"):
        _runner(tmp_path / "bad", model, ckpt=ckpt)


# --------------------------------------------------------------------------- sizes
def test_parameter_counts_of_the_real_configurations() -> None:
    from encodec.modules import SEANetEncoder

    def count(name: str) -> int:
        cfg = E.EncoderConfig.from_values(get_spec(name).config)
        return parameter_count(lambda: E.build_encoder(cfg))

    for name in ("mel256-ec-base", "mel256-ec-base-as", "mel256-ec-base-fma",
                 "mel256-ec-base-ll", "mel256-ec-base_st-nopn"):
        assert count(name) == 30_118_913  # paper-models 4.2 (extraction subset, shared FFN)
    assert count("mel256-ec-small") == 18_307_073  # paper-models 4.2
    assert count("mel256-ec-large") == count("mel256-ec-large_st-nopn") == 92_299_265  # derived
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seanet = parameter_count(lambda: SEANetEncoder(norm="weight_norm", causal=True))
    assert seanet == parameter_count(E.build_seanet) == 7_425_792
    assert count("ec-ec-base") == 30_118_913 - 256 * 768 + 128 * 768 + seanet
    # ten separate FFNs would add 56,666,880 (paper-models 3.1): the state dict's repeats
    with torch.device("meta"):
        base = E.build_encoder(E.EncoderConfig.from_values(get_spec(MODEL).config))
    repeated = sum(v.numel() for v in base.state_dict().values())
    assert repeated - 30_118_913 == 56_666_880


def test_layers_dims_and_frames_of_the_paper_models() -> None:
    expected = {"mel256-ec-base": (10, 768), "mel256-ec-small": (5, 768),
                "mel256-ec-large": (11, 1024), "mel256-ec-large_st-nopn": (11, 1024),
                "ec-ec-base": (10, 768), "spec-ec-base": (10, 768)}
    for name, (n_layers, dim) in expected.items():
        spec = get_spec(name)
        assert len(spec.layers) == n_layers and spec.config["model_dim"] == dim
        assert spec.min_samples == 2049
    assert get_spec("mel256-ec-large").layers == tuple(str(i) for i in (*range(0, 20, 2), 19))
    mel = E.EncoderConfig.from_values(get_spec(MODEL).config)
    assert mel.n_frames(48000) == 149 and mel.n_frames(96000) == 300
    assert E.EncoderConfig.from_values(get_spec("ec-ec-base").config).n_frames(48000) == 150
    # the large model's 20 blocks, shapes only (meta device)
    large = E.EncoderConfig.from_values(get_spec("mel256-ec-large").config)
    with torch.device("meta"):
        acts = E.build_encoder(large).activations(torch.empty(1, 149, 256), None, 19)
    assert len(acts) == 20 and all(a.shape == (1, 149, 1024) for a in acts)
    # a real-size base model on a 2-s clip
    torch.manual_seed(0)
    runner = E.EncodecMAERunner(get_spec(MODEL), torch.device("cpu"),
                                E.build_encoder(mel).eval(), mel, E.OPTIONS)
    with torch.inference_mode():
        frames = runner.frame_activations(_wave())
    assert list(frames) == [str(i) for i in range(10)]
    assert all(v.shape == (1, 149, 768) and torch.isfinite(v).all() for v in frames.values())


# --------------------------------------------------------------------------- equality
def test_matches_the_literal_upstream_computation(tmp_path) -> None:
    ckpt = FX.checkpoint(MODEL, reduced=True)
    state = ckpt["state_dict"]
    default = _runner(tmp_path / "a")
    x0_last = _runner(tmp_path / "b", postnorm_last_activation=False)
    unmasked = _runner(tmp_path / "c", key_padding_mask="none")
    worst = 0.0
    with torch.inference_mode():
        for n, valid in ((48000, None), (70000, 218)):  # 70000 // 320 = 218 < 219 frames
            wave = _wave(n)
            for runner, postnorm in ((default, True), (x0_last, False)):
                ours = runner.frame_activations(wave)
                ref = _reference(state, wave[0], 12, valid, postnorm)
                assert ours["0"].shape[1] == ref[0].shape[0] == 1 + (n - 637) // 318
                for i, r in enumerate(ref):
                    worst = max(worst, float((ours[str(i)][0] - r).abs().max()))
            free = unmasked.frame_activations(wave)
            ref = _reference(state, wave[0], 12, None, True)
            worst = max(worst, float((free["2"][0] - ref[2]).abs().max()))
            if valid is not None:
                assert not torch.allclose(free["0"], default.frame_activations(wave)["0"])
    assert worst < TOL, worst


def test_attention_equals_torch_mha_with_permuted_weights() -> None:
    dim, heads, hd = 48, 12, 4
    torch.manual_seed(0)
    ours = E.attention_module(dim, heads, hd).eval()
    mha = torch.nn.MultiheadAttention(dim, heads, bias=False, batch_first=True).eval()
    perm = torch.tensor([d * heads + h for h in range(heads) for d in range(hd)])
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([ours.wq.weight[perm], ours.wk.weight[perm],
                                            ours.wv.weight[perm]]))
        mha.out_proj.weight.copy_(ours.wo.weight[:, perm])
    x = torch.randn(2, 17, dim)
    mask = torch.zeros(2, 17, dtype=torch.bool)
    mask[1, -3:] = True
    with torch.no_grad():
        for m in (None, mask):
            theirs, _ = mha(x, x, x, key_padding_mask=m, need_weights=False)
            diff = float((ours(x, m) - theirs).abs().max())
            assert diff < TOL, diff


def test_seanet_port_equals_encodec() -> None:
    from encodec.modules import SEANetEncoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = SEANetEncoder(channels=1, norm="weight_norm", causal=True).eval()
    rng = FX._Random(3)
    state = FX._random_like(rng, {k: v.shape for k, v in ref.state_dict().items()})
    ref.load_state_dict(state)
    ours = E.build_seanet().eval()
    ours.load_state_dict(state, strict=True)
    with torch.no_grad():
        for n, frames in ((48000, 150), (12000, 38), (2049, 7)):
            x = _wave(n)[:, None]
            a, b = ours(x), ref(x)
            assert a.shape == (1, 128, frames)
            assert float((a - b).abs().max()) < TOL


def test_ec_ec_checks_its_encoder_against_the_encodec_file(tmp_path) -> None:
    model = "ec-ec-base"
    files = FX.write_files(model, tmp_path / "written", reduced=True)
    ctx, folder = _fetched(tmp_path / "ok", model, files)
    spec = FX.reduced_spec(model)
    runner = E.build(spec, ctx)
    assert runner.provenance["encodec_reference"]["tensors_equal"] == 62
    with torch.inference_mode():
        two = runner.frame_activations(_wave())
        half = runner.frame_activations(_wave(12000))
        free = E.build(spec, dataclasses.replace(ctx, options={"key_padding_mask": "none"}))
        half_free = free.frame_activations(_wave(12000))
        assert torch.equal(free.frame_activations(_wave())["2"], two["2"])
    assert two["0"].shape == (1, 150, 24) and half["0"].shape == (1, 38, 24)
    assert not torch.allclose(half["1"], half_free["1"])  # 12000 // 320 = 37: last key masked
    th = torch.load(files[E.ENCODEC_FILE], weights_only=True)
    th["encoder.model.3.conv.conv.bias"] = th["encoder.model.3.conv.conv.bias"] + 1e-4
    bad = dict(files)
    bad[E.ENCODEC_FILE] = tmp_path / "bad.th"
    torch.save(th, bad[E.ENCODEC_FILE])
    ctx, _ = _fetched(tmp_path / "bad", model, bad)
    with pytest.raises(InputError, match=r"model\.3\.conv\.conv\.bias differs"):
        E.build(spec, ctx)


def test_spec_ec_reads_its_own_front_end(tmp_path) -> None:
    import torchaudio.compliance.kaldi as kaldi

    model = "spec-ec-base"
    front = {"sample_frequency": 16000, "fs": 16000, "hop_length": 160, "frame_length": 25,
             "frame_shift": 10, "window_type": "povey", "norm_stats": [-1.0, 2.0]}
    ckpt = FX.checkpoint(model, reduced=True, spec_frontend=front)
    runner = _runner(tmp_path / "ok", model, ckpt=ckpt)
    assert runner.sample_rate == 16000 and runner.cfg.feature_dim == 257
    assert runner.cfg.chunk_samples == 64000 and runner.info()["frames_2s"] == 198
    wave = _wave(32000, batch=2)
    direct = torch.stack([(kaldi.spectrogram(w[None], sample_frequency=16000, frame_length=25,
                                             frame_shift=10, window_type="povey") + 1.0) / 2.0
                          for w in wave])
    assert float((runner.features(wave) - direct).abs().max()) < TOL
    with torch.inference_mode():
        assert runner.forward(wave, ["0"])["0"].shape == (2, 24)
    ckpt["state_dict"]["wav_encoder.post_net.weight"] = torch.zeros(24, 513)
    with pytest.raises(InputError, match="takes 513 inputs, the gin's spectrogram gives 257"):
        _runner(tmp_path / "bad", model, ckpt=ckpt)


def test_mel_front_end_equals_torchaudio_kaldi(tmp_path) -> None:
    import torchaudio.compliance.kaldi as kaldi

    runner = _runner(tmp_path)
    wave = _wave(50000, batch=2)
    direct = torch.stack([(kaldi.fbank(w[None], sample_frequency=24000, frame_length=26.56,
                                       frame_shift=13.28, htk_compat=True, use_energy=False,
                                       window_type="hanning", num_mel_bins=256) + 6.12) / 4.82
                          for w in wave])
    assert torch.equal(runner.features(wave), direct)


# --------------------------------------------------------------------------- behaviour
def test_chunks_runs_and_batches(tmp_path) -> None:
    runner = _runner(tmp_path)
    with torch.inference_mode():
        five = runner.frame_activations(_wave(120000))  # 96000 + 24000 samples
        skipped = runner.frame_activations(_wave(98000))  # the last 2000 samples are skipped
        assert five["0"].shape[1] == 300 + 74 and skipped["0"].shape[1] == 300
        head = runner.frame_activations(_wave(120000)[:, :96000])
        assert torch.equal(five["1"][:, :300], head["1"])
        batch = _wave(48000, batch=3, seed=4)
        together = runner.forward(batch, ["0", "2"])
        alone = [runner.forward(batch[i:i + 1], ["0", "2"]) for i in range(3)]
        again = runner.forward(batch, ["0", "2"])
        with pytest.raises(InputError, match="no chunk longer than 2048"):
            runner.forward(_wave(2048), ["0"])
    for key in ("0", "2"):
        assert torch.equal(together[key], again[key])  # two runs: identical
        stacked = torch.cat([a[key] for a in alone])
        assert float((together[key] - stacked).abs().max()) < 1e-6
    # the same file built twice gives the same numbers
    other = _runner(tmp_path / "again")
    with torch.inference_mode():
        assert torch.equal(other.forward(batch, ["2"])["2"], together["2"])


def test_bad_options_are_one_clear_error() -> None:
    spec = get_spec(MODEL)
    for options, where in (({"postnorm_last_activation": "yes"}, "postnorm_last_activation"),
                           ({"key_padding_mask": "all"}, "key_padding_mask"),
                           ({"pooling": "mean"}, "pooling")):
        with pytest.raises(InputError, match=rf"extract\.options\.{MODEL}\.{where}"):
            E.parse_options(spec, options)
        with pytest.raises(InputError, match=rf"extract\.options\.{MODEL}\.{where}"):
            build_runner(MODEL, ExtractConfig(models=(MODEL,), options={MODEL: options}))


def test_gin_parser() -> None:
    text = """# a comment
import encodecmae.models
A=1
B = %A  # trailing comment
A=2
NAME='x # not a comment @not.a.ref'
$keys_not_saved=['datasets','dataloaders']
some.module.Fn:
    lst = [@scope/other.Cls(),
           @plain.Ref, %B]
    tup=(0.9,0.95)
    d={'train':-1,'validation':%A}
    flag=True
some.module.Fn.lst+=[None]
scope/some.module.Fn.x = \\
    -1.5e-3
Fn.y = "two"
"""
    gin = E.parse_gin(text, "t.gin")
    assert gin.macros["A"] == 2 and gin.resolve(E.GinMacro("B")) == 2
    assert gin.macros["NAME"] == "x # not a comment @not.a.ref"
    assert gin.macros["$keys_not_saved"] == ["datasets", "dataloaders"]
    lst = gin.get("some.module.Fn", "lst")
    assert lst == [E.GinRef("other.Cls", "scope", True), E.GinRef("plain.Ref"), 2, None]
    assert gin.get("Fn", "tup") == (0.9, 0.95)
    assert gin.get("module.Fn", "d") == {"train": -1, "validation": 2}
    assert gin.get("some.module.Fn", "flag") is True
    assert gin.get("some.module.Fn", "x", "scope") == -1.5e-3
    assert gin.get("some.module.Fn", "y", "scope") == "two"  # falls back to unscoped
    assert gin.get("some.module.Fn", "x", default=None) is None
    with pytest.raises(InputError, match="not found"):
        gin.get("some.module.Fn", "missing")
    with pytest.raises(InputError, match="t.gin line 2: gin syntax"):
        E.parse_gin("A=1\nB = os.system('x')\n", "t.gin")
    with pytest.raises(InputError, match="include"):
        E.parse_gin("include 'other.gin'\n", "t.gin")
    # every fixture config parses to its model's architecture
    for model in FX.MODELS:
        cfg, _ = E.read_config(E.parse_gin(FX.gin_config(model)))
        spec = get_spec(model)
        assert (cfg.model_dim, cfg.num_layers, cfg.num_heads, cfg.head_dim) == tuple(
            spec.config[k] for k in ("model_dim", "num_layers", "num_heads", "head_dim"))


# --------------------------------------------------------------------------- Fig. 5
def test_pretraining_checkpoints(tmp_path) -> None:
    names = [f"epoch={s // 5000}-step={s}.ckpt" for s in E.PRETRAIN_STEPS]
    shuffled = random.Random(0).sample(names, len(names))
    ordered = E.sort_checkpoints(shuffled)
    assert [E.checkpoint_step(p) for p in ordered] == list(range(0, 100000, 1000))
    assert len(ordered) == 100 and ordered[-1].name == "epoch=19-step=99000.ckpt"
    with pytest.raises(InputError, match="step"):
        E.checkpoint_step("last.ckpt")
    with pytest.raises(InputError, match="step 1000 also"):
        E.sort_checkpoints(["epoch=0-step=1000.ckpt", "epoch=1-step=1000.ckpt"])

    spec = FX.reduced_spec(E.PRETRAIN_MODEL)
    state = FX.state_dict(E.PRETRAIN_MODEL, reduced=True, seed=5)
    path = FX.write_pretraining_checkpoint(tmp_path / "ckpt", 3000, state=state)
    runner = E.load_pretraining_checkpoint(spec, path, sha256=sha256_file(path))
    assert runner.provenance["global_step"] == 3000 and runner.provenance["step"] == 3000
    # the same weights as a v2 hub file give the same numbers
    hub = FX.checkpoint(E.PRETRAIN_MODEL, reduced=True)
    hub["state_dict"] = state
    v2 = _runner(tmp_path / "hub", E.PRETRAIN_MODEL, ckpt=hub)
    with torch.inference_mode():
        wave = _wave()
        assert torch.equal(runner.forward(wave, ["0", "2"])["2"], v2.forward(wave, ["2"])["2"])
    # step 0 (no optimizer state yet) loads too
    E.load_pretraining_checkpoint(spec, FX.write_pretraining_checkpoint(
        tmp_path / "ckpt", 0, reduced=True))
    with pytest.raises(InputError, match="checksum mismatch"):
        E.load_pretraining_checkpoint(spec, path, sha256="0" * 64)
    renamed = dict(state)
    renamed["visible_encoder.final_norm.gain"] = renamed.pop("visible_encoder.final_norm.weight")
    bad = FX.write_pretraining_checkpoint(tmp_path / "bad", 1000, state=renamed)
    with pytest.raises(InputError, match="final_norm.gain"):
        E.load_pretraining_checkpoint(spec, bad)
    evil = tmp_path / "evil" / "epoch=0-step=2000.ckpt"
    evil.parent.mkdir()
    torch.save(H.add_payload(FX.lightning_checkpoint(state, 2000)), evil)
    with pytest.raises(InputError, match="refusing to unpickle"):
        E.load_pretraining_checkpoint(spec, evil)
