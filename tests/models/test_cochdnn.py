"""CochDNN loaders (CochResNet50, CochCNN9): the lab tar, the container, strict loading, shapes.

No PyPI package implements these networks (torchvision is not installed), so the ResNet is
checked by parameter counts and map shapes, the CNN's TF-style "same" padding against a brute
force of its defining rule, and both by the paper's per-layer dimensions on real-size models.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures import cochdnn as F  # noqa: E402
from weights_helpers import (  # noqa: E402
    add_payload,
    override_spec,
    source_urls,
    truncate,
    workspace,
)

from brainalign.data.fetch import fetch, mirror_path  # noqa: E402
from brainalign.errors import InputError  # noqa: E402
from brainalign.models import cochdnn as C  # noqa: E402
from brainalign.models.extract import ExtractConfig, build_runner  # noqa: E402
from brainalign.models.registry import get_spec  # noqa: E402
from brainalign.models.weights import parameter_count, safe_load  # noqa: E402

torch.set_num_threads(1)

RESNET_MT = "braindnn_resnet50_word_speaker_audioset"
RESNET_WORD = "braindnn_resnet50_word"
KELL_WORD = "braindnn_kell2018_word"
KELL_MT = "braindnn_kell2018_word_speaker_audioset"
MODELS = [s.name for s in C.SPECS]
TAR_URL = "https://mcdermottlab.mit.edu/cochdnn/cochdnn_model_checkpoints.tar"

# paper-models section 2 ("length") and sections 3.5 / 3.6 (map shapes for one 2-s clip)
PAPER_DIMS = {
    "resnet": [6784, 3392, 13568, 13824, 14336, 14336, 2048],
    "kell2018": [6816, 3456, 4608, 2304, 4608, 9216, 4608, 2560, 4096],
}
PAPER_SHAPES = {
    "resnet": [(64, 106, 195), (64, 53, 98), (256, 53, 98), (512, 27, 49), (1024, 14, 25),
               (2048, 7, 13), (2048, 1, 1)],
    "kell2018": [(96, 71, 130), (96, 36, 65), (256, 18, 33), (256, 9, 17), (512, 9, 17),
                 (1024, 9, 17), (512, 9, 17), (512, 5, 9), (4096,)],
}
# Trunk parameters (heads excluded). ResNet: torchvision's resnet50 has 25,557,032; minus its
# fc (2048*1000 + 1000) and minus 2*64*7*7 for conv1 taking 1 channel instead of 3.
RESNET_PARAMS = 25_557_032 - (2048 * 1000 + 1000) - 2 * 64 * 7 * 7
KELL_PARAMS = (2 * (1 + 96 + 256)  # batchnorm0-2
               + 96 * 1 * 7 * 14 + 256 * 96 * 4 * 8 + 512 * 256 * 2 * 5
               + 1024 * 512 * 2 * 5 + 512 * 1024 * 2 * 5  # conv0-4, no bias
               + 23040 * 4096 + 4096)  # fullyconnected
HEAD_PARAMS = {"word": 794, "multi": 794 + 433 + 517}


# --------------------------------------------------------------------------- helpers
def _clip(seconds: float, seed: int, amp: float = 0.1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * C.SAMPLE_RATE)
    t = torch.arange(n) / C.SAMPLE_RATE
    return amp * (torch.randn(n, generator=g) * 0.3 + torch.sin(2 * torch.pi * 440 * t))


def _runner(model: str, ckpt: dict | None = None, level: str = "tuckute") -> C.CochDNNRunner:
    """A runner from an in-memory reduced checkpoint (the loader's own parsing and checks)."""
    ckpt = ckpt if ckpt is not None else F.checkpoint(model, reduced=True)
    return C.load_runner(F.reduced_spec(model), ckpt, "mem.pt", torch.device("cpu"), level)


def _real_size(model: str) -> C.CochDNNRunner:
    """A real-size network with seeded random weights (no file: the CNN's FC is 94M values)."""
    spec = get_spec(model)
    with torch.device("meta"):
        net = C.build_network(spec.config)
    net = net.to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.ndim > 1:
                p.normal_(0.0, (2.0 / p[0].numel()) ** 0.5, generator=g)
            else:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
        for name, b in net.named_buffers():
            b.fill_(1 if name.endswith("running_var") else 0)
    return C.CochDNNRunner(spec, torch.device("cpu"), net, "tuckute")


@pytest.fixture
def ws(tmp_path, monkeypatch, mirror_root):
    return workspace(tmp_path, monkeypatch, mirror_root)


def _put_tar(ws, files: dict[str, Path | bytes]) -> Path:
    """The lab tar at its URL in the test mirror, holding the given models' members."""
    return F.write_tar(mirror_path(TAR_URL, ws.mirror), files)


def _fetched(ws, tmp_path: Path, monkeypatch, model: str, ckpt: dict | None = None) -> Path:
    """A reduced checkpoint of ``model`` in the tar, fetched (weights only); returns the file."""
    override_spec(monkeypatch, F.reduced_spec(model))
    src = tmp_path / "src" / C.CHECKPOINT
    src.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt if ckpt is not None else F.checkpoint(model, reduced=True), src)
    _put_tar(ws, {model: src})
    fetch(["weights"], ws.data, models=[model])
    return ws.data / "weights" / model / C.CHECKPOINT


