"""BEATs loaders: synthetic checkpoints in the upstream container, through fetch and extract.

No PyPI package implements BEATs, so the loader is checked against a literal, functional
computation of the upstream formulas written here (torchaudio's fbank, torch's own weight norm,
the q / 32 and (qk - max) * 32 logit trick, T5 buckets in plain Python, gated bias, DeepNorm),
layer by layer, float32, tolerance 1e-5.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from brainalign.data.fetch import fetch, mirror_path
from brainalign.errors import InputError
from brainalign.models import beats as B
from brainalign.models.weights import parameter_count, sha256_file

sys.path.insert(0, str(Path(__file__).parent))

import weights_helpers as H  # noqa: E402
from fixtures import beats as FX  # noqa: E402

MODEL = "BEATs_iter3"
FT = FX.FINETUNED
TOL = 1e-5  # float32; measured max |diff| ~2e-6 (reduced), 6e-6 vs upstream code (real size)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _wave(n: int = 32000, batch: int = 1, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 16000
    tone = 0.3 * torch.sin(2 * math.pi * 440 * t)
    return (tone + 0.1 * torch.randn(batch, n, generator=gen)).float()


def _fetched(tmp_path: Path, model: str, ckpt: dict | None = None):
    """Write a (reduced) checkpoint at its URL in a mirror, fetch it (sha256 recorded in a
    registry copy) and return the BuildContext reading it and the fetched path."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    mirror, data, registry = tmp_path / "mirror", tmp_path / "data", tmp_path / "registry.json"
    shutil.copyfile(H.REPO / "src/brainalign/data/registry.json", registry)
    url = H.source_urls(model)[f"{model}.pt"]
    target = mirror_path(url, mirror)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt if ckpt is not None else FX.make_checkpoint(model, reduced=True), target)
    fetch(["weights"], data, mirror, registry, models=[model])
    return H.context(data, model, registry), data / "weights" / model / f"{model}.pt"


def _runner(tmp_path: Path, model: str = MODEL, **options):
    ctx, _ = _fetched(tmp_path, model)
    ctx = dataclasses.replace(ctx, options=options)
    return B.build(FX.reduced_spec(model), ctx)


# --------------------------------------------------------------------------- literal reference
def _bucket(rel: int, num_buckets: int, max_distance: int) -> int:
    """T5 bidirectional bucket, written in plain Python from the formula."""
    half = num_buckets // 2
    exact = half // 2
    base = half if rel > 0 else 0
    n = abs(rel)
    if n < exact:
        return base + n
    return base + min(half - 1, exact + int(math.log(n / exact) / math.log(max_distance / exact)
                                            * (half - exact)))


