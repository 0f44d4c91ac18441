"""Fixtures of the cluster tests: a real single-node SLURM (started once, stopped by pid
afterwards) and the environment to submit to it; the toy project lives in toy_project.py."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from toy_project import BIN, make_toy, run  # noqa: E402

from brainalign.cluster.localslurm import LocalSlurm, missing_programs  # noqa: E402


@pytest.fixture(scope="session")
def slurm() -> Iterator[LocalSlurm]:
    """A running single-node SLURM (2 CPUs at most), stopped after the session."""
    missing = missing_programs()
    if missing:
        pytest.fail(f"SLURM programs not found: {missing}; `make test` installs them "
                    "(make slurm: Debian slurmctld slurmd slurm-client munge)")
    with LocalSlurm(cpus=min(2, os.cpu_count() or 1), memory_mb=4000) as cluster:
        yield cluster


@pytest.fixture
def slurm_env(slurm: LocalSlurm) -> dict[str, str]:
    """The environment for commands that submit to the local SLURM."""
    return {**slurm.env, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


@pytest.fixture(scope="session")
def toy_reference(tmp_path_factory) -> Path:
    """The toy project after a serial `dvc repro` (release present): the reference lock."""
    root = make_toy(tmp_path_factory.mktemp("toy-serial") / "toy")
    (root / "release").touch()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    run([str(BIN / "dvc"), "repro"], root, env)
    return root


