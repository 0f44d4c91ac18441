"""`brainalign cluster run` on a real local SLURM with the toy project: same dvc.lock as a
serial `dvc repro`; a failing, killed (scancel) or timed-out stage leaves no output and is
reported with its job id and log path; a rerun submits only the unfinished stages; a requeued
(preempted) job starts over and the run completes."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import yaml
from toy_project import BIN, TOY_PARAMS, make_toy, outputs, run, wait_until

BRAINALIGN = str(BIN / "brainalign")


def _cluster(root: Path, env: dict, *args: str, check: bool = True):
    return run([BRAINALIGN, "cluster", *args], root, env, check=check)


def _record(root: Path) -> dict:
    folder = root / ".dvc" / "tmp" / "cluster"
    return json.loads((folder / (folder / "current").read_text().strip() / "run.json")
                      .read_text())


def _submitted(output: str) -> list[str]:
    return re.findall(r"^submitted (\S+): job", output, flags=re.M)


def _job_of(root: Path, stage: str) -> str:
    return _record(root)["jobs"][stage]["job_id"]


def _assert_same_as_serial(root: Path, reference: Path, env: dict) -> None:
    assert (root / "dvc.lock").read_bytes() == (reference / "dvc.lock").read_bytes()
    assert outputs(root) == outputs(reference)
    status = run([str(BIN / "dvc"), "status"], root, env).stdout
    assert "up to date" in status, status


def _release_requeued(root: Path, env: dict, job: str) -> None:
    """Wait until ``job`` is back in the queue, then lift SLURM's two-minute hold on requeued
    jobs (BeginTime) so the test does not wait for it."""
    def pending_again() -> bool:
        info = run(["scontrol", "show", "job", job], root, env).stdout
        return "Restarts=1" in info and "JobState=PENDING" in info

    wait_until(pending_again, what=f"job {job} to be requeued")
    run(["scontrol", "update", f"JobId={job}", "StartTime=now"], root, env)


def _start_run(root: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([BRAINALIGN, "cluster", "run"], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_cluster_run_gives_the_serial_dvc_lock(tmp_path, slurm_env, toy_reference):
    root = make_toy(tmp_path / "toy")
    (root / "release").touch()
    first = _cluster(root, slurm_env, "run")
    assert _submitted(first.stdout) == ["prep", "work@a", "work@b", "total"]
    record = _record(root)
    assert record["jobs"]["total"]["after"] == sorted(
        [_job_of(root, "work@a"), _job_of(root, "work@b")], key=int)
    assert record["jobs"]["work@a"]["after"] == [_job_of(root, "prep")]
    _assert_same_as_serial(root, toy_reference, slurm_env)
    again = _cluster(root, slurm_env, "run")
    assert "up to date" in again.stdout and not _submitted(again.stdout)
    status = _cluster(root, slurm_env, "status").stdout
    assert "4 of 4 done" in status and "recorded in dvc.lock" in status


def test_a_changed_input_reruns_only_its_stages_and_skips_unchanged_outputs(
        tmp_path, slurm_env, toy_reference):
    """Editing src.txt in a way that leaves prep's output identical: prep reruns, and the jobs
    of work@* and total find their inputs unchanged and skip (as `dvc repro` skips them)."""
    root = make_toy(tmp_path / "toy")
    (root / "release").touch()
    _cluster(root, slurm_env, "run")
    (root / "src.txt").write_text("HELLO CLUSTER\n")  # upper-cased by prep: same output
    out = _cluster(root, slurm_env, "run").stdout
    assert _submitted(out) == ["prep", "work@a", "work@b", "total"]
    assert "work@a: done (skipped" in out and "total: done (skipped" in out
    serial = make_toy(tmp_path / "serial")
    (serial / "release").touch()
    run([str(BIN / "dvc"), "repro"], serial, slurm_env)
    (serial / "src.txt").write_text("HELLO CLUSTER\n")
    assert "didn't change, skipping" in run([str(BIN / "dvc"), "repro"], serial, slurm_env).stdout
    _assert_same_as_serial(root, serial, slurm_env)


def test_a_failing_stage_is_reported_with_job_id_and_log(tmp_path, slurm_env, toy_reference):
    params = json.loads(json.dumps(TOY_PARAMS))
    params["toy"]["b"]["fail"] = True
    root = make_toy(tmp_path / "toy", params)
    (root / "release").touch()
    failed = _cluster(root, slurm_env, "run", check=False)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    job = _job_of(root, "work@b")
    log = _record(root)["jobs"]["work@b"]["log"]
    assert f"work@b: FAILED (job {job}, log {log})" in failed.stdout
    assert "`python3 toy.py work b` exited with code 3" in failed.stdout
    assert "toy: stage b fails on purpose" in failed.stdout  # the stage's own error output
    assert "toy: stage b fails on purpose" in Path(log).read_text()
    assert "total: not-run" in failed.stdout
    assert not (root / "out" / "work" / "b").exists()  # no partial output
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"prep", "work@a"}  # what finished is recorded
    # Fixed: the rerun submits work@b and total only.
    del params["toy"]["b"]["fail"]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rerun = _cluster(root, slurm_env, "run")
    assert _submitted(rerun.stdout) == ["work@b", "total"]
    # dvc.lock's stage order follows the runs (as it would after a failed serial repro); the
    # entries are the serial ones.
    assert (yaml.safe_load((root / "dvc.lock").read_text())
            == yaml.safe_load((toy_reference / "dvc.lock").read_text()))
    assert outputs(root) == outputs(toy_reference)


def test_a_job_killed_mid_stage_leaves_no_output_and_the_rerun_completes(
        tmp_path, slurm_env, toy_reference):
    root = make_toy(tmp_path / "toy")  # no release file: work@b holds after part1
    proc = _start_run(root, slurm_env)
    try:
        part1 = root / "out" / "work" / "b" / "part1.txt"
        wait_until(part1.exists, what="work@b to start writing")
        status = _cluster(root, slurm_env, "status").stdout
        assert re.search(r"\d of 4 done \(\d running", status), status
        assert "work@b: running" in status
        job = _job_of(root, "work@b")
        run(["scancel", job], root, slurm_env)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 1, out
    log = _record(root)["jobs"]["work@b"]["log"]
    assert f"work@b: CANCELLED (job {job}, log {log})" in out
    assert "total: not-run" in out
    assert not (root / "out" / "work" / "b").exists()
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"prep", "work@a"}
    (root / "release").touch()
    rerun = _cluster(root, slurm_env, "run")
    assert _submitted(rerun.stdout) == ["work@b", "total"]
    assert (yaml.safe_load((root / "dvc.lock").read_text())
            == yaml.safe_load((toy_reference / "dvc.lock").read_text()))
    assert outputs(root) == outputs(toy_reference)


def test_a_timed_out_job_is_reported_and_leaves_no_output(tmp_path, slurm_env):
    params = json.loads(json.dumps(TOY_PARAMS))
    params["cluster"]["resources"]["work"] = {"time": 1}  # minutes; work@b holds forever
    root = make_toy(tmp_path / "toy", params)
    start = time.monotonic()
    done = _cluster(root, slurm_env, "run", check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    job = _job_of(root, "work@b")
    log = _record(root)["jobs"]["work@b"]["log"]
    assert f"work@b: TIMED OUT (job {job}, log {log})" in done.stdout
    assert not (root / "out" / "work" / "b").exists()
    assert time.monotonic() - start < 240


def test_a_requeued_job_starts_over_and_the_run_completes(tmp_path, slurm_env, toy_reference):
    """scontrol requeue (what SLURM does to a preempted job with PreemptMode=REQUEUE)."""
    root = make_toy(tmp_path / "toy")
    proc = _start_run(root, slurm_env)
    try:
        part1 = root / "out" / "work" / "b" / "part1.txt"
        wait_until(part1.exists, what="work@b to start writing")
        job = _job_of(root, "work@b")
        run(["scontrol", "requeue", job], root, slurm_env)
        _release_requeued(root, slurm_env, job)
        wait_until(part1.exists, what="work@b to start again")
        (root / "release").touch()
        out, _ = proc.communicate(timeout=180)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0, out
    assert re.search(r"work@b: done \(ran, [\d.]+ s, job \d+, requeued 1x\)", out), out
    assert (yaml.safe_load((root / "dvc.lock").read_text())
            == yaml.safe_load((toy_reference / "dvc.lock").read_text()))
    assert outputs(root) == outputs(toy_reference)


def test_a_preemption_signal_checkpoints_and_requeues(tmp_path, slurm_env, toy_reference,
                                                      monkeypatch):
    """submitit's own preemption path: SIGTERM then USR2 to the job; StageJob.checkpoint
    stops the stage, removes its output and submitit requeues the job."""
    from submitit import SlurmJob

    monkeypatch.setenv("SLURM_CONF", slurm_env["SLURM_CONF"])  # scancel from this process
    root = make_toy(tmp_path / "toy")
    proc = _start_run(root, slurm_env)
    try:
        part1 = root / "out" / "work" / "b" / "part1.txt"
        wait_until(part1.exists, what="work@b to start writing")
        job = _job_of(root, "work@b")
        folder = Path(_record(root)["jobs"]["work@b"]["log"]).parent
        SlurmJob(folder=folder, job_id=job)._interrupt()  # noqa: SLF001 - submitit's test hook
        _release_requeued(root, slurm_env, job)
        log = Path(_record(root)["jobs"]["work@b"]["log"])
        assert "requeued to start over" in log.read_text()
        (root / "release").touch()
        out, _ = proc.communicate(timeout=180)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0, out
    assert "requeued 1x" in out
    assert outputs(root) == outputs(toy_reference)