def _reference_layers(state: dict, cfg: dict, wave: torch.Tensor) -> list[torch.Tensor]:
    """All taps of one clip from the state dict alone, in (T, B, C) as upstream runs."""
    import torchaudio.compliance.kaldi as kaldi

    e, d, h = cfg["embed_dim"], cfg["encoder_embed_dim"], cfg["encoder_attention_heads"]
    hd, kpos, layers = d // h, cfg["conv_pos"], cfg["encoder_layers"]
    fb = kaldi.fbank(wave[None] * 2**15, num_mel_bins=128, sample_frequency=16000,
                     frame_length=25, frame_shift=10)
    fb = (fb - 15.41663) / (2 * 6.55582)
    x = F.conv2d(fb[None, None], state["patch_embedding.weight"], stride=cfg["input_patch_size"])
    x = x.reshape(1, e, -1).transpose(1, 2)
    x = F.layer_norm(x, (e,), state["layer_norm.weight"], state["layer_norm.bias"])
    x = F.linear(x, state["post_extract_proj.weight"], state["post_extract_proj.bias"])
    w = torch._weight_norm(state["encoder.pos_conv.0.weight_v"],
                           state["encoder.pos_conv.0.weight_g"], 2)
    conv = F.conv1d(x.transpose(1, 2), w, state["encoder.pos_conv.0.bias"], padding=kpos // 2,
                    groups=cfg["conv_pos_groups"])[:, :, :-1]  # SamePad: even kernel
    x = x + F.gelu(conv).transpose(1, 2)
    x = F.layer_norm(x, (d,), state["encoder.layer_norm.weight"], state["encoder.layer_norm.bias"])
    x = x.transpose(0, 1)  # T, B, C
    t = x.shape[0]
    table = state["encoder.layers.0.self_attn.relative_attention_bias.weight"]
    idx = torch.tensor([[_bucket(j - i, cfg["num_buckets"], cfg["max_distance"])
                         for j in range(t)] for i in range(t)])
    pos_bias = table[idx].permute(2, 0, 1)  # H, T, S (batch 1)
    alpha = (2 * layers) ** 0.25
    scaling, trick = hd ** -0.5, 32.0
    out = [x]
    for i in range(layers):
        p = f"encoder.layers.{i}."

        def lin(y, name, p=p):
            return F.linear(y, state[p + name + ".weight"], state[p + name + ".bias"])

        res = x
        q = lin(x, "self_attn.q_proj") * scaling / trick
        k, v = lin(x, "self_attn.k_proj"), lin(x, "self_attn.v_proj")
        q = q.reshape(t, h, hd).transpose(0, 1)
        k = k.reshape(t, h, hd).transpose(0, 1)
        v = v.reshape(t, h, hd).transpose(0, 1)
        logits = torch.bmm(q, k.transpose(1, 2))
        logits = (logits - logits.max(dim=-1, keepdim=True)[0]) * trick
        q_raw = (q * trick / scaling)[None]  # B, H, T, hd
        g = F.linear(q_raw, state[p + "self_attn.grep_linear.weight"],
                     state[p + "self_attn.grep_linear.bias"]).view(1, h, t, 2, 4).sum(-1)
        gate_a, gate_b = torch.sigmoid(g).chunk(2, dim=-1)
        gate = gate_a * (gate_b * state[p + "self_attn.grep_a"] - 1.0) + 2.0
        logits = logits + gate.view(h, t, 1) * pos_bias
        attn = torch.bmm(torch.softmax(logits, dim=-1), v).transpose(0, 1).reshape(t, 1, d)
        x = F.layer_norm(res * alpha + lin(attn, "self_attn.out_proj"), (d,),
                         state[p + "self_attn_layer_norm.weight"],
                         state[p + "self_attn_layer_norm.bias"])
        res = x
        x = lin(F.gelu(lin(x, "fc1")), "fc2")
        x = F.layer_norm(res * alpha + x, (d,), state[p + "final_layer_norm.weight"],
                         state[p + "final_layer_norm.bias"])
        out.append(x)
    return [y.transpose(0, 1) for y in out]  # B, T, C


# --------------------------------------------------------------------------- the CLI path
def test_cli_fetch_and_extract_165_sounds(tmp_path, monkeypatch, mirror_root) -> None:
    ws = H.workspace(tmp_path, monkeypatch, mirror_root)
    for model in (MODEL, FT):
        H.override_spec(monkeypatch, FX.reduced_spec(model))
        files = FX.write_files(model, tmp_path / "written" / model, reduced=True)
        for name, url in H.source_urls(model).items():
            H.put(ws.mirror, url, files[name])
    ws.params([MODEL, FT], extract={"options": {FT: {"token_pooling": "frequency"}}})
    ws.fetch_weights(MODEL, FT)
    d = FX.REDUCED["encoder_embed_dim"]
    for model, dim in ((MODEL, d), (FT, 8 * d)):
        acts = ws.extract(model)
        assert acts.layer_names == ["0", "1", "2"]
        assert len(acts.stimuli) == 165
        for arr in acts.layers.values():
            assert arr.shape == (165, dim) and np.isfinite(arr).all() and arr.std() > 0
        fetched = ws.data / "weights" / model / f"{model}.pt"
        files = acts.meta["weights"]["files"]
        assert files[f"{model}.pt"]["sha256"] == sha256_file(fetched)
        info = acts.meta["runner"]
        assert info["tokens_2s"] == 96 and info["frames_2s"] == 198
        assert info["cfg"]["encoder_layers"] == 2
        assert info["cfg"]["finetuned_model"] == (model == FT)
        assert info["token_pooling"] == ("frequency" if model == FT else "mean")
        assert info["label_dict_size"] == (527 if model == FT else None)
        assert acts.meta["paper_keys"]["2"] == f"{model}_2"


