"""End to end on the real pipeline: the reduced configuration through `brainalign cluster run`
on the local SLURM (two 1-CPU jobs at a time) writes the same dvc.lock as a serial `dvc repro`;
and a parameter sweep of two queued experiments runs with `dvc queue start --jobs 2`."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from reduced_project import make_project, project_env


def _run(cmd: list[str], cwd: Path, env: dict, timeout: float = 1800) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def fetched(tmp_path_factory, mirror_root) -> Path:
    """The reduced project with its inputs fetched, not reproduced."""
    if shutil.which("latexmk") is None:
        pytest.fail("latexmk not found: `make test` installs TeX Live (make tex)")
    return make_project(tmp_path_factory.mktemp("reduced") / "project", mirror_root)


@pytest.fixture(scope="module")
def serial(fetched, tmp_path_factory, mirror_root) -> Path:
    """A copy reproduced by a serial `dvc repro`, committed to git as the baseline."""
    root = tmp_path_factory.mktemp("serial") / "project"
    shutil.copytree(fetched, root, symlinks=True)
    env = project_env(mirror_root)
    _run(["dvc", "repro"], root, env)
    _run(["git", "add", "-A"], root, env)
    _run(["git", "commit", "-q", "-m", "baseline"], root, env)
    return root


def test_cluster_run_writes_the_serial_dvc_lock(fetched, serial, tmp_path, slurm, mirror_root):
    root = tmp_path / "project"
    shutil.copytree(fetched, root, symlinks=True)
    env = project_env(mirror_root, {"SLURM_CONF": str(slurm.conf)})
    out = _run(["brainalign", "cluster", "run"], root, env)
    assert "recorded" in out and "FAILED" not in out, out
    mine, theirs = (yaml.safe_load((d / "dvc.lock").read_text())["stages"]
                    for d in (root, serial))
    assert list(mine) == list(theirs)
    assert [s for s in mine if mine[s] != theirs[s]] == []
    assert (root / "dvc.lock").read_bytes() == (serial / "dvc.lock").read_bytes()
    assert "up to date" in _run(["dvc", "status"], root, env)
    for rel in ("build/metrics/report.json", "build/report/models.csv",
                "build/paper/brainalign.pdf"):
        assert (root / rel).read_bytes() == (serial / rel).read_bytes(), rel
    again = _run(["brainalign", "cluster", "run"], root, env)
    assert "up to date" in again and "submitted" not in again
    status = _run(["brainalign", "cluster", "status"], root, env)
    assert "recorded in dvc.lock" in status and "FAILED" not in status


def _reap_workers(root: Path, wait_s: float = 60) -> None:
    """Wait for the queue's worker processes to exit; terminate any still running after
    ``wait_s`` (cleanup only: an idle celery worker that missed its shutdown is DVC's)."""
    pids = []
    for pid_file in (root / ".dvc" / "tmp" / "exps" / "celery").glob("*.pid"):
        text = pid_file.read_text().strip()
        if text.isdigit():
            pids.append(int(text))
    deadline = time.monotonic() + wait_s
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
        time.sleep(1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def test_two_queued_experiments_run_in_parallel(serial, mirror_root):
    """`dvc exp run --queue` twice, `dvc queue start --jobs 2`: both finish, each with its own
    regression metrics."""
    env = project_env(mirror_root)
    sweeps = {"alpha-1e3": "[1.0e+3]", "alpha-1e-3": "[1.0e-3]"}
    for name, alphas in sweeps.items():
        _run(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"regression.alphas={alphas}",
              "-S", "regression.extend_edges=false"], serial, env)
    try:
        # `dvc queue start` daemonises its workers; a worker that outlives the queue (a celery
        # race seen once: idle, never exiting) must not hold this test's pipes, so its output
        # goes to a file instead of being captured
        with (serial.parent / "queue-start.log").open("w") as log:
            started = subprocess.run(["dvc", "queue", "start", "--jobs", "2"], cwd=serial,
                                     env=env, stdout=log, stderr=subprocess.STDOUT, timeout=300)
        assert started.returncode == 0, (serial.parent / "queue-start.log").read_text()
        deadline = time.monotonic() + 1500
        while time.monotonic() < deadline:
            status = _run(["dvc", "queue", "status"], serial, env)
            if not any(word in status for word in ("Queued", "Running")):
                break
            time.sleep(5)
        else:
            pytest.fail(f"queued experiments did not finish:\n{status}")
    finally:
        _run(["dvc", "queue", "stop"], serial, env)  # the workers exit once the queue is empty
        _reap_workers(serial)
    assert status.count("Success") == 2, status
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], serial, env))
    scores = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs", []):
                if rev.get("name") in sweeps:
                    metrics = rev["data"]["metrics"]["build/metrics/regression/soundnet.json"]
                    scores[rev["name"]] = metrics["data"]["NH2015"]["mean_r2"]
    assert set(scores) == set(sweeps), shown
    assert scores["alpha-1e3"] != scores["alpha-1e-3"]
