"""Dasheng loaders: synthetic checkpoints in the real containers, the CLI path, the package.

Equality with the ``dasheng`` 0.0.8 package's own ``Dasheng`` on the same random weights is
checked for every tapped layer (tolerance 1e-5, float32; measured 0 on CPU: same operations).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures import dasheng as F  # noqa: E402
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
from brainalign.models import dasheng as D  # noqa: E402
from brainalign.models.registry import get_spec  # noqa: E402

torch.set_num_threads(1)

BASE, FT, M06, M12 = "dasheng_base", "dasheng_base_ft-as", "dasheng_06B", "dasheng_12B"
PAPER_PARAMS = {BASE: 85_447_808, M06: 630_333_568, M12: 1_134_047_360, FT: 85_447_808}
PAPER_LAYERS = {BASE: 12, M06: 12, M12: 11, FT: 12}
PAPER_DIMS = {BASE: 768, M06: 1280, M12: 1536, FT: 768}
TOL = 1e-5


# --------------------------------------------------------------------------- helpers
def _workspace(tmp_path: Path, monkeypatch, mirror_root: Path, name: str = "ws"):
    root = tmp_path / name
    root.mkdir()
    return workspace(root, monkeypatch, mirror_root)


def _fetch(ws, model: str, files: dict, *, reduced: bool = True, github: bool = False) -> None:
    """Place files at their real URLs in the test mirror and fetch them (sha256 recorded)."""
    if reduced:
        override_spec(monkeypatch=ws._mp, spec=F.reduced_spec(model))
    if not (ws.root / "params.yaml").is_file():
        ws.params([model])
    urls = source_urls(model)
    for name, src in files.items():
        put(ws.mirror, urls[name], src)
    if github:
        ws.fetch_weights(model)  # the CLI: `brainalign fetch --group github --group weights`
    else:
        fetch(["weights"], ws.data, models=[model])  # the same code, without the stimuli


@pytest.fixture
def ws(tmp_path, monkeypatch, mirror_root):
    w = _workspace(tmp_path, monkeypatch, mirror_root)
    w._mp = monkeypatch
    return w


def _build(ws, model: str, **options):
    return D.build(get_spec(model), context(ws.data, model, ws.registry, **options))


def _package(path: Path, spec, ft: Path | None = None):
    """The package's model exactly as its constructors / README load it."""
    from dasheng.pretrained.pretrained import Dasheng

    size = {k: spec.config[k] for k in D.CONSTRUCTOR_KEYS}
    model = Dasheng.from_pretrained(str(path), **size)
    if ft is not None:
        model.load_state_dict(torch.load(ft, map_location="cpu", weights_only=True), strict=False)
    return model.eval()


def _package_layers(model, clip: torch.Tensor, depth: int) -> dict[str, torch.Tensor]:
    """{block index: (tokens, dim)} from forward hooks (chunks concatenated) + ``final``."""
    store: dict[int, list[torch.Tensor]] = {}
    hooks = [model.blocks[i].register_forward_hook(
        lambda _m, _i, out, i=i: store.setdefault(i, []).append(out)) for i in range(depth)]
    with torch.inference_mode():
        final = model(clip[None])
    for h in hooks:
        h.remove()
    out = {str(i): torch.cat(v, dim=1)[0] for i, v in store.items()}
    out["final"] = final[0]
    return out


def _clip(seconds: float, seed: int, amp: float = 0.1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * D.SAMPLE_RATE)
    t = torch.arange(n) / D.SAMPLE_RATE
    return (amp * (torch.randn(n, generator=g) * 0.3 + torch.sin(2 * torch.pi * 440 * t)))


def _assert_matches(runner, pkg, clip: torch.Tensor) -> float:
    """Every layer of the runner (tokens, both last-layer variants) vs the package."""
    depth = runner.config["depth"]
    ref = _package_layers(pkg, clip, depth)
    everything = [str(i) for i in range(depth)]
    ours = runner.token_outputs(clip, everything)
    worst = 0.0
    for key in everything:
        assert ours[key].shape == ref[key].shape
        worst = max(worst, float((ours[key] - ref[key]).abs().max()))
    runner.options["last_layer_norm"] = True
    normed = runner.token_outputs(clip, [str(depth - 1)])[str(depth - 1)]
    runner.options["last_layer_norm"] = False
    worst = max(worst, float((normed - ref["final"]).abs().max()))
    assert worst <= TOL, worst
    return worst


