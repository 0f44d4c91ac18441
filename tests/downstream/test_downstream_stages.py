"""Stage functions: run_downstream outputs, run_overall, bad input at the stage boundary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from brainalign.downstream.stages import run_downstream, run_overall
from brainalign.errors import InputError

from .ds_helpers import band_embedder

FAST = {"hidden_dims": [[32], [32, 32]], "max_epochs": 12, "patience": 4}


def test_run_downstream_outputs(toy_trainvaltest: Path, toy_kfold: Path, tmp_path: Path) -> None:
    root = toy_kfold.parent
    out = tmp_path / "out"
    summary = run_downstream("toy", band_embedder(), 16_000, root, ["toy-tvt", "toy-kfold"], out,
                             FAST, cache_dir=tmp_path / "cache", progress=False)
    assert set(summary) == {"toy-tvt", "toy-kfold"}
    metrics = json.loads((out / "metrics.json").read_text())
    for name in summary:
        result = json.loads((out / f"{name}.json").read_text())
        assert metrics[name] == {"score": summary[name], "top1_acc": summary[name]}
        assert len(result["grid"]) == 16
        for entry in result["grid"]:
            assert set(entry) >= {"config", "valid", "test", "best_epoch", "epochs_run"}
            assert set(entry["valid"]) == {"top1_acc"} and set(entry["test"]) == {"top1_acc"}
        assert result["chosen_config"] == result["grid"][result["chosen_index"]]["config"]
        assert result["protocol"]["patience"] == 4 and result["sample_rate"] == 16_000
        assert result["score"] == pytest.approx(
            np.mean([s["test"]["top1_acc"] for s in result["splits"]]))
    assert len(json.loads((out / "toy-kfold.json").read_text())["splits"]) == 4
    assert (tmp_path / "cache" / "toy" / "toy-kfold.npz").is_file()
    # a rerun (embeddings now cached) writes byte-identical results
    before = {p.name: p.read_bytes() for p in out.glob("*.json")}
    run_downstream("toy", band_embedder(), 16_000, root, ["toy-tvt", "toy-kfold"], out, FAST,
                   cache_dir=tmp_path / "cache", progress=False)
    assert {p.name: p.read_bytes() for p in out.glob("*.json")} == before


def test_run_overall(tmp_path: Path) -> None:
    tasks = {"m1": {"t1": 0.5, "t2": 0.8}, "m2": {"t1": 0.7, "t2": 0.6},
             "m3": {"t1": 0.6, "t2": 0.7}}
    files = {}
    for model, scores in tasks.items():
        d = tmp_path / model
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps(
            {t: {"score": s, "top1_acc": s} for t, s in scores.items()}))
        files[model] = d / "metrics.json"
    overall = run_overall(files, tmp_path / "overall.json")
    t1, t2 = np.array([0.5, 0.7, 0.6]), np.array([0.8, 0.6, 0.7])
    z = ((t1 - t1.mean()) / t1.std(ddof=1) + (t2 - t2.mean()) / t2.std(ddof=1)) / 2
    assert [overall[m] for m in ("m1", "m2", "m3")] == pytest.approx(list(z))
    written = json.loads((tmp_path / "overall.json").read_text())
    assert written["tasks"] == ["t1", "t2"] and written["models"]["m1"]["scores"]["t1"] == 0.5
    with pytest.raises(InputError, match="no score for task 't3'"):
        run_overall(files, tmp_path / "o.json", ["t1", "t3"])


def test_stage_bad_input(toy_trainvaltest: Path, tmp_path: Path) -> None:
    root = toy_trainvaltest.parent
    embed = band_embedder()
    with pytest.raises(InputError, match=r"params.yaml: downstream.epochs: unknown key"):
        run_downstream("toy", embed, 16_000, root, ["toy-tvt"], tmp_path, {"epochs": 3})
    with pytest.raises(InputError, match="task folder not found"):
        run_downstream("toy", embed, 16_000, root, ["nope"], tmp_path, FAST)
    with pytest.raises(InputError, match="sample_rate"):
        run_downstream("toy", embed, 0, root, ["toy-tvt"], tmp_path, FAST)
    with pytest.raises(InputError, match=r"task_names\[0\]"):
        run_downstream("toy", embed, 16_000, root, ["../x"], tmp_path, FAST)
    assert not (tmp_path / "metrics.json").exists()
