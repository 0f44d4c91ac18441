"""SepFormer (braindnn_sepformer): synthetic speechbrain/sepformer-whamr files through fetch and
extract, strict and safe loading, the paper's shapes and counts, and equality with speechbrain
0.5.16's own Encoder / SBTransformerBlock / Dual_Path_Model on the same random weights, layer by
layer (float32; tolerance 1e-5, measured max |diff| <= ~1e-7).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from brainalign.data.fetch import fetch as fetch_inputs
from brainalign.errors import InputError
from brainalign.models import hyperparams as HP
from brainalign.models import sepformer as S
from brainalign.models.extract import ExtractConfig, build_runner
from brainalign.models.weights import check_config, sha256_file

sys.path.insert(0, str(Path(__file__).parent))

import weights_helpers as H  # noqa: E402
from fixtures import sepformer as FX  # noqa: E402

MODEL = "braindnn_sepformer"
TOL = 1e-5


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _drop_published_prefix(registry: Path) -> None:
    """The Hub publishes masknet.ckpt's sha256 prefix: a synthetic file cannot match it."""
    data = json.loads(registry.read_text())
    for entry in data["weights"]:
        if entry["path"] == f"weights/{MODEL}/masknet.ckpt":
            entry.pop("sha256_prefix", None)
    registry.write_text(json.dumps(data, indent=1))


def _workspace(tmp_path: Path, monkeypatch: Any, mirror_root: Path, *, pe: bool = True,
               edit: Callable[[dict[str, Path]], None] | None = None, prefix: bool = False,
               fetch: bool = True) -> H.Workspace:
    tmp_path.mkdir(parents=True, exist_ok=True)
    # H.workspace copies default_registry_path(): with a workspace already set up in this
    # test that is the previous copy (hashes recorded), not the committed registry
    monkeypatch.delenv("BRAINALIGN_REGISTRY", raising=False)
    ws = H.workspace(tmp_path, monkeypatch, mirror_root)
    ws.params([MODEL], extract={"device": "cpu", "threads": 1})
    if not prefix:
        _drop_published_prefix(ws.registry)
    paths = FX.write_files(MODEL, tmp_path / "files", reduced=True, pe=pe)
    if edit is not None:
        edit(paths)
    urls = H.source_urls(MODEL)
    assert sorted(urls) == sorted(S.FILES)
    for name, path in paths.items():
        H.put(ws.mirror, urls[name], path)
    H.override_spec(monkeypatch, FX.reduced_spec())
    if fetch:  # the fetch code path, weights group only (the CLI would also simulate data)
        fetch_inputs(["weights"], ws.data, ws.mirror, ws.registry, models=[MODEL])
    return ws


def _build(ws: H.Workspace, **options: Any) -> Any:
    return S.build(FX.reduced_spec(), H.context(ws.data, MODEL, ws.registry, **options))