# --------------------------------------------------------------------------- real configurations
@pytest.mark.parametrize("model", [BASE, M06, M12, FT])
def test_real_configs_params_layers_dims(model) -> None:
    spec = get_spec(model)
    assert D.parameter_total(spec.config) == PAPER_PARAMS[model]
    assert len(spec.layers) == PAPER_LAYERS[model]
    assert spec.layers[-1] == str(spec.config["depth"] - 1)
    assert set(spec.paper_keys.values()) == {f"{model}_{k}" for k in spec.layers}
    with torch.device("meta"):
        enc = D.build_encoder(spec.config)
    assert enc.norm.weight.shape == (PAPER_DIMS[model],)
    assert enc.time_pos_embed.shape == (1, PAPER_DIMS[model], 1, 252)
    assert D.n_frames(32000) == 201 and D.n_tokens(32000) == 50
    assert D.n_tokens(16000) == 25 and D.n_frames(168499) == 1054
    assert spec.min_samples == 480 and D.n_tokens(480) == 1 and D.n_tokens(479) == 0


# --------------------------------------------------------------------------- CLI path
def test_cli_fetch_extract_base_and_finetuned(ws, tmp_path) -> None:
    files = F.write_files(FT, tmp_path / "files", reduced=True)
    override_spec(ws._mp, F.reduced_spec(BASE))
    ws.params([BASE, FT])
    _fetch(ws, FT, files, github=True)
    ws.fetch_weights(BASE)  # the same URL as the fine-tuned model's base: one mirror file
    acts = {m: ws.extract(m) for m in (BASE, FT)}
    for model, act in acts.items():
        spec = F.reduced_spec(model)
        assert act.layer_names == list(spec.layers) == ["0", "1"]
        for key, arr in act.layers.items():
            assert arr.shape == (165, 16) and np.isfinite(arr).all(), key
        meta = act.meta
        assert meta["paper_keys"] == {"0": f"{model}_0", "1": f"{model}_1"}
        recorded = meta["weights"]["files"]
        assert set(recorded) == set(D.FILES[model]) - {None}
        for info in recorded.values():
            assert len(info["sha256"]) == 64 and info["source"].startswith("https://zenodo.org/")
        run = meta["runner"]
        assert run["config"]["embed_dim"] == 16 and run["chunk_tokens"] == 252
        assert run["options"] == {"last_layer_norm": False, "pos_embed_mismatch": "error"}
        assert max(run["front_end_max_abs_diff"].values()) < 1e-6
    assert acts[BASE].meta["weights"]["files"]["dasheng_base.pt"]["sha256"] == \
        acts[FT].meta["weights"]["files"]["dasheng_base.pt"]["sha256"]
    overlay = acts[FT].meta["runner"]["overlay"]
    assert overlay["from_base"] == [] and len(overlay["classifier"]) == 4
    # The fine-tuned encoder replaced the pretrained one.
    assert not np.allclose(acts[BASE].layers["1"], acts[FT].layers["1"])


# --------------------------------------------------------------------------- package equality
def test_equals_package_reduced_chunked_and_batched(ws, tmp_path) -> None:
    files = F.write_files(M06, tmp_path / "files", reduced=True)
    _fetch(ws, M06, files)
    runner = _build(ws, M06)
    pkg = _package(files["dasheng_06b.pt"], runner.spec)
    # 2 s (one chunk, 50 tokens) and 12.3 s (1231 frames -> 307 tokens = 252 + 55 chunks).
    for seconds, tokens in ((2.0, 50), (12.3, 307)):
        clip = _clip(seconds, seed=3)
        assert runner.token_outputs(clip, ["0"])["0"].shape == (tokens, 24)
        _assert_matches(runner, pkg, clip)
    # A batch is run clip by clip: each row equals that clip alone (top_db per clip).
    loud, quiet = _clip(2.0, 4, amp=1.0), _clip(2.0, 5, amp=1e-4)
    batch = runner.forward(torch.stack([loud, quiet]), list(runner.layers))
    for row, clip in enumerate((loud, quiet)):
        alone = _package_layers(pkg, clip, 4)
        for key in runner.layers:
            assert torch.equal(batch[key][row], runner.forward(clip[None], [key])[key][0])
            assert float((batch[key][row] - alone[key].mean(0)).abs().max()) <= TOL


def test_equals_package_real_size_base(ws, tmp_path) -> None:
    files = F.write_files(BASE, tmp_path / "files", reduced=False)
    _fetch(ws, BASE, files, reduced=False)
    runner = _build(ws, BASE)
    pkg = _package(files["dasheng_base.pt"], runner.spec)
    clip = _clip(2.0, seed=7)
    worst = _assert_matches(runner, pkg, clip)
    out = runner.forward(clip[None], list(runner.layers))
    assert list(out) == [str(i) for i in range(12)]
    assert all(v.shape == (1, 768) for v in out.values())
    assert worst <= TOL


