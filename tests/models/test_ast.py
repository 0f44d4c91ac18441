"""braindnn_ast: synthetic checkpoints in the real container, through fetch and extract; strict,
safe loading; the real configuration's size and shapes; equality with transformers' AST."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures import ast as fx  # noqa: E402
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
from brainalign.models import ast as A  # noqa: E402
from brainalign.models.registry import get_spec  # noqa: E402
from brainalign.models.weights import parameter_count, sha256_file  # noqa: E402

MODEL = "braindnn_ast"
TOL = 1e-5  # float32; measured 0.0 against transformers (eager attention) and timm 0.4.5


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _noise(seconds: float, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy((0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32))


def _fetched(tmp_path, monkeypatch, mirror_root, state=None):
    """A workspace whose data/weights/braindnn_ast holds the reduced synthetic checkpoint
    (or ``state`` saved in its place), fetched through the registry (sha256 recorded)."""
    ws = workspace(tmp_path, monkeypatch, mirror_root)
    files = fx.write_files(MODEL, tmp_path / "written", reduced=True)
    if state is not None:
        torch.save(state, files[A.WEIGHT_FILE])
    put(ws.mirror, source_urls(MODEL)[A.WEIGHT_FILE], files[A.WEIGHT_FILE])
    ws.params([MODEL], extract={"device": "cpu", "threads": 1})
    ws.fetch_weights(MODEL)
    return ws


def _runner(ws, spec=None, **options):
    return A.build(spec or fx.reduced_spec(), context(ws.data, MODEL, ws.registry, **options))


def _tuckute_keys(net: torch.nn.Module, x: torch.Tensor) -> dict[torch.nn.Module, str]:
    """Tuckute's SaveOutput names: hooks on every Conv2d and exact-type Linear, key =
    str(module) + '--<earlier calls of modules with the same repr>'."""
    keys: dict[torch.nn.Module, str] = {}
    seen: list[str] = []

    def hook(module, _inp, _out):
        keys[module] = f"{module}--{seen.count(str(module))}"
        seen.append(str(module))

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, torch.nn.Conv2d) or type(m) is torch.nn.Linear]
    try:
        net(x)
    finally:
        for h in handles:
            h.remove()
    return keys


# --------------------------------------------------------------------------- CLI path
def test_fetch_and_extract_the_165_sounds(tmp_path, monkeypatch, mirror_root):
    ws = _fetched(tmp_path, monkeypatch, mirror_root)
    spec = fx.reduced_spec()
    override_spec(monkeypatch, spec)
    acts = ws.extract(MODEL)
    assert list(acts.layers) == ["Embedding", "Encoder_1", "Final"]
    dims = {k: v.shape for k, v in acts.layers.items()}
    assert dims == {"Embedding": (165, 16), "Encoder_1": (165, 16), "Final": (165, 527)}
    assert all(np.isfinite(v).all() and v.std() > 0 for v in acts.layers.values())
    files = acts.meta["weights"]["files"]
    assert list(files) == [A.WEIGHT_FILE]
    assert files[A.WEIGHT_FILE]["sha256"] == sha256_file(
        ws.data / "weights" / MODEL / A.WEIGHT_FILE)
    assert acts.meta["paper_keys"]["Encoder_1"] == (
        "Linear(in_features=64, out_features=16, bias=True)--0")
    runner = acts.meta["runner"]
    assert runner["options"] == dict(A.DEFAULT_OPTIONS)
    assert runner["effective_precision"] == "fp32" and runner["patches"] == [12, 101]
    assert runner["config"]["embed_dim"] == 16 and runner["tokens"] == 1214


# --------------------------------------------------------------------------- safe, strict loading
def test_a_renamed_key_is_named(tmp_path, monkeypatch, mirror_root):
    state = fx.state_dict(fx.config(True))
    state["module.v.blocks.0.mlp.fc3.weight"] = state.pop("module.v.blocks.0.mlp.fc2.weight")
    ws = _fetched(tmp_path, monkeypatch, mirror_root, state=state)
    with pytest.raises(InputError) as err:
        _runner(ws)
    msg = str(err.value)
    assert "missing key 'v.blocks.0.mlp.fc2.weight'" in msg
    assert "unexpected key 'v.blocks.0.mlp.fc3.weight'" in msg
    assert A.WEIGHT_FILE in msg and MODEL in msg


def test_a_truncated_file_fails_its_checksum_before_loading(tmp_path, monkeypatch, mirror_root):
    ws = _fetched(tmp_path, monkeypatch, mirror_root)
    truncate(ws.data / "weights" / MODEL / A.WEIGHT_FILE)

    def never(*_a, **_k):
        raise AssertionError("deserialised before the checksum")

    monkeypatch.setattr(A, "safe_load", never)
    with pytest.raises(InputError, match="checksum mismatch"):
        _runner(ws)


def test_an_os_system_payload_is_refused(tmp_path, monkeypatch, mirror_root):
    ws = _fetched(tmp_path, monkeypatch, mirror_root,
                  state=add_payload(fx.state_dict(fx.config(True))))

    def ran(*_a, **_k):
        raise AssertionError("the payload ran")

    monkeypatch.setattr(os, "system", ran)
    with pytest.raises(InputError, match="refusing to unpickle.*system"):
        _runner(ws)


def test_a_checkpoint_of_another_size_is_refused(tmp_path, monkeypatch, mirror_root):
    ws = _fetched(tmp_path, monkeypatch, mirror_root)
    with pytest.raises(InputError, match=r"config is not that of.*embed_dim=16 \(expected 768\)"):
        _runner(ws, spec=get_spec(MODEL))


@pytest.mark.parametrize(("option", "value"), [
    ("final_head", "random"), ("fc2_tokens", "cls"), ("precision", "fp16"), ("pooling", "mean")])
def test_bad_options_give_one_clear_error(tmp_path, option, value):
    ctx = context(tmp_path, MODEL, None, **{option: value})
    with pytest.raises(InputError, match=rf"extract\.options\.braindnn_ast\.{option}"):
        A.build(get_spec(MODEL), ctx)


# --------------------------------------------------------------------------- the real configuration
def test_parameter_count_of_the_real_model():
    assert parameter_count(lambda: A.network(A.CONFIG)) == 88_132_063  # paper-models 4.2


def test_frames_tokens_and_layer_dims_for_2_s():
    x, n = A.features(_noise(2.0))
    assert n == 198 and tuple(x.shape) == (1024, 128)
    assert torch.allclose(x[198:], torch.full((826, 128), 4.2677393 / (2 * 4.5689974)))
    with torch.device("meta"):
        net = A.network(A.CONFIG)
        taps = net(torch.empty(1, 1024, 128))
    assert tuple(taps["patch"].shape) == (1, 768, 12, 101)
    assert [tuple(h.shape) for h in taps["fc2"]] == [(1, 1214, 768)] * 12
    spec = get_spec(MODEL)
    out = A.reduce_taps(taps, spec.layers, A.CONFIG)
    assert len(spec.layers) == 14
    assert {k: v.shape[-1] for k, v in out.items()} == {k: 527 if k == "Final" else 768
                                                         for k in spec.layers}
    assert A.MIN_SAMPLES == spec.min_samples == 400
    assert A.features(_noise(400 / 16000))[1] == 1
    long, n_long = A.features(_noise(11.0))  # 1098 frames: cut to 1024, as upstream
    assert n_long == 1024 and tuple(long.shape) == (1024, 128)


def test_paper_keys_come_from_our_modules():
    with torch.device("meta"):
        net = A.network(A.CONFIG)
        keys = _tuckute_keys(net, torch.empty(1, 1024, 128))
    spec = get_spec(MODEL)
    assert keys[net.v.patch_embed.proj] == spec.paper_keys["Embedding"]
    for i, block in enumerate(net.v.blocks, start=1):
        assert keys[block.mlp.fc2] == spec.paper_keys[f"Encoder_{i}"]
    assert keys[net.v.patch_embed.proj].startswith("Conv2d(1, 768, kernel_size=(16, 16), "
                                                   "stride=(10, 10))")
    assert net.v.head not in keys and net.v.head_dist not in keys  # loaded, never run


# --------------------------------------------------------------------------- numerics
def test_two_runs_give_identical_activations(tmp_path, monkeypatch, mirror_root):
    ws = _fetched(tmp_path, monkeypatch, mirror_root)
    audio = torch.stack([_noise(2.0, s) for s in range(3)])
    layers = fx.reduced_spec().layers
    with torch.inference_mode():
        a = _runner(ws).forward(audio, layers)
        b = _runner(ws).forward(audio, layers)
    assert all(torch.equal(a[k], b[k]) for k in layers)
    one = _runner(ws).forward(audio[1:2], layers)  # clip by clip: no batch dependence
    assert all(torch.equal(a[k][1:2], one[k]) for k in layers)


def _hf_state(sd: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """timm names -> transformers ASTForAudioClassification names (qkv split in q, k, v)."""
    p = "audio_spectrogram_transformer."
    out = {p + "embeddings.cls_token": sd["v.cls_token"],
           p + "embeddings.distillation_token": sd["v.dist_token"],
           p + "embeddings.position_embeddings": sd["v.pos_embed"]}
    for s in ("weight", "bias"):
        out[p + f"embeddings.patch_embeddings.projection.{s}"] = sd[f"v.patch_embed.proj.{s}"]
        out[p + f"layernorm.{s}"] = sd[f"v.norm.{s}"]
        out[f"classifier.layernorm.{s}"] = sd[f"mlp_head.0.{s}"]
        out[f"classifier.dense.{s}"] = sd[f"mlp_head.1.{s}"]
        for i in range(depth):
            b, hf = f"v.blocks.{i}.", p + f"encoder.layer.{i}."
            q, k, v = sd[b + f"attn.qkv.{s}"].chunk(3)
            out |= {hf + f"attention.attention.query.{s}": q,
                    hf + f"attention.attention.key.{s}": k,
                    hf + f"attention.attention.value.{s}": v,
                    hf + f"attention.output.dense.{s}": sd[b + f"attn.proj.{s}"],
                    hf + f"layernorm_before.{s}": sd[b + f"norm1.{s}"],
                    hf + f"layernorm_after.{s}": sd[b + f"norm2.{s}"],
                    hf + f"intermediate.dense.{s}": sd[b + f"mlp.fc1.{s}"],
                    hf + f"output.dense.{s}": sd[b + f"mlp.fc2.{s}"]}
    return out


def test_equals_transformers_ast_on_random_weights():
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    cfg = {**fx.config(True), "depth": 2, "num_heads": 2}  # two blocks, two heads
    sd = A.strip_prefix(fx.state_dict(cfg, seed=1))
    ours = A.network(cfg).eval()
    ours.load_state_dict(sd, strict=True)
    hf = ASTForAudioClassification(ASTConfig(
        hidden_size=cfg["embed_dim"], num_hidden_layers=cfg["depth"],
        num_attention_heads=cfg["num_heads"], intermediate_size=cfg["mlp_hidden"],
        layer_norm_eps=1e-6, num_labels=527, max_length=1024, num_mel_bins=128,
        hidden_act="gelu", attn_implementation="eager")).eval()
    hf.load_state_dict(_hf_state(sd, cfg["depth"]), strict=True)
    hf.classifier.layernorm.eps = 1e-5  # AST's mlp_head is a default nn.LayerNorm
    fc2: dict[int, torch.Tensor] = {}
    for i, layer in enumerate(hf.audio_spectrogram_transformer.encoder.layer):
        layer.output.dense.register_forward_hook(lambda _m, _i, o, i=i: fc2.__setitem__(i, o))
    extractor = ASTFeatureExtractor()
    for wave in (_noise(11.0, 1), _noise(2.0)):  # cut, then padded (run below)
        x, _ = A.features(wave)
        theirs = extractor(wave.numpy(), sampling_rate=16000, return_tensors="pt").input_values
        assert float((x - theirs[0]).abs().max()) <= TOL
    with torch.inference_mode():
        taps = ours(x[None])
        logits = hf(theirs).logits
    for i in range(cfg["depth"]):
        assert float((taps["fc2"][i] - fc2[i]).abs().max()) <= TOL
    assert float((taps["logits"] - logits).abs().max()) <= TOL


def test_token_options(tmp_path, monkeypatch, mirror_root):
    ws = _fetched(tmp_path, monkeypatch, mirror_root)
    wave = _noise(2.0)[None]
    layers = ["Embedding", "Encoder_1"]
    with torch.inference_mode():
        taps = _runner(ws).taps(A.features(wave[0])[0][None], layers)
        out = {m: _runner(ws, fc2_tokens=m).forward(wave, layers) for m in A.FC2_TOKENS}
    h, patch = taps["fc2"][0], taps["patch"]
    assert torch.allclose(out["all"]["Encoder_1"], h.mean(dim=1), atol=1e-6)
    assert torch.allclose(out["patches"]["Encoder_1"], h[:, 2:].mean(dim=1), atol=1e-6)
    assert torch.equal(out["all"]["Embedding"], out["patches"]["Embedding"])
    # 198 frames: time columns 0..19 start inside the clip; tokens are frequency-major
    idx = [2 + f * 101 + t for f in range(12) for t in range(20)]
    assert A.signal_columns(198, A.CONFIG) == 20
    assert torch.allclose(out["signal"]["Encoder_1"], h[:, idx].mean(dim=1), atol=1e-6)
    assert torch.allclose(out["signal"]["Embedding"], patch[..., :20].mean(dim=(2, 3)),
                          atol=1e-6)


def test_fp16_autocast_changes_nothing_on_the_cpu(tmp_path, monkeypatch, mirror_root):
    ws = _fetched(tmp_path, monkeypatch, mirror_root)
    wave, layers = _noise(2.0)[None], fx.reduced_spec().layers
    fp16 = _runner(ws, precision="fp16_autocast")
    assert fp16.info()["effective_precision"] == "fp32"  # torch.cuda.amp.autocast: CUDA only
    with torch.inference_mode():
        a, b = _runner(ws).forward(wave, layers), fp16.forward(wave, layers)
    assert all(torch.equal(a[k], b[k]) for k in layers)


# --------------------------------------------------------------------------- Final head
def test_tuckute_random_head_replays_her_seed_0():
    head = A.tuckute_random_head(A.CONFIG)
    assert torch.equal(head["mlp_head.0.weight"], torch.ones(768))
    assert torch.equal(head["mlp_head.0.bias"], torch.zeros(768))
    assert tuple(head["mlp_head.1.weight"].shape) == (527, 768)
    # measured once: equal to the head of gretatuckute/ast ASTModel(audioset_pretrain=True)
    # built with timm 0.4.5 after torch.manual_seed(0) (torch 2.9.1, CPU)
    np.testing.assert_allclose(head["mlp_head.1.weight"][0, :4].numpy(),
                               [-0.0056835120, 0.0075255623, -0.0142132770, 0.0087338248],
                               rtol=0, atol=1e-9)
    np.testing.assert_allclose(head["mlp_head.1.bias"][:3].numpy(),
                               [-0.0356997252, -0.0202093218, 0.0296910685], rtol=0, atol=1e-9)
    assert (head["mlp_head.1.weight"].abs().max() <= 1 / 768**0.5).item()


def test_final_head_option(tmp_path, monkeypatch, mirror_root):
    ws = _fetched(tmp_path, monkeypatch, mirror_root)
    wave, layers = _noise(2.0)[None], fx.reduced_spec().layers
    random = _runner(ws, final_head="tuckute_random")
    head = A.tuckute_random_head(fx.config(True))
    assert all(torch.equal(random.net.state_dict()[k], v) for k, v in head.items())
    with torch.inference_mode():
        a, b = _runner(ws).forward(wave, layers), random.forward(wave, layers)
    assert all(torch.equal(a[k], b[k]) for k in layers if k != "Final")
    assert not torch.allclose(a["Final"], b["Final"])
    assert "random" in random.info()["final_head"]