def _build(ws, model: str, **options):
    config = ExtractConfig(models=(model,), options={model: options} if options else {})
    return build_runner(model, config, data_root=ws.data)


# --------------------------------------------------------------------------- the CLI path
def test_cli_fetches_one_member_and_extracts_the_165_sounds(ws, tmp_path, monkeypatch) -> None:
    model, other = RESNET_MT, KELL_WORD
    spec = F.reduced_spec(model)
    override_spec(monkeypatch, spec)
    files = {m: F.write_files(m, tmp_path / m, reduced=True, seed=i)[C.CHECKPOINT]
             for i, m in enumerate((model, other))}
    assert source_urls(model) == {C.CHECKPOINT: TAR_URL}
    _put_tar(ws, files)
    ws.params([model])
    ws.fetch_weights(model)
    path = ws.data / "weights" / model / C.CHECKPOINT
    assert path.read_bytes() == files[model].read_bytes()
    assert not (ws.data / "weights" / other).exists()  # only the needed member is extracted

    acts = ws.extract(model)
    width = spec.config["stem_width"]
    dims = [width * 106, width * 53, 4 * width * 53, 8 * width * 27, 16 * width * 14,
            32 * width * 7, 32 * width]
    assert acts.layer_names == list(C.RESNET50_LAYERS)
    assert [acts.layers[k].shape for k in acts.layer_names] == [(165, d) for d in dims]
    assert all(np.isfinite(v).all() and v.std() > 0 for v in acts.layers.values())
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    info = acts.meta["weights"]["files"][C.CHECKPOINT]
    assert info["sha256"] == sha and info["source"] == TAR_URL
    assert info["member"].endswith("542752d7-9849-49ff-b84a-6758a81585b4/5_checkpoint.pt")
    registry = json.loads(ws.registry.read_text())
    members = {m["path"]: m["sha256"] for e in registry["weights"] for m in e.get("members", [])}
    assert members[f"weights/{model}/{C.CHECKPOINT}"] == sha
    assert members[f"weights/{other}/{C.CHECKPOINT}"] is None
    runner = acts.meta["runner"]
    assert runner["input_level"] == "tuckute" and runner["signal_samples"] == 40000
    assert runner["heads_dropped"] == C.MULTI_HEADS and runner["checkpoint_epoch"] == 5
    assert len(runner["cochleagram_buffers_checked"]) == 3
    assert acts.meta["paper_keys"]["layer4"] == f"{model}_layer4"


# --------------------------------------------------------------------------- files and keys
def test_a_renamed_key_names_the_key_the_file_and_the_model(ws, tmp_path, monkeypatch) -> None:
    ckpt = F.checkpoint(KELL_WORD, reduced=True)
    sd = ckpt["model"]
    for key in ("module.model.1.conv3.weight", "module.attacker.model.1.conv3.weight"):
        sd[key.replace("conv3.weight", "conv3.weights")] = sd.pop(key)
    path = _fetched(ws, tmp_path, monkeypatch, KELL_WORD, ckpt)
    with pytest.raises(InputError) as err:
        _build(ws, KELL_WORD)
    msg = str(err.value)
    assert "missing key 'model.1.conv3.weight'" in msg
    assert "unexpected key 'model.1.conv3.weights'" in msg
    assert str(path) in msg and KELL_WORD in msg


def test_a_truncated_file_fails_its_checksum_before_loading(ws, tmp_path, monkeypatch) -> None:
    path = _fetched(ws, tmp_path, monkeypatch, RESNET_WORD)
    assert _build(ws, RESNET_WORD).info()["heads_dropped"] == C.WORD_HEADS  # intact: loads
    truncate(path)

    def never(*_a, **_k):
        raise AssertionError("deserialised before the checksum check")

    monkeypatch.setattr(C, "safe_load", never)
    with pytest.raises(InputError, match="checksum mismatch"):
        _build(ws, RESNET_WORD)