def test_finetuned_overlay_equals_readme_and_keeps_missing_base_keys(ws, tmp_path) -> None:
    files = F.write_files(FT, tmp_path / "files", reduced=True)
    ft = torch.load(files[D.FINETUNED], weights_only=True)
    dropped = [k for k in ft if k.startswith(("front_end.", "init_bn.", "blocks.1.mlp."))]
    for key in dropped:
        del ft[key]
    torch.save(ft, files[D.FINETUNED])
    _fetch(ws, FT, files)
    runner = _build(ws, FT)
    overlay = runner.info()["overlay"]
    assert overlay["from_base"] == sorted(dropped)
    assert overlay["from_finetuned"] == len(ft) - 4
    base = torch.load(files[D.CHECKPOINT], weights_only=True)["model"]
    state = runner.encoder.state_dict()
    for key in state:
        source = base if key in dropped else ft
        assert torch.equal(state[key], source[key]), key
    pkg = _package(files[D.CHECKPOINT], runner.spec, ft=files[D.FINETUNED])
    _assert_matches(runner, pkg, _clip(2.0, seed=8))


@pytest.mark.parametrize(("edit", "match"), [
    (lambda ft: ft.__setitem__("model.norm.weight", ft.pop("norm.weight")),
     r"unexpected key 'model\.norm\.weight'"),
    (lambda ft: ft.__setitem__("outputlayer.1.weight", torch.zeros(10, 16)),
     r"outputlayer.*misshapen key '1\.weight"),
    (lambda ft: ft.__setitem__("blocks.0.mlp.fc1.bias", torch.zeros(3)),
     r"misshapen key 'blocks\.0\.mlp\.fc1\.bias"),
    (lambda ft: [ft.pop(k) for k in list(ft) if not k.startswith("outputlayer.")],
     r"holds no encoder keys"),
])
def test_finetuned_file_errors(ws, tmp_path, edit, match) -> None:
    files = F.write_files(FT, tmp_path / "files", reduced=True)
    ft = torch.load(files[D.FINETUNED], weights_only=True)
    edit(ft)
    torch.save(ft, files[D.FINETUNED])
    _fetch(ws, FT, files)
    with pytest.raises(InputError, match=match) as err:
        _build(ws, FT)
    assert D.FINETUNED in str(err.value) and FT in str(err.value)


# --------------------------------------------------------------------------- strictness, safety
def test_renamed_key_fails_naming_key_file_and_model(ws, tmp_path) -> None:
    files = F.write_files(BASE, tmp_path / "files", reduced=True)
    dump = torch.load(files[D.CHECKPOINT], weights_only=True)
    dump["model"]["blocks.0.attn.qkv.w"] = dump["model"].pop("blocks.0.attn.qkv.weight")
    torch.save(dump, files[D.CHECKPOINT])
    _fetch(ws, BASE, files)
    with pytest.raises(InputError, match=r"missing key 'blocks\.0\.attn\.qkv\.weight'.*"
                       r"unexpected key 'blocks\.0\.attn\.qkv\.w'") as err:
        _build(ws, BASE)
    assert "dasheng_base.pt" in str(err.value) and f"model '{BASE}'" in str(err.value)


def test_truncated_file_fails_its_checksum_before_reading(ws, tmp_path, monkeypatch) -> None:
    files = F.write_files(FT, tmp_path / "files", reduced=True)
    _fetch(ws, FT, files)
    truncate(ws.data / "weights" / FT / D.FINETUNED)

    def no_load(*_a, **_k):
        raise AssertionError("deserialised before the checksum check")

    monkeypatch.setattr(torch, "load", no_load)
    with pytest.raises(InputError, match="weight checksum mismatch"):
        _build(ws, FT)  # the intact base file is not read either


def test_os_system_payload_is_refused(ws, tmp_path) -> None:
    files = F.write_files(BASE, tmp_path / "files", reduced=True)
    dump = torch.load(files[D.CHECKPOINT], weights_only=True)
    torch.save(add_payload(dump), files[D.CHECKPOINT])
    _fetch(ws, BASE, files)
    with pytest.raises(InputError, match=r"refusing to unpickle.*system"):
        _build(ws, BASE)