# --------------------------------------------------------------------------- numerics
def test_layers_equal_the_literal_formulas(tmp_path) -> None:
    ckpt = FX.make_checkpoint(FT, reduced=True, seed=3)
    ctx, _ = _fetched(tmp_path, FT, ckpt)
    runner = B.build(FX.reduced_spec(FT), ctx)
    wave = _wave()
    with torch.inference_mode():
        ours = runner.states(wave)
        ref = _reference_layers(ckpt["model"], ckpt["cfg"], wave[0])
        pooled = runner.forward(wave, ["0", "1", "2"])
    assert len(ours) == len(ref) == 3
    for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
        assert a.shape == b.shape == (1, 96, 64)
        assert (a - b).abs().max() < TOL, (i, float((a - b).abs().max()))
        torch.testing.assert_close(pooled[str(i)], a.mean(dim=1), rtol=0, atol=0)


def test_attention_equals_the_stability_trick_formula() -> None:
    """Plain softmax(q.k / sqrt(d) + gated bias) == upstream's q / 32, (qk - max) * 32."""
    cfg = B.read_cfg(dict(FX.checkpoint_cfg(MODEL)), "cfg", MODEL)
    torch.manual_seed(1)
    attn = B._classes().Attention(cfg, owns_bias=True).eval()
    with torch.no_grad():
        attn.grep_a.uniform_(0.5, 1.5)
        attn.relative_attention_bias.weight.normal_(0, 1.0)
    x = torch.randn(2, 96, 768)
    h, hd = 12, 64
    with torch.inference_mode():
        bias = attn.compute_bias(96, 96)
        ours = attn(x, bias)
        xt = x.transpose(0, 1)  # T, B, C
        q = attn.q_proj(xt) * hd ** -0.5 / 32
        k, v = attn.k_proj(xt), attn.v_proj(xt)
        q, k, v = (y.reshape(96, 2 * h, hd).transpose(0, 1) for y in (q, k, v))
        logits = torch.bmm(q, k.transpose(1, 2))
        logits = (logits - logits.max(dim=-1, keepdim=True)[0]) * 32
        qr = q.view(2, h, 96, hd) * 32 / hd ** -0.5
        ga, gb = torch.sigmoid(attn.grep_linear(qr).view(2, h, 96, 2, 4).sum(-1)).chunk(2, -1)
        gate = (ga * (gb * attn.grep_a - 1.0) + 2.0).view(2 * h, 96, 1)
        logits = logits + gate * bias.repeat(2, 1, 1)
        ref = torch.bmm(torch.softmax(logits, -1), v).transpose(0, 1).reshape(96, 2, 768)
        ref = attn.out_proj(ref).transpose(0, 1)
    assert (ours - ref).abs().max() < TOL


def test_relative_buckets() -> None:
    rel = torch.arange(-900, 901)
    ours = B.relative_buckets(rel, 320, 800)
    assert ours.tolist() == [_bucket(int(r), 320, 800) for r in rel]
    # spot values: own buckets below 80, log buckets up to 800, clamped beyond; + offsets high
    pick = {0: 0, -1: 1, 1: 161, -79: 79, -80: 80, -100: 87, 100: 247, -799: 159, -900: 159,
            900: 319}
    assert {r: int(ours[r + 900]) for r in pick} == pick


def test_relative_bias_is_one_module_computed_once(tmp_path, monkeypatch) -> None:
    runner = _runner(tmp_path)
    layers = runner.net.encoder.layers
    first = layers[0].self_attn.relative_attention_bias
    assert layers[1].self_attn.relative_attention_bias is first
    keys = [k for k in runner.net.state_dict() if "relative_attention_bias" in k]
    assert len(keys) == 2
    n_params = sum(p.numel() for p in runner.net.parameters())
    assert n_params == sum(math.prod(s) for s in FX.state_shapes(runner.cfg).values()) - 320 * 4
    calls = []
    cls = B._classes().Attention
    original = cls.compute_bias
    monkeypatch.setattr(cls, "compute_bias",
                        lambda self, *a: calls.append(self) or original(self, *a))
    with torch.inference_mode():
        runner.forward(_wave(), ["2"])
    assert calls == [layers[0].self_attn]


