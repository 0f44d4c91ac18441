"""A damaged intermediate file gives one clear error naming it and the stage that rebuilds it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from brainalign.errors import InputError
from brainalign.outputs import stage_of

REPO = Path(__file__).resolve().parents[1]


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # corrupted: flip bytes in the middle
        mid = len(data) // 2
        path.write_bytes(data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 64]) +
                         data[mid + 64:])


@pytest.mark.parametrize("how", ["empty", "truncated", "corrupted"])
def test_activation_file(tmp_path, how):
    from brainalign.data.stimuli import canonical_names
    from brainalign.models.activations import Activations, load_activations, save_activations

    path = tmp_path / "build" / "activations" / "fcpe.npz"
    rng = np.random.default_rng(0)
    save_activations(path, Activations("fcpe", {"a": rng.standard_normal((165, 300)).astype(
        np.float32)}, canonical_names()))
    _damage(path, how)
    with pytest.raises(InputError) as err:
        load_activations(path)
    message = str(err.value)
    assert message.startswith(str(path)) and "dvc repro -f extract@fcpe" in message
    assert ("empty (0 bytes)" if how == "empty" else "damaged or truncated") in message


@pytest.mark.parametrize("how", ["empty", "truncated"])
def test_embedding_cache(tmp_path, how):
    from brainalign.downstream.embeddings import TaskEmbeddings, load_embeddings, save_embeddings

    path = tmp_path / "build" / "downstream" / "fcpe" / "embeddings" / "synth-pitch.npz"
    emb = TaskEmbeddings(model="fcpe", task="synth-pitch", layers=("a",),
                         splits={"train": {"a": np.ones((4, 3), np.float32)}})
    save_embeddings(path, emb, "fingerprint")
    _damage(path, how)
    with pytest.raises(InputError, match="downstream@fcpe"):
        load_embeddings(path)


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "brainalign", *args], cwd=cwd,
                          capture_output=True, text=True)


def test_cli_exit_code_2_and_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    report = tmp_path / "build" / "report"
    report.mkdir(parents=True)
    (report / "models.parquet").write_bytes(b"PAR1 not really")
    (report / "topline.json").write_text("{}")
    run = _cli(["figures"], tmp_path)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "build/report/models.parquet" in lines[0]
    assert "dvc repro -f aggregate" in lines[0]
    # a 0-byte metrics file read by `aggregate`
    metrics = tmp_path / "build" / "metrics" / "regression"
    metrics.mkdir(parents=True)
    (metrics / "spectemp.json").write_bytes(b"")
    run = _cli(["aggregate"], tmp_path)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "empty (0 bytes)" in lines[0] and "regress@spectemp" in lines[0]


def test_every_stage_output_maps_to_its_stage():
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        body = stage.get("do", stage)
        expected = f"{name}@fcpe" if "foreach" in stage else name
        for out in [*body.get("outs", []), *body.get("metrics", [])]:
            path = next(iter(out)) if isinstance(out, dict) else out
            assert stage_of(path.replace("${key}", "fcpe")) == expected, (name, path)