def test_an_os_system_payload_is_refused(ws, tmp_path, monkeypatch) -> None:
    import os

    ckpt = add_payload(F.checkpoint(KELL_MT, reduced=True))
    _fetched(ws, tmp_path, monkeypatch, KELL_MT, ckpt)  # the sha256 is recorded: it is trusted

    def ran(*_a, **_k):
        raise AssertionError("the payload ran")

    monkeypatch.setattr(os, "system", ran)
    with pytest.raises(InputError, match="refusing to unpickle.*system"):
        _build(ws, KELL_MT)


def _edit(model: str, edit) -> dict:
    ckpt = F.checkpoint(model, reduced=True)
    edit(ckpt, ckpt["model"])
    return ckpt


def _perturb(sd: dict, key: str) -> None:
    sd[f"module.{key}"] = sd[f"module.{key}"].clone()
    sd[f"module.{key}"].view(-1)[sd[f"module.{key}"].numel() // 2] += 1e-3
    sd[f"module.attacker.{key}"] = sd[f"module.{key}"]


COCH = C.COCH_FILTERS_KEY
DOWN = C.DOWNSAMPLE_KEYS[1]


@pytest.mark.parametrize(("edit", "match"), [
    (lambda c, sd: _perturb(sd, COCH), f"cochleagram buffer '{COCH}' differs"),
    (lambda c, sd: _perturb(sd, DOWN), f"cochleagram buffer '{DOWN}' differs"),
    (lambda c, sd: sd.__setitem__("module.attacker.model.1.conv1.weight",
                                  sd["module.model.1.conv1.weight"] + 1),
     "'module.attacker.model.1.conv1.weight' differs from 'module.model.1.conv1.weight'"),
    (lambda c, sd: sd.pop("module.attacker.model.1.bn1.bias"),
     "key 'module.model.1.bn1.bias' has no 'attacker.' twin"),
    (lambda c, sd: sd.update({"module.model.0.full_rep.rep.extra": torch.zeros(1),
                              "module.attacker.model.0.full_rep.rep.extra": torch.zeros(1)}),
     "unexpected cochleagram key 'module.model.0.full_rep.rep.extra'"),
    (lambda c, sd: sd.update({"module.audio_rep_transform.x": torch.zeros(1),
                              "module.attacker.audio_rep_transform.x": torch.zeros(1)}),
     "unexpected state-dict key 'module.audio_rep_transform.x'"),
    (lambda c, sd: sd.__setitem__("model.1.fc.bias", torch.zeros(1)),
     "key 'model.1.fc.bias' lacks the DataParallel prefix"),
    (lambda c, sd: [sd.pop(f"module.{a}model.1.fc.noise/labels_binary_via_int.{p}")
                    for a in ("", "attacker.") for p in ("weight", "bias")],
     "config is not that of .*heads="),
    (lambda c, sd: [sd.pop(f"module.{a}{k}") for a in ("", "attacker.") for k in (COCH,)],
     "cochleagram buffers missing"),
    (lambda c, sd: c.pop("epoch"), r"missing \['epoch'\]"),
])
def test_every_key_is_accounted_for(edit, match) -> None:
    with pytest.raises(InputError, match=match):
        _runner(RESNET_MT, _edit(RESNET_MT, edit))


def test_misshapen_and_wrong_head_sizes_are_named() -> None:
    def shrink(c, sd):
        for a in ("", "attacker."):
            sd[f"module.{a}model.1.conv2.weight"] = sd[f"module.{a}model.1.conv2.weight"][:1]

    with pytest.raises(InputError, match=r"misshapen key 'model.1.conv2.weight \(1, 4, 2, 5\)"):
        _runner(KELL_WORD, _edit(KELL_WORD, shrink))
    # a multi-task file offered as the word model: three heads instead of one
    mt = F.checkpoint(KELL_MT, reduced=True)
    with pytest.raises(InputError, match=r"heads=\{'signal/word_int': 794"):
        _runner(KELL_WORD, mt)


def test_stored_buffers_are_shared_and_the_copies_alias(tmp_path) -> None:
    """The synthetic file is written as torch.save writes the real one: one storage per tensor."""
    path = F.write_files(RESNET_WORD, tmp_path, reduced=True)[C.CHECKPOINT]
    size = path.stat().st_size
    assert 33.7e6 < size < 35e6  # the 211 x 20001 x 2 filters once, not four times
    sd = safe_load(path)["model"]
    a, b = sd["module.model.1.conv1.weight"], sd["module.attacker.model.1.conv1.weight"]
    assert a.data_ptr() == b.data_ptr()


# --------------------------------------------------------------------------- architectures
@pytest.mark.parametrize("model", MODELS)
def test_specs_weights_and_parameter_counts(model) -> None:
    spec = get_spec(model)
    arch, task = spec.config["arch"], model.split("_", 2)[2]
    assert spec.layers == (C.RESNET50_LAYERS if arch == "resnet" else C.KELL2018_LAYERS)
    assert len(spec.layers) == len(PAPER_DIMS[arch])
    assert spec.paper_keys == {k: f"{model}_{k}" for k in spec.layers}
    assert spec.sample_rate == 20000 and spec.min_samples == 1 and spec.fetched
    assert spec.options == {"input_level": "tuckute"}
    assert spec.config["heads"] == (C.WORD_HEADS if task == "word" else C.MULTI_HEADS)
    assert source_urls(model) == {C.CHECKPOINT: TAR_URL}
    trunk = parameter_count(lambda: C.build_network(spec.config))
    assert trunk == (RESNET_PARAMS if arch == "resnet" else KELL_PARAMS)
    # the fixture's independent key list gives the same count, and the heads on top
    keys = (F.resnet_keys(64, (3, 4, 6, 3), spec.config["heads"]) if arch == "resnet"
            else F.kell_keys((96, 256, 512, 1024, 512), 4096, spec.config["heads"]))
    params = {k: int(np.prod(s)) for k, s, kind in keys if kind not in ("mean", "var", "count")}
    feat = 2048 if arch == "resnet" else 4096
    heads = HEAD_PARAMS["word" if task == "word" else "multi"] * (feat + 1)
    assert sum(params.values()) == trunk + heads


@pytest.mark.parametrize("model", [RESNET_WORD, KELL_MT])
def test_real_size_maps_and_dims_of_a_2s_clip(model) -> None:
    runner = _real_size(model)
    arch = runner.arch
    clip = _clip(2.0, 1)[None]
    with torch.inference_mode():
        coch = runner.cochleagram(clip)
        maps = runner.maps(clip, runner.layers)
        vectors = runner.forward(clip, runner.layers)
    assert coch.shape == (1, 1, 211, 390)
    assert [tuple(m.shape[1:]) for m in maps.values()] == PAPER_SHAPES[arch]
    assert [v.shape[1] for v in vectors.values()] == PAPER_DIMS[arch]
    assert all(torch.isfinite(v).all() for v in vectors.values())
    first = runner.layers[0]  # time mean, channel-major flatten (c * F + f)
    np.testing.assert_allclose(vectors[first][0].numpy(),
                               maps[first][0].mean(dim=-1).reshape(-1).numpy(), rtol=1e-6)
    assert vectors[first][0, 1] == pytest.approx(float(maps[first][0, 0, 1].mean()), rel=1e-5)


def _brute_same(n: int, k: int, s: int) -> tuple[int, int]:
    """The least total padding that gives ceil(n / s) outputs, smaller half first."""
    want = -(-n // s)
    total = next(p for p in range(k + s) if (n + p - k) // s + 1 >= want)
    return total // 2, total - total // 2


def test_same_padding_rule_and_the_paper_pads() -> None:
    for n in range(1, 60):
        for k in range(1, 9):
            for s in range(1, 4):
                assert C.same_padding(n, k, s) == _brute_same(n, k, s), (n, k, s)
    # paper-models 3.6 (H; W): conv0 on 211 x 390, maxpool0, conv1, maxpool1, conv2-4, avgpool
    assert C.same_padding(211, 7, 3) == (3, 3) and C.same_padding(390, 14, 3) == (5, 6)
    assert C.same_padding(71, 2, 2) == (0, 1) and C.same_padding(130, 5, 2) == (1, 2)
    assert C.same_padding(36, 4, 2) == (1, 1) and C.same_padding(65, 8, 2) == (3, 4)
    assert C.same_padding(18, 2, 2) == (0, 0) and C.same_padding(33, 5, 2) == (2, 2)
    assert C.same_padding(9, 2, 1) == (0, 1) and C.same_padding(17, 5, 1) == (2, 2)
    assert C.same_padding(9, 2, 2) == (0, 1) and C.same_padding(17, 5, 2) == (2, 2)


def test_pools_pad_with_minus_inf_and_counted_zeros() -> None:
    with torch.device("meta"):
        net = C.build_network(F.reduced_spec(KELL_WORD).config)
    steps = dict(C.kell_steps(net))
    neg = torch.full((1, 1, 9, 17), -3.0)
    assert torch.equal(steps["maxpool0"](neg), torch.full((1, 1, 5, 9), -3.0))  # not 0
    avg = steps["avgpool"](torch.ones(1, 1, 9, 17))
    assert avg.shape == (1, 1, 5, 9)
    assert float(avg[0, 0, 1, 1]) == 1.0
    assert float(avg[0, 0, 4, 1]) == pytest.approx(0.5)  # one padded row of two
    assert float(avg[0, 0, 1, 0]) == pytest.approx(0.6)  # two padded columns of five
    assert float(avg[0, 0, 4, 0]) == pytest.approx(0.3)


# --------------------------------------------------------------------------- behaviour
def test_runs_are_identical_and_independent_of_the_batch() -> None:
    a, b = _clip(2.0, 2), _clip(2.0, 3)
    runs = []
    for _ in range(2):
        runner = _runner(KELL_MT)
        with torch.inference_mode():
            runs.append(runner.forward(torch.stack([a, b]), runner.layers))
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key])
    with torch.inference_mode():
        alone = runner.forward(b[None], runner.layers)
    for key in alone:
        assert torch.equal(alone[key][0], runs[0][key][1])


def test_input_level_length_and_options() -> None:
    runner = _runner(RESNET_WORD)
    x = _clip(2.0, 4)
    with torch.inference_mode():
        wave = runner.waveform(torch.stack([x, 7 * x + 0.2]))
        np.testing.assert_allclose(wave[0].numpy(), wave[1].numpy(), rtol=1e-4, atol=1e-6)
        assert float(wave[0].pow(2).mean().sqrt()) == pytest.approx(0.1, rel=1e-4)
        long = runner.waveform(torch.cat([x, _clip(1.0, 5)])[None])[0]
        assert torch.equal(long, wave[0])  # the first 2 s
        short = _clip(0.5, 6)
        padded = runner.waveform(short[None])[0]
        assert padded.shape == (40000,) and torch.equal(padded[10000:], torch.zeros(30000))
        assert float(padded[:10000].pow(2).mean().sqrt()) == pytest.approx(0.1, rel=1e-4)
        assert runner.forward(short[None], ["avgpool"])["avgpool"].shape == (1, 64)
        raw = _runner(RESNET_WORD, level="raw")
        loud = torch.full((1, 40000), 3.0)
        assert torch.equal(raw.waveform(loud), torch.ones(1, 40000))  # clamped to [-1, 1]
        assert torch.equal(raw.waveform(x[None])[0], x)


@pytest.mark.parametrize(("options", "key"), [
    ({"input_level": "loud"}, "input_level"),
    ({"input_level": None}, "input_level"),
    ({"fixed_samples": 40000}, "fixed_samples"),
])
def test_bad_options_are_one_clear_error(ws, options, key) -> None:
    with pytest.raises(InputError, match=rf"extract\.options\.{KELL_WORD}\.{key}") as err:
        _build(ws, KELL_WORD, **options)
    assert "tuckute" in str(err.value) or "input_level" in str(err.value)


def test_reduced_spec_only_changes_the_size() -> None:
    for model in MODELS:
        spec, small = get_spec(model), F.reduced_spec(model)
        assert dataclasses.replace(small, config=spec.config) == spec
        assert small.config["heads"] == spec.config["heads"]


def test_a_tar_ending_with_a_zip_checkpoint_is_read_as_a_tar(ws, tmp_path) -> None:
    """A tar whose last member is a zip-format checkpoint also passes ``zipfile.is_zipfile``:
    the fetcher must still read it as the tar it is."""
    import io

    buf = io.BytesIO()
    torch.save({"x": torch.zeros(3)}, buf)  # any torch >= 1.6 checkpoint is a zip
    F.write_tar(mirror_path(TAR_URL, ws.mirror), {KELL_WORD: buf.getvalue()}, trailer=False)
    fetch(["weights"], ws.data, models=[KELL_WORD])
    assert (ws.data / "weights" / KELL_WORD / C.CHECKPOINT).read_bytes() == buf.getvalue()
