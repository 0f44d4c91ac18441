"""Bring your own model: a workspace-local HEAR-API module (a random projection of a log-mel), as
the README tells a new user to add it, importable without PYTHONPATH, through `dvc repro`."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from brainalign.errors import InputError
from brainalign.models.extract import ExtractConfig, extract_activations
from brainalign.models.hear import model_key, module_source, stage_dependencies
from brainalign.models.registry import get_spec

REPO = Path(__file__).resolve().parents[2]

RANDMEL = textwrap.dedent('''
    """randmel: a fixed random projection of a log-mel spectrogram (a HEAR 2021 API module)."""

    import torch
    import torchaudio

    TRAINING = "untrained"  # optional: self-supervised | supervised | untrained | unknown
    LABEL = "RandMel"       # optional: the name in tables and figures (default: module name)
    SAMPLE_RATE = 16000     # optional: must equal model.sample_rate (default 16000)
    MIN_SAMPLES = 400       # optional: shortest input giving one frame; shorter ones padded


    class RandMel(torch.nn.Module):
        sample_rate = 16000
        scene_embedding_size = 128
        timestamp_embedding_size = 128

        def __init__(self) -> None:
            super().__init__()
            self.mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=400, hop_length=160,
                                                            n_mels=64)
            generator = torch.Generator().manual_seed(0)
            self.register_buffer("proj", torch.randn(64, 128, generator=generator) / 8)

        def forward(self, audio: torch.Tensor) -> torch.Tensor:  # (n, samples) -> (n, frames, d)
            return torch.log(self.mel(audio) + 1e-6).transpose(1, 2) @ self.proj


    def load_model(model_file_path: str = "") -> RandMel:
        return RandMel()


    def get_timestamp_embeddings(audio: torch.Tensor, model: RandMel):
        emb = model(audio)
        timestamps = torch.arange(emb.shape[1]) * 1000.0 * 160 / model.sample_rate
        return emb, timestamps.expand(emb.shape[0], -1)


    def get_scene_embeddings(audio: torch.Tensor, model: RandMel) -> torch.Tensor:
        return model(audio).mean(dim=1)
''')

BARE = textwrap.dedent('''
    """A HEAR module that declares nothing optional."""
    import torch

    class M(torch.nn.Module):
        sample_rate = 16000
        scene_embedding_size = 3
        timestamp_embedding_size = 3

    def load_model(model_file_path=""):
        return M()

    def get_timestamp_embeddings(audio, model):
        frames = audio[:, : audio.shape[1] // 100 * 100].reshape(audio.shape[0], -1, 100)
        emb = torch.stack([frames.mean(-1), frames.std(-1), frames.abs().amax(-1)], -1)
        return emb, torch.zeros(emb.shape[:2])

    def get_scene_embeddings(audio, model):
        return get_timestamp_embeddings(audio, model)[0].mean(1)
''')


@pytest.fixture()
def workspace(tmp_path, monkeypatch) -> Path:
    """A workspace folder holding the modules; the tests run in it (as brainalign and DVC do)."""
    (tmp_path / "randmel.py").write_text(RANDMEL)
    (tmp_path / "barehear.py").write_text(BARE)
    bad = BARE.replace("return get_timestamp_embeddings(audio, model)[0].mean(1)",
                       "return get_timestamp_embeddings(audio, model)[0]")
    (tmp_path / "badshape.py").write_text(bad)
    nan = BARE.replace("return get_timestamp_embeddings(audio, model)[0].mean(1)",
                       "return get_timestamp_embeddings(audio, model)[0].mean(1) / 0 * 0")
    (tmp_path / "nanhear.py").write_text(nan)
    size = BARE.replace("scene_embedding_size = 3", "scene_embedding_size = 5")
    (tmp_path / "sizehear.py").write_text(size)
    rate = BARE.replace('"""A HEAR module that declares nothing optional."""',
                        'SAMPLE_RATE = 8000')
    (tmp_path / "ratehear.py").write_text(rate)
    (tmp_path / "badtraining.py").write_text(BARE + '\nTRAINING = "semi"\n')
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for name in ("randmel", "barehear", "badshape", "nanhear", "sizehear", "ratehear",
                 "badtraining"):
        sys.modules.pop(name, None)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != tmp_path.resolve()]


def _clips(n: int = 3, samples: int = 16000) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(samples)).astype(np.float32) for _ in range(n)]


def test_workspace_module_resolves_without_pythonpath(workspace):
    env = {k: v for k, v in os.environ.items()}
    assert str(workspace) not in env.get("PYTHONPATH", "")
    code = ("from brainalign.models.registry import get_spec; s = get_spec('hear-randmel'); "
            "print(s.name, s.training, s.label, s.sample_rate, s.min_samples)")
    out = subprocess.run([sys.executable, "-c", code], cwd=workspace, env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["hear-randmel", "untrained", "RandMel", "16000", "400"]


def test_keys_defaults_and_dependencies(workspace, tmp_path_factory):
    assert model_key("hear:randmel") == "hear-randmel" and model_key("soundnet") == "soundnet"
    spec = get_spec("hear-barehear")
    assert (spec.training, spec.label, spec.sample_rate, spec.min_samples) == (
        "unknown", "barehear", 16000, 1)
    assert get_spec("hear:barehear").name == "hear:barehear"  # the colon spelling still resolves
    assert module_source("hear-randmel") == "randmel.py"
    assert stage_dependencies("hear-randmel") == {
        "code": "randmel.py", "frontend": "src/brainalign/models/hear.py", "weights": "randmel.py"}
    elsewhere = tmp_path_factory.mktemp("site")  # a module outside the workspace (installed)
    (elsewhere / "installedhear.py").write_text(BARE)
    sys.path.insert(0, str(elsewhere))
    try:
        assert module_source("hear-installedhear") == "src/brainalign/models/hear.py"
    finally:
        sys.path.remove(str(elsewhere))
        sys.modules.pop("installedhear", None)


def test_randmel_extracts_its_two_layers(workspace):
    acts = extract_activations("hear-randmel", _clips(), 16000, ["a", "b", "c"], ExtractConfig(),
                               progress=False)
    assert acts.layer_names == ["scene", "timestamp"] and acts.model == "hear-randmel"
    assert acts.layers["scene"].shape == (3, 128) and np.isfinite(acts.layers["scene"]).all()
    np.testing.assert_allclose(acts.layers["scene"], acts.layers["timestamp"], rtol=1e-5)
    assert acts.meta["training"] == "untrained" and acts.meta["runner"]["module_file"] == (
        "randmel.py")


@pytest.mark.parametrize(("module", "message"), [
    ("badshape", r"badshape.py: get_scene_embeddings returned shape \(2, 160, 3\) for 2 sounds; "
                 r"expected \(n_sounds, d\) with n_sounds = 2"),
    ("nanhear", r"nanhear.py: get_scene_embeddings returned NaN or infinite values for 2 of 2 "
                r"sounds; expected finite embeddings"),
    ("sizehear", r"sizehear.py: get_scene_embeddings returned embeddings of size 3; expected the "
                 r"model's declared size 5"),
    ("ratehear", r"ratehear.py: SAMPLE_RATE is 8000 but the model's sample_rate is 16000"),
    ("badtraining", r"badtraining.py: TRAINING must be one of \['self-supervised', 'supervised', "
                    r"'untrained', 'unknown'\], got 'semi'"),
    ("nosuchmodule", r"cannot import HEAR module 'nosuchmodule' .*nosuchmodule.py in the "
                     r"workspace"),
])
def test_bad_modules_are_refused_at_extract_with_one_error(workspace, module, message):
    with pytest.raises(InputError, match=message):
        extract_activations(f"hear-{module}", _clips(2), 16000, ["a", "b"], ExtractConfig(),
                            progress=False)


# ----------------------------------------------------------------- through `dvc repro`


def _reduced_params() -> dict:
    """The reduced configuration of tests/test_pipeline_e2e.py."""
    spec = importlib.util.spec_from_file_location("_e2e", REPO / "tests" / "test_pipeline_e2e.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module._reduced_params()


def _run(cmd: list[str], cwd: Path, env: dict) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def hear_project(tmp_path_factory, mirror_root) -> tuple[Path, dict]:
    """A fresh project copy (reduced configuration, one registered model) plus randmel.py in
    its root, added with `brainalign add-model hear:randmel`, then `dvc repro aggregate`."""
    root = tmp_path_factory.mktemp("hear-project")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if rel.startswith(("build/", "tests/")) or rel in ("dvc.lock", "data.dvc"):
            continue
        if (REPO / rel).is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, root / rel)
    params = _reduced_params()
    params["models"] = {"soundnet-random": params["models"]["soundnet-random"]}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "randmel.py").write_text(RANDMEL)
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
           "BRAINALIGN_MIRROR": str(mirror_root), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    assert str(root) not in env.get("PYTHONPATH", "")  # no environment tricks
    _run(["git", "init", "-q"], root, env)
    _run(["brainalign", "fetch"], root, env)
    _run(["brainalign", "add-model", "hear:randmel"], root, env)
    _run(["dvc", "repro", "aggregate"], root, env)
    _run(["git", "add", "-A"], root, env)
    _run(["git", "commit", "-q", "-m", "baseline"], root, env)
    return root, env


def test_a_workspace_hear_module_runs_through_dvc_repro(hear_project):
    root, env = hear_project
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert params["models"]["hear-randmel"] == {
        "code": "randmel.py", "frontend": "src/brainalign/models/hear.py", "weights": "randmel.py"}
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert {f"{s}@hear-randmel" for s in ("extract", "regress", "rsa", "downstream")} <= set(lock)
    build = root / "build"
    assert not [p for p in build.rglob("*") if ":" in p.name]  # no colon in any output name
    assert (build / "activations" / "hear-randmel.npz").is_file()
    extract = json.loads((build / "metrics" / "extract" / "hear-randmel.json").read_text())
    assert extract["layer_dims"] == {"scene": 128, "timestamp": 128}
    table = (build / "report" / "models.csv").read_text().splitlines()
    row = next(line for line in table if line.startswith("hear-randmel,"))
    assert row.startswith("hear-randmel,RandMel,HEAR,untrained,False,True,")
    reg = json.loads((build / "metrics" / "regression" / "hear-randmel.json").read_text())
    assert reg["NH2015"]["mean_r2"] is not None
    assert "up to date" in _run(["dvc", "status", "--with-deps", "aggregate"], root, env)
    _run(["brainalign", "check"], root, env)  # the params entry is the module's own dependencies


def test_editing_the_module_reruns_only_its_stages(hear_project):
    root, env = hear_project
    module = root / "randmel.py"
    original = module.read_text()
    try:
        module.write_text(original + "\n# an edit\n")
        status = json.loads(_run(["dvc", "status", "--json", "--with-deps", "aggregate"], root,
                                 env))
    finally:
        module.write_text(original)
    assert {s for s in status if "@" in s} == {"extract@hear-randmel", "downstream@hear-randmel"}