# --------------------------------------------------------------------------- config, pos embed
def test_config_checks() -> None:
    spec = get_spec(BASE)
    where = Path("dasheng_base.pt")
    cfg, notes = D.effective_config(F.file_config(768, 12, 12), spec, where)
    assert cfg == dict(spec.config) and notes["overridden"] == {}
    assert cfg["patch_size"] == (64, 4)
    # The constructor's num_heads wins over the file's, as in the package.
    cfg, notes = D.effective_config({**F.file_config(768, 12, 8), "mask_ratio": 0.75}, spec,
                                    where)
    assert cfg["num_heads"] == 12 and notes["overridden"] == {"num_heads": 8}
    assert notes["ignored"] == ["mask_ratio"]
    assert D.effective_config({}, spec, where)[0] == dict(spec.config)
    for bad, match in (({"embed_dim": 1280}, "embed_dim=1280"),
                       ({"target_length": 1000}, r"target_length=1000 \(expected 1008\)"),
                       ({"pooling": "token"}, "pooling='token'"),
                       ({"init_values": 0.1}, "init_values=0.1"),
                       ({"top_db": 80}, "top_db=80")):
        with pytest.raises(InputError, match=match):
            D.effective_config({**F.file_config(768, 12, 12), **bad}, spec, where)
    with pytest.raises(InputError, match="expected 'config' to be a dict"):
        D.effective_config("dasheng", spec, where)


def test_longer_time_pos_embed_is_an_error_or_cut_like_the_package(ws, tmp_path) -> None:
    files = F.write_files(BASE, tmp_path / "files", reduced=True)
    dump = torch.load(files[D.CHECKPOINT], weights_only=True)
    dump["model"]["time_pos_embed"] = torch.randn(1, 16, 1, 300) * 0.02
    torch.save(dump, files[D.CHECKPOINT])
    _fetch(ws, BASE, files)
    with pytest.raises(InputError, match=r"time_pos_embed \(1, 16, 1, 300\) differs.*"
                       r"extract\.options\.dasheng_base\.pos_embed_mismatch: truncate"):
        _build(ws, BASE)
    runner = _build(ws, BASE, pos_embed_mismatch="truncate")
    assert runner.info()["pos_embed_resized"] == {"time_pos_embed": [[1, 16, 1, 300],
                                                                     [1, 16, 1, 252]]}
    pkg = _package(files[D.CHECKPOINT], runner.spec)  # the package cuts it too (and prints)
    _assert_matches(runner, pkg, _clip(12.3, seed=9))


def test_shorter_time_pos_embed_fails_in_both_modes() -> None:
    shapes = {"time_pos_embed": (1, 16, 1, 252), "freq_pos_embed": (1, 16, 1, 1)}
    for mode, match in (("error", "differs"), ("truncate", "cannot be cut")):
        state = {"time_pos_embed": torch.zeros(1, 16, 1, 200),
                 "freq_pos_embed": torch.zeros(1, 16, 1, 1)}
        with pytest.raises(InputError, match=match):
            D.fit_pos_embed(state, shapes, mode, path=Path("f.pt"), model=BASE)


# --------------------------------------------------------------------------- runner behaviour
def test_two_runs_identical_min_samples_and_last_layer_norm(ws, tmp_path) -> None:
    files = F.write_files(BASE, tmp_path / "files", reduced=True)
    _fetch(ws, BASE, files)
    first, second = _build(ws, BASE), _build(ws, BASE)
    audio = torch.stack([_clip(2.0, 11), _clip(2.0, 12)])
    a = first.forward(audio, ["0", "1"])
    b = second.forward(audio, ["0", "1"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["1"].shape == (2, 16)
    # The option changes only the last block's vector: norm(block output), then the mean.
    normed = _build(ws, BASE, last_layer_norm=True).forward(audio, ["0", "1"])
    assert torch.equal(normed["0"], a["0"]) and not torch.allclose(normed["1"], a["1"])
    tokens = first.token_outputs(audio[0], ["1"])["1"]
    with torch.inference_mode():
        expected = first.encoder.norm(tokens).mean(0)
    assert torch.allclose(normed["1"][0], expected, atol=1e-6)
    assert first.token_outputs(_clip(0.03, 1), ["1"])["1"].shape == (1, 16)  # 480 samples
    with pytest.raises(InputError, match="gives no token"):
        first.forward(torch.zeros(1, first.min_samples - 1), ["0"])


@pytest.mark.parametrize(("options", "match"), [
    ({"last_layer_norm": "yes"}, r"extract\.options\.dasheng_base\.last_layer_norm: expected "
                                 r"true or false"),
    ({"pos_embed_mismatch": "resize"}, r"extract\.options\.dasheng_base\.pos_embed_mismatch: "
                                       r"expected one of \['error', 'truncate'\]"),
    ({"pooling": "mean"}, r"extract\.options\.dasheng_base\.pooling: unknown option"),
])
def test_bad_options(tmp_path, options, match) -> None:
    with pytest.raises(InputError, match=match):
        D.build(get_spec(BASE), context(tmp_path, BASE, None, **options))
