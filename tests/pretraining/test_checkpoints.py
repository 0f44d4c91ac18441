"""Checkpoint steps and order, the three kinds of checkpoint folder, strict loading of the
real Lightning format (the EnCodecMAE fixtures) and of the miniature's files."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import fig5_helpers as FH  # noqa: E402
from fixtures import encodecmae as FX  # noqa: E402

from brainalign.errors import InputError  # noqa: E402
from brainalign.models import encodecmae as E  # noqa: E402
from brainalign.models.weights import sha256_file  # noqa: E402
from brainalign.pretraining import checkpoints as C  # noqa: E402
from brainalign.pretraining.config import MiniatureConfig, parse_params  # noqa: E402
from brainalign.pretraining.miniature import MANIFEST, train  # noqa: E402


def test_steps_from_names_and_numeric_order() -> None:
    assert C.step_of("epoch=0-step=1000.ckpt") == 1000
    assert C.step_of("full_exps/x/finegrained/step=99000.ckpt") == 99000
    assert C.step_of("step-000123.ckpt") == 123
    with pytest.raises(InputError, match="=<step>"):
        C.step_of("last.ckpt")
    names = [f"epoch={s // 5000}-step={s}.ckpt" for s in E.PRETRAIN_STEPS]
    ordered = C.order_checkpoints(random.Random(1).sample(names, len(names)))
    assert [C.step_of(p) for p in ordered] == list(E.PRETRAIN_STEPS)  # 900 before 1000 ...
    placed = [f"step-{s:06d}.ckpt" for s in (12000, 0, 900, 1000)]
    assert [p.name for p in C.order_checkpoints(placed)] == sorted(placed)
    with pytest.raises(InputError, match="step 1000 also"):
        C.order_checkpoints(["step-001000.ckpt", "epoch=1-step=1000.ckpt"])


def test_a_plain_folder_of_real_format_checkpoints_loads_strictly(tmp_path, monkeypatch) -> None:
    """Lightning .ckpt files of mel256-ec-base (the fixtures' exact container, reduced size):
    steps from the names, strict load, a renamed key names itself, the file and the model."""
    spec = FX.reduced_spec(E.PRETRAIN_MODEL)
    monkeypatch.setattr(C, "_base_spec", lambda: spec)
    folder = tmp_path / "ckpts"
    for step in (2000, 0, 1000):
        FX.write_pretraining_checkpoint(folder, step, reduced=True, seed=3)
    run = C.discover(folder, tmp_path)
    assert run.kind == C.FOLDER and run.steps == [0, 1000, 2000]
    assert all(c.sha256 is None for c in run.checkpoints)
    runner = E.load_pretraining_checkpoint(run.spec, run.checkpoints[1].path)
    assert runner.provenance["global_step"] == 1000
    assert runner.provenance["ignored_keys"]["target_encoder."] > 0
    state = FX.state_dict(E.PRETRAIN_MODEL, reduced=True)
    state["masker.positional_encoder.gain"] = state.pop("masker.positional_encoder.scale")
    bad = FX.write_pretraining_checkpoint(tmp_path / "bad", 3000, state=state)
    with pytest.raises(InputError, match="positional_encoder") as err:
        E.load_pretraining_checkpoint(run.spec, bad)
    assert bad.name in str(err.value) and E.PRETRAIN_MODEL in str(err.value)
    with pytest.raises(InputError, match="no .ckpt files"):
        C.discover(tmp_path / "bad" / "..", tmp_path)


def test_the_miniature_writes_the_real_format(tmp_path) -> None:
    """Same top-level keys as a Lightning checkpoint of the real run (no AMP state: fp32),
    upstream's state-dict keys, strict load into the miniature spec, sha256 pinned."""
    cfg = MiniatureConfig(**FH.TINY)
    manifest = train(cfg, tmp_path / "mini")
    run = C.discover(tmp_path / "mini", tmp_path)
    assert run.kind == C.MINIATURE and run.miniature and run.steps == [0, 1, 2]
    assert [c.name for c in run.checkpoints] == ["epoch=0-step=0.ckpt", "epoch=0-step=1.ckpt",
                                                 "epoch=1-step=2.ckpt"]
    assert [c.sha256 for c in run.checkpoints] == [sha256_file(c.path)
                                                   for c in run.checkpoints]
    ckpt = torch.load(run.checkpoints[-1].path, weights_only=True)
    real = FX.lightning_checkpoint(FX.state_dict(E.PRETRAIN_MODEL, reduced=True), 1000)
    assert set(ckpt) == set(real) - {"MixedPrecisionPlugin"}
    assert ckpt["global_step"] == 2 and ckpt["optimizer_states"][0]["state"]
    keys = set(ckpt["state_dict"])
    assert {k.split(".")[0] for k in keys} == {"wav_encoder", "masker", "visible_encoder",
                                               "head", "decoder"}
    assert "visible_encoder.encoder_layers.9.ff_layer.2.weight" in keys
    assert "decoder.positional_encoder.scale" in keys and "visible_encoder.post_net.bias" in keys
    assert run.spec.config["model_dim"] == 8 and run.spec.layers == tuple(map(str, range(10)))
    runner = E.load_pretraining_checkpoint(run.spec, run.checkpoints[-1].path,
                                           sha256=run.checkpoints[-1].sha256)
    ignored = runner.provenance["ignored_keys"]
    assert set(ignored) == {"visible_encoder.post_net.", "decoder.", "head."}
    assert manifest["encoder_config"] == run.spec.config
    # a damaged manifest or a missing file is one clear error
    run.checkpoints[0].path.unlink()
    with pytest.raises(InputError, match="missing"):
        C.discover(tmp_path / "mini", tmp_path)
    (tmp_path / "mini" / MANIFEST).write_text("{")
    with pytest.raises(InputError, match="not a miniature pretraining manifest"):
        C.discover(tmp_path / "mini", tmp_path)


def test_params_are_validated() -> None:
    assert parse_params(None).layers_a == ("1", "3", "5", "7", "9")
    assert parse_params({"layers_b": [0, 2]}).layers_b == ("0", "2")
    for bad, where in (({"targets": ["NH2015/Auditory"]}, "targets"),
                       ({"layers_a": ["x"]}, "layers_a"),
                       ({"smoothing_order": 10}, "smoothing_order"),
                       ({"miniature": {"model_dim": 30, "num_heads": 4}}, "num_heads"),
                       ({"miniature": {"steps": 10, "checkpoint_every": 3}}, "checkpoint_every"),
                       ({"colour": 1}, "colour")):
        with pytest.raises(InputError, match=where):
            parse_params(bad)


def test_manifest_is_json_with_the_objective(tmp_path) -> None:
    train(MiniatureConfig(**{**FH.TINY, "steps": 1}), tmp_path)
    manifest = json.loads(Path(tmp_path / MANIFEST).read_text())
    assert "EnCodec targets are unavailable offline" in manifest["objective"]
    assert manifest["label"] == "miniature pretraining, simulated voxels"