def _clip(seconds: float = 2.0, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(1, int(seconds * S.SAMPLE_RATE), generator=gen)


# --------------------------------------------------------------------------- CLI path
def test_cli_fetch_and_extract_the_165_sounds(tmp_path, monkeypatch, mirror_root) -> None:
    ws = _workspace(tmp_path, monkeypatch, mirror_root, fetch=False)
    ws.fetch_weights(MODEL)
    acts = ws.extract(MODEL)
    spec = FX.reduced_spec()
    assert acts.layer_names == list(spec.layers) == ["Embedding", *(f"Encoder_{i}"
                                                                     for i in range(1, 5))]
    for name, arr in acts.layers.items():
        assert arr.shape == (165, 16), name
        assert np.isfinite(arr).all() and arr.std() > 0, name
    assert (acts.layers["Embedding"] >= 0).all()  # post-ReLU by default
    files = acts.meta["weights"]["files"]
    for name in S.FILES:
        assert files[name]["sha256"] == sha256_file(ws.data / "weights" / MODEL / name)
        assert files[name]["hf_repo"] == S.HF_REPO
    assert acts.meta["sample_rate"] == 8000 and acts.meta["paper_keys"] == dict(spec.paper_keys)
    runner = acts.meta["runner"]
    assert runner["pe"] == "stored" and runner["pe_max_abs_diff"] == 0.0
    assert runner["options"] == {"embedding": "post_relu"}
    assert runner["config"]["masknet.K"] == 250


def test_the_published_prefix_refuses_a_synthetic_masknet(tmp_path, monkeypatch,
                                                          mirror_root) -> None:
    ws = _workspace(tmp_path, monkeypatch, mirror_root, prefix=True, fetch=False)
    with pytest.raises(InputError, match="publishes the prefix 897fc2de"):
        fetch_inputs(["weights"], ws.data, ws.mirror, ws.registry, models=[MODEL])


# --------------------------------------------------------------------------- safe, strict loading
def test_renamed_key_fails_naming_key_file_and_model(tmp_path, monkeypatch, mirror_root) -> None:
    key = "dual_mdl.1.inter_mdl.mdl.layers.0.pos_ffn.ffn.3.weight"

    def rename(paths: dict[str, Path]) -> None:
        state = torch.load(paths["masknet.ckpt"], weights_only=True)
        state[key.replace("ffn.3", "ffn.4")] = state.pop(key)
        torch.save(state, paths["masknet.ckpt"])

    ws = _workspace(tmp_path, monkeypatch, mirror_root, edit=rename)
    with pytest.raises(InputError) as err:
        _build(ws)
    msg = str(err.value)
    assert f"missing key '{key}'" in msg and "unexpected key" in msg
    assert "masknet.ckpt" in msg and MODEL in msg


def test_truncated_file_fails_its_checksum(tmp_path, monkeypatch, mirror_root) -> None:
    ws = _workspace(tmp_path, monkeypatch, mirror_root)
    H.truncate(ws.data / "weights" / MODEL / "masknet.ckpt")
    with pytest.raises(InputError, match="checksum mismatch"):
        _build(ws)


def test_os_system_payload_is_refused(tmp_path, monkeypatch, mirror_root) -> None:
    def poison(paths: dict[str, Path]) -> None:
        torch.save(H.add_payload(FX.masknet_state(FX.reduced_config())), paths["masknet.ckpt"])

    ws = _workspace(tmp_path, monkeypatch, mirror_root, edit=poison)
    with pytest.raises(InputError, match="refusing to unpickle"):
        _build(ws)


def test_masknet_with_or_without_pe_gives_the_same_model(tmp_path, monkeypatch,
                                                         mirror_root) -> None:
    with_pe = _build(_workspace(tmp_path / "a", monkeypatch, mirror_root, pe=True))
    without = _build(_workspace(tmp_path / "b", monkeypatch, mirror_root, pe=False))
    assert with_pe.info()["pe"] == "stored" and without.info()["pe"] == "computed"
    x = _clip(0.5)
    layers = list(FX.reduced_spec().layers)
    with torch.inference_mode():
        a, b = with_pe.forward(x, layers), without.forward(x, layers)
    for k in layers:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_a_stored_pe_that_is_not_the_sinusoid_is_refused(tmp_path, monkeypatch,
                                                         mirror_root) -> None:
    def shift(paths: dict[str, Path]) -> None:
        state = torch.load(paths["masknet.ckpt"], weights_only=True)
        state["dual_mdl.0.inter_mdl.pos_enc.pe"] += 0.01
        torch.save(state, paths["masknet.ckpt"])

    ws = _workspace(tmp_path, monkeypatch, mirror_root, edit=shift)
    with pytest.raises(InputError, match="not the sinusoidal one"):
        _build(ws)


# --------------------------------------------------------------------------- hyperparams.yaml
def test_hyperparams_are_read_as_data_and_checked(tmp_path) -> None:
    real = S.make_config()
    path = tmp_path / "hyperparams.yaml"
    path.write_text(FX.hyperparams_text(real))
    hp = HP.read_hyperparams(path)
    assert hp["Encoder"] == HP.HNode("new", S.ENCODER_CLASS,
                                    {"kernel_size": 16, "out_channels": 256})
    found = S.config_from_hyperparams(hp, str(path))
    assert found == real == dict(S.SPECS[0].config)
    check_config(found, S.SPECS[0].config, path=path, model=MODEL)
    # another chunk size is a different model
    path.write_text(FX.hyperparams_text(real).replace("K: 250", "K: 200"))
    with pytest.raises(InputError, match=r"config is not that of .*masknet\.K=200"):
        check_config(S.config_from_hyperparams(HP.read_hyperparams(path), str(path)),
                     S.SPECS[0].config, path=path, model=MODEL)
    # an argument the port does not know is refused, not ignored
    path.write_text(FX.hyperparams_text(real).replace("norm_before: true",
                                                      "norm_before: true\n    causal: true", 1))
    with pytest.raises(InputError, match="does not know"):
        S.config_from_hyperparams(HP.read_hyperparams(path), str(path))


def test_hyperparams_tags_never_run(tmp_path) -> None:
    path = tmp_path / "hyperparams.yaml"
    path.write_text("Encoder: !new:os.system\n    command: echo pwned\n"
                    "modules:\n    encoder: !ref <Encoder>\n    masknet: !ref <Encoder>\n")
    hp = HP.read_hyperparams(path)  # inert: the tag is kept as text
    assert hp["Encoder"] == HP.HNode("new", "os.system", {"command": "echo pwned"})
    with pytest.raises(InputError, match="expected !new:speechbrain.lobes.models.dual_path"):
        S.config_from_hyperparams(hp, str(path))
    path.write_text("x: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(InputError, match="not a readable hyperparams file"):
        HP.read_hyperparams(path)


# --------------------------------------------------------------------------- the paper's numbers
def test_parameter_counts_of_the_real_configuration() -> None:
    assert S.parameter_counts() == {"encoder": 4_096, "masknet": 25_671_169}


def test_layers_keys_dims_and_frames_of_the_real_model() -> None:
    cfg = S.make_config()
    n = S.nets()
    with torch.device("meta"):
        encoder, masknet = n.Encoder(cfg), n.MaskNet(cfg)
    assert S.spec_layers(cfg) == S.LAYERS and len(S.LAYERS) == 33
    # the paper's keys are Tuckute's str(module)--<call index>, rebuilt from our modules
    assert f"{encoder.conv1d}--0" == S.PAPER_KEYS["Embedding"]
    taps = [masknet.dual_mdl[b].get_submodule(f"{side}_mdl").mdl.layers[i].pos_ffn.ffn[3]
            for b, side, i in S.layer_order(cfg)]
    assert [f"{m}--{k}" for k, m in enumerate(taps)] == [S.PAPER_KEYS[f"Encoder_{k}"]
                                                         for k in range(1, 33)]
    assert {encoder.conv1d.out_channels, *(m.out_features for m in taps)} == {256}
    assert S.layer_order(cfg)[:9:8] == [(0, "intra", 0), (0, "inter", 0)]
    assert S.layer_order(cfg)[16] == (1, "intra", 0) and S.layer_order(cfg)[31] == (1, "inter", 7)
    # 2 s at 8 kHz: 1999 encoder frames, 126 frames of end padding, 18 chunks of 250
    frames = S.encoder_frames(16_000)
    assert frames == 1999 and S.chunking(frames, 250) == (126, 18)
    assert round(2 * frames / (18 * 250), 3) == 0.888  # real entries among the averaged ones


def test_reduced_model_chunks_a_2s_clip_and_is_deterministic(tmp_path, monkeypatch,
                                                             mirror_root) -> None:
    runner = _build(_workspace(tmp_path, monkeypatch, mirror_root))
    with torch.inference_mode():
        emb = torch.relu(runner.encoder(_clip()))
        assert emb.shape == (1, 16, 1999)
        chunks, gap = runner.masknet.segment(emb)
        assert chunks.shape == (1, 16, 250, 18) and gap == 126
        torch.testing.assert_close(runner.masknet.overlap_add(chunks, gap), 2 * emb)
        layers = list(runner.layers)
        first, second = runner.forward(_clip(), layers), runner.forward(_clip(), layers)
        subset = runner.forward(_clip(), ["Encoder_2"])  # stops after block 0 inter
    for k in layers:
        assert torch.equal(first[k], second[k]), k
    assert torch.equal(subset["Encoder_2"], first["Encoder_2"])


def test_embedding_option_and_bad_options(tmp_path, monkeypatch, mirror_root) -> None:
    ws = _workspace(tmp_path, monkeypatch, mirror_root)
    post, pre = _build(ws), _build(ws, embedding="pre_relu")
    x = _clip(0.5)
    with torch.inference_mode():
        a, b = post.forward(x, ["Embedding"])["Embedding"], pre.forward(x, ["Embedding"])
        conv = torch.nn.functional.conv1d(x[:, None], pre.encoder.conv1d.weight, stride=8)
    torch.testing.assert_close(b["Embedding"], conv.mean(-1))
    torch.testing.assert_close(a, torch.relu(conv).mean(-1))
    assert pre.info()["options"] == {"embedding": "pre_relu"}
    for opts, key in (({"embedding": "relu"}, "embedding"), ({"pooling": "mean"}, "pooling")):
        with pytest.raises(InputError, match=rf"extract\.options\.{MODEL}\.{key}"):
            build_runner(MODEL, ExtractConfig(models=(MODEL,), options={MODEL: opts}))


# --------------------------------------------------------------------------- vs speechbrain 0.5.16
def _sb_masknet(cfg: dict[str, Any]) -> Any:
    from speechbrain.lobes.models import dual_path as dp

    def block(side: str) -> Any:
        return dp.SBTransformerBlock(
            cfg[f"{side}.num_layers"], cfg[f"{side}.d_model"], cfg[f"{side}.nhead"],
            cfg[f"{side}.d_ffn"], dropout=0, use_positional_encoding=True, norm_before=True)

    return dp.Dual_Path_Model(
        cfg["masknet.in_channels"], cfg["masknet.out_channels"], block("intra"), block("inter"),
        num_layers=cfg["masknet.num_layers"], norm="ln", K=cfg["masknet.K"],
        num_spks=cfg["masknet.num_spks"], skip_around_intra=True,
        linear_layer_after_inter_intra=False).eval()


def _sb_taps(sb: Any, emb: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Tuckute's reduction: every Linear(d_ffn -> d) output, mean over axis 1 then axis 0."""
    store: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: store.append(out.mean(1).mean(0)))
             for name, m in sb.named_modules() if name.endswith("pos_ffn.ffn.3")]
    try:
        masks = sb(emb)
    finally:
        for h in hooks:
            h.remove()
    return store, masks


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def test_equals_speechbrain_on_the_fetched_files(tmp_path, monkeypatch, mirror_root) -> None:
    from speechbrain.lobes.models import dual_path as dp

    ws = _workspace(tmp_path, monkeypatch, mirror_root)
    runner = _build(ws)
    folder = ws.data / "weights" / MODEL
    cfg = FX.reduced_config()
    sb_enc = dp.Encoder(kernel_size=16, out_channels=16).eval()
    sb_enc.load_state_dict(torch.load(folder / "encoder.ckpt", weights_only=True), strict=True)
    sb = _sb_masknet(cfg)
    sb.load_state_dict(torch.load(folder / "masknet.ckpt", weights_only=True), strict=True)
    x = _clip()
    with torch.inference_mode():
        ours = runner.forward(x, list(runner.layers))
        emb = sb_enc(x)
        taps, masks = _sb_taps(sb, emb)
        our_masks = runner.masknet(torch.relu(runner.encoder(x)))
    assert _max_diff(ours["Embedding"][0], emb[0].mean(-1)) < TOL
    assert len(taps) == 4
    for i, ref in enumerate(taps, start=1):
        assert _max_diff(ours[f"Encoder_{i}"][0], ref) < TOL, i
    assert masks.shape == (2, 1, 16, 1999) and _max_diff(our_masks, masks) < TOL


def test_equals_speechbrain_at_the_real_size() -> None:
    """Real whamr config, 0.5 s (499 frames, 6 chunks): the fixture's keys load strictly into
    speechbrain's Dual_Path_Model; every one of the 32 taps and the masks agree."""
    from speechbrain.lobes.models import dual_path as dp

    cfg = S.make_config()
    state = FX.masknet_state(cfg, seed=3)
    enc_state = FX.encoder_state(cfg, seed=3)
    sb = _sb_masknet(cfg)
    assert list(sb.state_dict()) == list(state)  # same keys, same order
    sb.load_state_dict(state, strict=True)
    sb_enc = dp.Encoder(kernel_size=16, out_channels=256).eval()
    sb_enc.load_state_dict(enc_state, strict=True)
    n = S.nets()
    with torch.device("meta"):
        encoder, masknet = n.Encoder(cfg), n.MaskNet(cfg)
    encoder.load_state_dict(enc_state, strict=True, assign=True)
    info = S.load_masknet(masknet, state, cfg, Path("masknet.ckpt"), MODEL)
    assert info == {"pe": "stored", "pe_max_abs_diff": 0.0}
    masknet.eval()
    x = _clip(0.5, seed=1)
    with torch.inference_mode():
        emb = sb_enc(x)
        ours_emb = torch.relu(encoder(x))
        taps, masks = _sb_taps(sb, emb)
        mine: list[dict[str, list[torch.Tensor]]] = []
        masknet.dual_path(ours_emb, mine)
        our_masks = masknet(ours_emb)
    assert emb.shape == (1, 256, 499) and _max_diff(ours_emb, emb) < TOL
    flat = [t[0] for block in mine for side in ("intra", "inter") for t in block[side]]
    assert len(flat) == len(taps) == 32
    assert max(_max_diff(a, b) for a, b in zip(flat, taps, strict=True)) < TOL
    assert _max_diff(our_masks, masks) < TOL


def test_sbtransformerblock_equals_speechbrain() -> None:
    from speechbrain.lobes.models import dual_path as dp

    torch.manual_seed(0)
    sb = dp.SBTransformerBlock(2, 16, 2, 32, dropout=0, use_positional_encoding=True,
                               norm_before=True).eval()
    with torch.no_grad():
        for p in sb.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ours = S.nets().SBTransformerBlock(2, 16, 2, 32, 0.0)
    state = sb.state_dict()
    ours.pos_enc.set_table(state.pop("pos_enc.pe"))
    ours.load_state_dict(state, strict=True)
    ours.eval()
    x = torch.randn(3, 40, 16)
    with torch.inference_mode():
        assert _max_diff(ours(x), sb(x)) < TOL
