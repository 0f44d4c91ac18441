"""params.yaml validation and the command line (help, version, fetch, one-line errors)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from brainalign.cli import app
from brainalign.data.layout import DataParams
from brainalign.data.simulate import SimulateParams
from brainalign.errors import InputError
from brainalign.params import load_params, section

REPO = Path(__file__).resolve().parents[1]


def test_committed_params_validate():
    params = load_params(REPO / "params.yaml")
    assert section(DataParams, params["data"], "data").fmri == "simulated"
    sim = section(SimulateParams, params["simulate"], "simulate")
    assert sim.nh2015.n_subjects == 8 and sim.b2021.n_subjects == 20


@pytest.mark.parametrize(
    ("mapping", "key", "message"),
    [
        ({"seed": "seven"}, "simulate.seed", "expected an integer"),
        (
            {"nh2015": {"n_subjects": 8.5, "voxels_per_subject": 3}},
            "simulate.nh2015.n_subjects",
            "expected an integer",
        ),
        ({"gain": [1]}, "simulate.gain", "expected a number"),
        ({"sede": 1}, "simulate.sede", "unknown key"),
        ({"reliability_low": 0.9, "reliability_high": 0.5}, "simulate", "reliability_low"),
    ],
)
def test_malformed_values_name_the_key(mapping, key, message):
    with pytest.raises(InputError, match=message) as err:
        section(SimulateParams, mapping, "simulate")
    assert str(err.value).startswith(f"params.yaml: {key}")


def test_literal_choices():
    with pytest.raises(
        InputError, match=r"params.yaml: data.fmri: expected one of \['simulated', 'lab'\]"
    ):
        section(DataParams, {"fmri": "real"}, "data")


def test_yaml_syntax_error(tmp_path):
    (tmp_path / "params.yaml").write_text("data: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")


def test_every_command_has_help():
    runner = CliRunner()
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    commands = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert {"fetch", "simulate", "check"} <= set(commands)
    for name in commands:
        out = runner.invoke(app, [name, "--help"])
        assert out.exit_code == 0, name
        assert "Usage" in out.output


def test_version_prints_git_commit():
    out = subprocess.run(
        [sys.executable, "-m", "brainalign", "--version"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    ).stdout
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout.strip()
    assert out.startswith("brainalign ") and head in out


def test_version_names_the_image_when_a_different_checkout_runs():
    """In the image a mounted checkout's HEAD is the code that runs; the image's commit is
    printed beside it. The image's own copy prints its build commit alone."""
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout.strip()

    def version(image: str) -> str:
        env = {**os.environ, "BRAINALIGN_GIT_COMMIT": image, "BRAINALIGN_LOCK_SHA256": "ab" * 32}
        return subprocess.run([sys.executable, "-m", "brainalign", "--version"], env=env,
                              capture_output=True, text=True, cwd=REPO, check=True).stdout

    same = version(head)
    assert f"git {head}," in same and "image" not in same and "uv.lock sha256 " + "ab" * 32 in same
    other = version("0" * 40)
    assert f"git {head}" in other and f"image {'0' * 40}" in other


def test_fetch_and_check_in_a_fresh_folder(tmp_path, mirror_root):
    """The demo's fetch, end to end through the CLI, outside a DVC repository."""
    params = (REPO / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(params)
    env_cmd = [sys.executable, "-m", "brainalign"]
    run = subprocess.run(
        env_cmd + ["fetch", "--mirror", str(mirror_root)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "SIMULATED" in run.stderr
    check = subprocess.run(env_cmd + ["check"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "NH2015: 960 voxels, 8 subjects, 0 with NaN (SIMULATED)" in check.stdout
    assert "B2021: 1200 voxels, 20 subjects, 6 with NaN (SIMULATED)" in check.stdout


def test_bad_input_is_one_line_and_exit_code_2(tmp_path):
    (tmp_path / "params.yaml").write_text("data:\n  fmri: real\n")
    run = subprocess.run(
        [sys.executable, "-m", "brainalign", "check"], cwd=tmp_path, capture_output=True, text=True
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "error: params.yaml: data.fmri: expected one of ['simulated', 'lab'], got 'real'"
    ]


def test_model_dependencies_are_the_models_own_files():
    """params.yaml `models.<name>` names the DVC dependencies of the model's stages: its family
    module, its front end and what fixes its weights (the packaged file's pinned sha256 in the
    family module, or data/weights/<name>); nothing wider."""
    from brainalign.models.registry import get_spec, model_names, stage_dependencies

    params = load_params(REPO / "params.yaml")
    for name, entry in params["models"].items():
        assert name in model_names()
        assert entry == stage_dependencies(name), name
        spec = get_spec(name)
        assert entry["code"] == f"src/{spec.module.replace('.', '/')}.py"
        for path in entry.values():
            assert not path.startswith(".venv"), name  # the image's environment is elsewhere
            assert path != "src/brainalign/models", name
        if spec.weights is None:
            assert spec.training == "untrained", name
        else:
            assert spec.weights.sha256 in (REPO / entry["weights"]).read_text(), name


def test_paper_profile_rewrites_params(tmp_path):
    import yaml

    paper = yaml.safe_load((REPO / "src/brainalign/profiles/paper.yaml").read_text())
    assert len(paper["models"]) == 36
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    args = ["profile", "paper", "--params", str(tmp_path / "params.yaml")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    params = load_params(tmp_path / "params.yaml")
    assert params["data"]["fmri"] == "lab"
    assert params["data"]["fetch"] == ["github", "lab", "hear", "weights", "pretraining"]
    assert params["pretraining"]["checkpoints"] == "data/weights/mel256-ec-base-pretraining"
    assert params["data"]["stimuli"] == "lab/data/stimuli/165_natural_sounds"
    assert params["extract"]["resampler"] == "soxr_hq" and params["extract"]["batch_size"] == 1
    assert list(params["models"]) == paper["models"]
    beats = params["models"]["BEATs_iter1"]
    assert beats == {"code": "src/brainalign/models/beats.py",
                     "frontend": "src/brainalign/models/frontends/kaldi.py",
                     "weights": "data/weights/BEATs_iter1"}
    assert params["models"]["braindnn_spectemp_filters"]["code"] == (
        "src/brainalign/models/spectemp.py")
    assert params["downstream"]["tasks"][0] == "nsynth_pitch-v2.2.3-50h"
    assert params["regression"] == load_params(REPO / "params.yaml")["regression"]


def test_source_digest_follows_the_code_not_caches_or_clocks(tmp_path):
    """The manuscript names its code by this digest: same files, same digest; any edit of a
    source file changes it; byte-code caches do not."""
    import shutil

    from brainalign.provenance import PACKAGE_DIR, source_sha256

    copy = tmp_path / "brainalign"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    base = source_sha256(copy)
    assert base == source_sha256(PACKAGE_DIR) and len(base) == 64
    (copy / "__pycache__").mkdir(exist_ok=True)
    (copy / "__pycache__" / "cli.cpython-311.pyc").write_bytes(b"\0" * 16)
    assert source_sha256(copy) == base
    (copy / "params.py").write_text((copy / "params.py").read_text() + "\n# edit\n")
    assert source_sha256(copy) != base
    out = subprocess.run([sys.executable, "-m", "brainalign", "--version"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert f"source sha256 {base}" in out
