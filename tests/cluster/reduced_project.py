"""The end-to-end test's reduced configuration (tests/test_pipeline_e2e.py) as a fresh project
copy with fetched inputs, for the cluster end-to-end test and benchmarks/bench_cluster.py."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# The cluster section of the reduced runs: two 1-CPU jobs fit the local node at once.
CLUSTER = {"poll_seconds": 2, "resources": {"default": {"cpus": 1, "mem": "1500M", "time": 60}}}


def reduced_params() -> dict:
    """tests/test_pipeline_e2e.py's reduced parameters, plus a ``cluster`` section."""
    spec = importlib.util.spec_from_file_location("_pipeline_e2e",
                                                  REPO / "tests" / "test_pipeline_e2e.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {**module._reduced_params(), "cluster": CLUSTER}


def project_env(mirror: Path, extra: dict | None = None) -> dict[str, str]:
    """The environment of the project's commands (this venv first, the offline mirror)."""
    return {**os.environ, **(extra or {}), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "BRAINALIGN_MIRROR": str(mirror), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def _run(cmd: list[str], cwd: Path, env: dict) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def make_project(root: Path, mirror: Path) -> Path:
    """Tracked files (no build/, tests/, dvc.lock, data.dvc), reduced params.yaml, git init,
    `brainalign fetch` (data/ and data.dvc in the DVC cache); nothing reproduced yet."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    for rel in files:
        if rel.startswith(("build/", "tests/")) or rel in ("dvc.lock", "data.dvc"):
            continue
        if not (REPO / rel).is_file():
            continue
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, root / rel)
    (root / "params.yaml").write_text(yaml.safe_dump(reduced_params(), sort_keys=False))
    env = project_env(mirror)
    _run(["git", "init", "-q"], root, env)
    _run(["brainalign", "fetch"], root, env)
    return root