def test_weight_norm_of_the_old_names_equals_torch() -> None:
    classes = B._classes()
    torch.manual_seed(2)
    ours = classes.WeightNormConv1d(64, 16, 4)
    with torch.no_grad():
        ours.weight_g.mul_(torch.rand_like(ours.weight_g) + 0.5)
    conv = torch.nn.Conv1d(64, 64, 16, padding=8, groups=4)
    conv = torch.nn.utils.parametrizations.weight_norm(conv, dim=2)
    remap = {"parametrizations.weight.original0": ours.weight_g,
             "parametrizations.weight.original1": ours.weight_v, "bias": ours.bias}
    conv.load_state_dict({k: v.detach() for k, v in remap.items()})
    x = torch.randn(1, 64, 96)
    with torch.inference_mode():
        torch.testing.assert_close(ours.weight(), conv.weight, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(ours(x), conv(x), rtol=1e-5, atol=1e-6)
        assert conv(x).shape[-1] == 97 and classes.SamePad(16)(ours(x)).shape[-1] == 96
        assert classes.SamePad(15)(x).shape[-1] == 96


def test_deep_norm_alpha() -> None:
    cfg = B.read_cfg(FX.checkpoint_cfg(MODEL), "cfg", MODEL)
    assert B.deep_norm_alpha(cfg) == pytest.approx(24 ** 0.25) == pytest.approx(2.2134, abs=1e-4)
    pre = B.read_cfg({**cfg, "deep_norm": False, "layer_norm_first": True}, "cfg", MODEL)
    assert B.deep_norm_alpha(pre) == 1.0
    with pytest.raises(InputError, match="exclusive"):
        B.read_cfg({**cfg, "layer_norm_first": True}, "cfg", MODEL)


def test_fbank_equals_torchaudio() -> None:
    import torchaudio.compliance.kaldi as kaldi

    wave = _wave(batch=2)
    ours = B.features(wave)
    for i in range(2):
        ref = kaldi.fbank(wave[i:i + 1] * 2**15, num_mel_bins=128, sample_frequency=16000,
                          frame_length=25, frame_shift=10)
        assert torch.equal(ours[i], (ref - 15.41663) / (2 * 6.55582))
    assert ours.shape == (2, 198, 128)


# --------------------------------------------------------------------------- sizes
def test_parameter_counts_of_the_real_configurations() -> None:
    counts = {m: parameter_count(lambda m=m: B.build_network(
        B.read_cfg(FX.checkpoint_cfg(m), "cfg", m))) for m in (MODEL, FT)}
    assert counts == {MODEL: 90_311_792, FT: 90_717_055}  # paper-models 4.2


def test_real_size_layers_tokens_and_frames() -> None:
    spec = next(s for s in B.SPECS if s.name == MODEL)
    cfg = B.read_cfg(FX.checkpoint_cfg(MODEL), "cfg", MODEL)
    assert len(spec.layers) == 13 and spec.min_samples == 2800
    assert B.token_grid(32000, cfg) == (198, 12, 8)  # 2 s: 96 tokens, last 6 frames dropped
    assert B.token_grid(8000, cfg) == (48, 3, 8)  # the 0.5-s mini-task clips: 24 tokens
    assert B.token_grid(2800, cfg)[1] == 1 and B.token_grid(2799, cfg)[1] == 0
    torch.manual_seed(0)
    runner = B.BEATsRunner(spec, torch.device("cpu"), B.build_network(cfg), cfg)
    with torch.inference_mode():
        states = runner.states(_wave())
        out = runner.forward(_wave(), list(spec.layers))
        runner.token_pooling = "frequency"
        freq = runner.forward(_wave(), ["0", "12"])
        runner.token_pooling = "mean"
        short = runner.forward(_wave(spec.min_samples), ["12"])
    assert [tuple(s.shape) for s in states] == [(1, 96, 768)] * 13
    assert list(out) == list(spec.layers) and all(v.shape == (1, 768) for v in out.values())
    assert all(v.shape == (1, 6144) for v in freq.values())
    torch.testing.assert_close(freq["12"].view(8, 768).mean(0), out["12"][0])
    assert short["12"].shape == (1, 768) and torch.isfinite(short["12"]).all()


# --------------------------------------------------------------------------- loading safety
def test_renamed_key_fails_naming_key_file_and_model(tmp_path) -> None:
    ckpt = FX.make_checkpoint(MODEL, reduced=True)
    state = ckpt["model"]
    state["encoder.layers.1.fc_1.weight"] = state.pop("encoder.layers.1.fc1.weight")
    ctx, path = _fetched(tmp_path, MODEL, ckpt)
    with pytest.raises(InputError) as err:
        B.build(FX.reduced_spec(MODEL), ctx)
    msg = str(err.value)
    assert str(path) in msg and MODEL in msg
    assert "missing key 'encoder.layers.1.fc1.weight'" in msg
    assert "unexpected key 'encoder.layers.1.fc_1.weight'" in msg


def test_wrong_config_container_and_shared_bias_fail(tmp_path) -> None:
    ctx, path = _fetched(tmp_path, MODEL)
    real = next(s for s in B.SPECS if s.name == MODEL)
    with pytest.raises(InputError, match=r"config is not that of 'BEATs_iter3'.*encoder_layers=2"):
        B.build(real, ctx)  # a reduced file against the paper's spec
    ckpt = FX.make_checkpoint(MODEL, reduced=True)
    ckpt["model"]["encoder.layers.1.self_attn.relative_attention_bias.weight"] = torch.zeros(320, 4)
    ctx, _ = _fetched(tmp_path / "b", MODEL, ckpt)
    with pytest.raises(InputError, match="shared relative position bias differs"):
        B.build(FX.reduced_spec(MODEL), ctx)
    ctx, _ = _fetched(tmp_path / "c", MODEL, {"model": ckpt["model"]})
    with pytest.raises(InputError, match=r"keys \['cfg', 'model'\]; missing \['cfg'\]"):
        B.build(FX.reduced_spec(MODEL), ctx)


def test_truncated_file_fails_its_checksum_before_loading(tmp_path, monkeypatch) -> None:
    ctx, path = _fetched(tmp_path, MODEL)
    H.truncate(path)

    def no_load(*args, **kwargs):
        raise AssertionError("deserialised before the checksum check")

    monkeypatch.setattr(torch, "load", no_load)
    with pytest.raises(InputError, match="checksum mismatch"):
        B.build(FX.reduced_spec(MODEL), ctx)


def test_os_system_payload_is_refused(tmp_path) -> None:
    ckpt = H.add_payload(FX.make_checkpoint(MODEL, reduced=True))
    ctx, _ = _fetched(tmp_path, MODEL, ckpt)  # fetched: its sha256 is recorded and matches
    with pytest.raises(InputError, match="refusing to unpickle.*system"):
        B.build(FX.reduced_spec(MODEL), ctx)


# --------------------------------------------------------------------------- behaviour
def test_two_runs_and_batching_give_the_same_activations(tmp_path) -> None:
    ctx, _ = _fetched(tmp_path, MODEL)
    spec = FX.reduced_spec(MODEL)
    wave = _wave(batch=2)
    with torch.inference_mode():
        first = B.build(spec, ctx).forward(wave, list(spec.layers))
        runner = B.build(spec, ctx)
        second = runner.forward(wave, list(spec.layers))
        single = runner.forward(wave[1:], ["2"])
    for k in spec.layers:
        assert torch.equal(first[k], second[k])
    torch.testing.assert_close(single["2"][0], second["2"][1], rtol=0, atol=1e-6)


@pytest.mark.parametrize(("options", "where"), [
    ({"token_pooling": "max"}, "extract.options.BEATs_iter3.token_pooling"),
    ({"pooling": "mean"}, "extract.options.BEATs_iter3.pooling"),
])
def test_bad_options_fail_before_loading(tmp_path, options, where) -> None:
    ctx = H.context(tmp_path, MODEL, **options)  # no weights: the options are checked first
    with pytest.raises(InputError) as err:
        B.build(FX.reduced_spec(MODEL), ctx)
    assert err.value.where == where
    assert "token_pooling" in str(err.value)
