"""End to end: `dvc repro` of a reduced configuration runs every stage, then an experiment with
one changed parameter shows up in `dvc metrics diff` (the README's workflow)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MODELS = ("soundnet", "soundnet-random", "aisfx-random")


def _reduced_params() -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"] = {m: params["models"][m] for m in MODELS}
    params["simulate"]["nh2015"]["voxels_per_subject"] = 12
    params["simulate"]["b2021"]["voxels_per_subject"] = 6
    params["simulate"]["b2021"]["frac_nan_voxels"] = 0.2
    params["rsa"]["rois"] = ["all", "Primary"]
    params["mini_tasks"].update(
        pitch_n_pitches=6,
        pitch_train_per_pitch=2,
        pitch_valid_per_pitch=1,
        pitch_test_per_pitch=1,
        multilabel_n_classes=4,
        multilabel_n_train=24,
        multilabel_n_valid=8,
        multilabel_n_test=8,
    )
    params["pretraining"]["miniature"].update(steps=20, checkpoint_every=2, n_clips=16)
    params["downstream"].update(
        hidden_dims=[[32]],
        learning_rates=[1.0e-3],
        initializations=["xavier_uniform"],
        max_epochs=3,
        patience=2,
    )
    return params


def _run(cmd: list[str], cwd: Path, env: dict) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory, mirror_root) -> tuple[Path, dict]:
    """A copy of the project (tracked files) with the reduced parameters, as a git repo."""
    if shutil.which("latexmk") is None:
        pytest.fail("latexmk not found: `make test` installs TeX Live (make tex)")
    root = tmp_path_factory.mktemp("project")
    files = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in files:
        if rel.startswith(("build/", "tests/")) or rel in ("dvc.lock", "data.dvc"):
            continue
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, root / rel)
    (root / "params.yaml").write_text(yaml.safe_dump(_reduced_params(), sort_keys=False))
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ["PATH"],
        "BRAINALIGN_MIRROR": str(mirror_root),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    _run(["git", "init", "-q"], root, env)
    _run(["brainalign", "fetch"], root, env)
    _run(["dvc", "repro"], root, env)
    _run(["git", "add", "-A"], root, env)
    _run(["git", "commit", "-q", "-m", "baseline"], root, env)
    return root, env


def test_every_stage_ran_and_status_is_clean(project):
    root, env = project
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    expected = {f"{s}@{m}" for s in ("extract", "regress", "rsa", "downstream") for m in MODELS}
    expected |= {
        "topline",
        "build-tasks",
        "overall",
        "aggregate",
        "correlate",
        "figures",
        "compare",
        "paper",
        "pretrain-mini",
        "dynamics",
        "figure5",
    }
    assert expected <= set(lock)
    for name in ("fig2", "fig3", "fig4", "fig5", "fig6", "figS2"):
        assert (root / "build" / "report" / f"{name}.pdf").stat().st_size > 1000
    assert (root / "build" / "paper" / "brainalign.pdf").read_bytes()[:4] == b"%PDF"
    table = (root / "build" / "report" / "models.csv").read_text().splitlines()
    assert len(table) == 1 + len(MODELS)
    report = json.loads((root / "build" / "metrics" / "report.json").read_text())
    assert report["simulated_voxels"] is True and report["n_models"] == 3
    status = _run(["dvc", "status"], root, env)
    assert "up to date" in status
    again = _run(["dvc", "repro"], root, env)
    assert "Running stage" not in again


def test_experiment_with_a_changed_alpha_grid_shows_in_metrics_diff(project):
    root, env = project
    _run(
        [
            "dvc",
            "exp",
            "run",
            "-S",
            "regression.alphas=[1.0e+3]",
            "-S",
            "regression.extend_edges=false",
        ],
        root,
        env,
    )
    params = _run(["dvc", "params", "diff", "--json"], root, env)
    assert "regression.alphas" in params
    diff = json.loads(_run(["dvc", "metrics", "diff", "--json"], root, env))
    changed = diff.get("build/metrics/regression/soundnet.json", {})
    assert "NH2015.mean_r2" in changed
    assert changed["NH2015.mean_r2"]["diff"] != 0
    assert "build/metrics/extract/soundnet.json" not in diff  # extraction did not change


def test_editing_one_family_leaves_the_other_models_up_to_date(project):
    """A model's stages depend on its own family module, front end and weights only: editing
    aiSFX's module makes aiSFX's stages stale and no SoundNet stage (dvc status)."""
    root, env = project
    module = root / "src/brainalign/models/aisfx_cnn.py"
    original = module.read_text()
    try:
        module.write_text(original + "\n# an edit that changes no output\n")
        status = json.loads(_run(["dvc", "status", "--json"], root, env))
    finally:
        module.write_text(original)
    per_model = {s for s in status if "@" in s}
    assert per_model == {"extract@aisfx-random", "downstream@aisfx-random"}, status
    assert not any("soundnet" in s for s in status)
    assert "up to date" in _run(["dvc", "status"], root, env)
