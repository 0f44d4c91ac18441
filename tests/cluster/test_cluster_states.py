"""How a job's SLURM state and submitit result file become what `cluster run|status` report
(no SLURM needed: states and result files are given)."""

from __future__ import annotations

from pathlib import Path

import pytest
from submitit.core.utils import cloudpickle_dump

from brainalign.cluster.dag import Plan, StageInfo
from brainalign.cluster.runner import (
    JobRecord,
    JobStatus,
    RunRecord,
    Tracker,
    _error_message,
    submission_order,
)
from brainalign.cluster.runner import progress_line as progress

TRACE = """Traceback (most recent call last):
  File "/x/submitit/core/_submit.py", line 11, in process_job
    result = delayed.result()
brainalign.cluster.job.StageFailed: regress@m: `brainalign regress --model m` exited with code 2; \
its last error output:
    error: data/folds: not found
"""


def _job(tmp_path: Path, result=None, started: bool = True) -> JobRecord:
    log, pkl = tmp_path / "1_0_log.out", tmp_path / "1_0_result.pkl"
    if started:
        log.write_text("log\n")
    if result is not None:
        cloudpickle_dump(result, pkl)
    return JobRecord(stage="s", job_id="1", log=str(log), result=str(pkl), after=[], outs=[])


def _status(job: JobRecord, state: tuple[str, str] | None) -> JobStatus:
    tracker = Tracker(RunRecord(run_id="r", root=".", order=["s"], jobs={"s": job}))
    return tracker._status(job, state)


def test_the_error_message_is_the_exception_without_its_type():
    message = _error_message(TRACE)
    assert message.startswith("regress@m: `brainalign regress --model m` exited with code 2")
    assert message.endswith("error: data/folds: not found")


@pytest.mark.parametrize(("state", "result", "started", "expected"), [
    (("PENDING", "Dependency"), None, False, "pending"),
    (("REQUEUED", "None"), ("error", TRACE), True, "pending"),  # an earlier attempt's error
    (("RUNNING", "None"), None, True, "running"),
    (("COMPLETED", "None"), ("success", {"outcome": "ran"}), True, "done"),
    (None, ("success", {"outcome": "skipped"}), True, "done"),  # purged from squeue
    (("FAILED", "NonZeroExitCode"), ("error", TRACE), True, "failed"),
    (("CANCELLED", "None"), ("error", TRACE), True, "cancelled"),
    (("CANCELLED", "DependencyNeverSatisfied"), None, False, "not-run"),
    (("TIMEOUT", "TimeLimit"), None, True, "timeout"),
    (("FAILED", "NonZeroExitCode"), ("error", "x.StageTimedOut: s: reached its time limit"),
     True, "timeout"),
    (("NODE_FAIL", "None"), None, True, "failed"),
])
def test_states(tmp_path, state, result, started, expected):
    assert _status(_job(tmp_path, result, started), state).state == expected


def test_a_completed_job_without_its_result_file_yet_is_still_finishing(tmp_path):
    assert _status(_job(tmp_path), ("COMPLETED", "None")) == JobStatus("running", "finishing")


def test_progress_count():
    statuses = {"a": JobStatus("done"), "b": JobStatus("done"), "c": JobStatus("running"),
                "d": JobStatus("pending"), "e": JobStatus("failed")}
    assert progress(statuses) == "2 of 5 done (1 running, 1 pending, 1 failed)"
    assert progress({"a": JobStatus("done")}) == "1 of 1 done"


def test_submission_order_starts_the_long_chains_first():
    """Every stage after its upstream stages; the per-model downstream chains (extract ->
    downstream -> overall -> aggregate -> ...) before the shorter regress / rsa ones."""
    models = ["m1", "m2"]
    ups: dict[str, list[str]] = {"topline": [], "build-tasks": []}
    for m in models:
        ups[f"extract@{m}"] = []
        ups[f"regress@{m}"] = ups[f"rsa@{m}"] = [f"extract@{m}"]
        ups[f"downstream@{m}"] = ["build-tasks", f"extract@{m}"]
    ups["overall"] = [f"downstream@{m}" for m in models]
    ups["aggregate"] = [f"{k}@{m}" for k in ("regress", "rsa") for m in models] + [
        "topline", "overall"]
    ups["paper"] = ["aggregate"]
    order = [n for n in ups if "@" in n and n.startswith("extract")] + [
        n for n in ups if not n.startswith("extract")]
    plan = Plan(tuple(order), {n: StageInfo(n, ("cmd",), (), tuple(u)) for n, u in ups.items()},
                frozenset(order))
    submitted = submission_order(plan, plan.todo())
    assert sorted(submitted) == sorted(order)
    for name in submitted:
        assert all(submitted.index(u) < submitted.index(name) for u in ups[name])
    assert max(submitted.index(f"downstream@{m}") for m in models) < min(
        submitted.index(f"{k}@{m}") for k in ("regress", "rsa") for m in models)
