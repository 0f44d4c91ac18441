"""`brainalign cluster run|status|cancel`: the stale part of the DVC pipeline as SLURM jobs.

A run: ask DVC what is stale and in which order `dvc repro` would visit it; submit one submitit
job per stage (resources per stage kind, ``afterok`` dependencies along the DAG, dependents of
a failed job cancelled by SLURM); wait, reporting each job as it finishes; then `dvc commit`
the stages that ran, in `dvc repro` order. The run's record (job ids, log paths) lives in
``<cluster.folder>/<run id>/run.json``; a later `cluster run` first waits for and records an
unfinished one, then submits only what is still stale.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from brainalign.atomic import write_json, write_text
from brainalign.cluster import dag, slurm
from brainalign.cluster.config import ClusterConfig
from brainalign.cluster.job import marker, remove_outputs
from brainalign.errors import InputError

Echo = Callable[[str], None]
TERMINAL = ("done", "failed", "timeout", "cancelled", "not-run")
# A job SLURM calls COMPLETED whose result file is not visible yet (shared filesystems lag).
RESULT_GRACE_S = 60.0


@dataclass
class JobRecord:
    """One submitted stage."""

    stage: str
    job_id: str
    log: str
    result: str
    after: list[str]
    outs: list[str]


@dataclass
class RunRecord:
    """What `cluster run` submitted, in `dvc repro` order (``local``: verified, no job)."""

    run_id: str
    root: str
    order: list[str]
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    local: list[str] = field(default_factory=list)
    finalized: bool = False
    summary: dict[str, Any] | None = None

    def save(self, folder: Path) -> None:
        write_json(folder / self.run_id / "run.json", dataclasses.asdict(self))
        write_text(folder / "current", self.run_id + "\n")

    @classmethod
    def load(cls, folder: Path) -> RunRecord | None:
        pointer = folder / "current"
        if not pointer.is_file():
            return None
        path = folder / pointer.read_text().strip() / "run.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(path, f"cannot read the run record ({exc}); delete {pointer} to "
                             "forget that run") from None
        data["jobs"] = {k: JobRecord(**v) for k, v in data["jobs"].items()}
        return cls(**data)


@dataclass
class JobStatus:
    """Where one job stands: ``state`` is pending | running | done | failed | timeout |
    cancelled | not-run; ``detail`` says more (SLURM state, outcome, error)."""

    state: str
    detail: str = ""
    result: dict[str, Any] | None = None


def _error_message(trace: str) -> str:
    """The exception (type stripped) at the end of a traceback submitit recorded."""
    lines = trace.rstrip().splitlines()
    start = 0
    for i, line in enumerate(lines):
        if line and not line[0].isspace() and not line.startswith("Traceback"):
            start = i
    message = "\n".join(lines[start:])
    head, sep, rest = message.partition(": ")
    return rest if sep and " " not in head else message


def _read_result(path: Path) -> tuple[str, Any] | None:
    from submitit.core.utils import pickle_load

    if not path.is_file():
        return None
    try:
        return pickle_load(path)
    except Exception:  # noqa: BLE001 - half-written by a job being killed: no result
        return None


class Tracker:
    """Polls SLURM and the result files of a run's jobs."""

    def __init__(self, record: RunRecord) -> None:
        self.record = record
        self._completed_at: dict[str, float] = {}

    def poll(self) -> dict[str, JobStatus]:
        jobs = self.record.jobs
        states = slurm.job_states(j.job_id for j in jobs.values())
        out = {name: self._status(job, states.get(job.job_id)) for name, job in jobs.items()}
        stuck = [jobs[n].job_id for n, s in out.items()
                 if s.state == "pending" and "DependencyNeverSatisfied" in s.detail]
        slurm.cancel(stuck)  # where SLURM keeps them waiting instead (kill-on-invalid-dep)
        return out

    def _status(self, job: JobRecord, slurm_state: tuple[str, str] | None) -> JobStatus:
        state, reason = slurm_state or ("", "")
        if state in slurm.ACTIVE:
            running = state in ("RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT")
            notes = [state.lower()] if state not in ("RUNNING", "PENDING") else []
            notes += [] if reason in ("None", "") else [f"waiting for {reason}"]
            return JobStatus("running" if running else "pending", ", ".join(notes))
        result = _read_result(Path(job.result))
        started = Path(job.log).exists()
        if result is not None and result[0] == "success":
            info = result[1]
            return JobStatus("done", info.get("outcome", ""), info)
        message = _error_message(str(result[1])) if result is not None else ""
        if state == "CANCELLED" and (not started or "Dependency" in reason):
            return JobStatus("not-run", "an upstream stage did not finish")
        if state == "CANCELLED":
            return JobStatus("cancelled", message or "cancelled (scancel) while running")
        if state == "TIMEOUT" or "StageTimedOut" in str(result and result[1]):
            return JobStatus("timeout", message or "killed by SLURM at its time limit")
        if result is not None:
            return JobStatus("failed", message)
        if state == "COMPLETED" or (not state and started):
            first = self._completed_at.setdefault(job.job_id, time.monotonic())
            if time.monotonic() - first < RESULT_GRACE_S:
                return JobStatus("running", "finishing")
            return JobStatus("failed", f"no result file ({state or 'SLURM no longer knows it'})")
        if not state:
            return JobStatus("not-run", "SLURM no longer knows the job and it never started")
        return JobStatus("failed", f"SLURM state {state} ({reason})")


def progress_line(statuses: dict[str, JobStatus]) -> str:
    """``5 of 12 done (2 running, 4 pending, 1 failed)``."""
    counts: dict[str, int] = {}
    for s in statuses.values():
        counts[s.state] = counts.get(s.state, 0) + 1
    others = [f"{counts[k]} {k}" for k in ("running", "pending", "failed", "timeout",
                                           "cancelled", "not-run") if counts.get(k)]
    line = f"{counts.get('done', 0)} of {len(statuses)} done"
    return line + (f" ({', '.join(others)})" if others else "")


def _describe(name: str, job: JobRecord, status: JobStatus) -> str:
    if status.state == "done":
        info = status.result or {}
        extra = f", requeued {info['restarts']}x" if info.get("restarts") else ""
        return (f"{name}: done ({status.detail}, {info.get('seconds', '?')} s, job "
                f"{job.job_id}{extra})")
    if status.state in ("failed", "timeout", "cancelled"):
        label = {"failed": "FAILED", "timeout": "TIMED OUT", "cancelled": "CANCELLED"}
        return (f"{name}: {label[status.state]} (job {job.job_id}, log {job.log})\n"
                f"    {status.detail}")
    return f"{name}: {status.state} ({status.detail + ', ' if status.detail else ''}job " \
           f"{job.job_id})"


def _quiet(_: str) -> None:
    """An echo that prints nothing."""


def _upstream_jobs(plan: dag.Plan, name: str, job_ids: dict[str, str]) -> list[str]:
    """The jobs ``name`` must wait for: its upstream stages' jobs (through job-less stages)."""
    out: list[str] = []
    for up in plan.stages[name].upstream:
        if up in job_ids:
            out.append(job_ids[up])
        elif up in plan.stages:
            out.extend(_upstream_jobs(plan, up, job_ids))
    return sorted(set(out), key=int)


def submission_order(plan: dag.Plan, todo: list[str]) -> list[str]:
    """``todo`` in an order SLURM can take first-come first-served: every stage after its
    upstream stages, and among the stages ready at each step the one heading the longest
    chain of dependents first (then the one with most dependents), so that the long
    per-model chains (extract -> downstream -> overall -> ...) start early."""
    wanted = set(todo)
    below: dict[str, set[str]] = {n: plan.dependents(n) & wanted for n in todo}
    chain: dict[str, int] = {}
    for name in reversed(todo):  # todo is in dependency order: dependents come later
        chain[name] = 1 + max((chain[d] for d in below[name]
                               if name in plan.stages[d].upstream), default=0)
    ups = {n: [u for u in plan.stages[n].upstream if u in wanted] for n in todo}
    done: set[str] = set()
    order: list[str] = []
    while len(order) < len(todo):
        ready = [n for n in todo if n not in done and all(u in done for u in ups[n])]
        best = max(ready, key=lambda n: (chain[n], len(below[n]), -todo.index(n)))
        order.append(best)
        done.add(best)
    return order


def check_partitions(config: ClusterConfig, kinds: set[str]) -> None:
    """Every configured partition exists (one clear error naming the key otherwise)."""
    known = slurm.partitions()
    table = config.resources or {}
    for kind in sorted(kinds):
        part = config.resources_for(kind).partition
        if part is not None and part not in known:
            key = kind if table.get(kind) and table[kind].partition else "default"
            raise InputError(f"params.yaml: cluster.resources.{key}.partition",
                             f"no partition {part!r} on this cluster (sinfo lists "
                             f"{', '.join(sorted(known))})")


def submit(root: Path, config: ClusterConfig, plan: dag.Plan, echo: Echo) -> RunRecord:
    """One held job per stage to run (:func:`submission_order`), each ``afterok`` its upstream
    stages' jobs; released together once SLURM has accepted them all."""
    import submitit

    from brainalign.cluster.job import StageJob

    folder = config.run_folder(root)
    todo = plan.todo()
    run_id = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    record = RunRecord(run_id=run_id, root=str(root), order=todo,
                       local=[n for n in todo if not plan.stages[n].runs_a_command])
    run_dir = folder / run_id
    check_partitions(config, {plan.stages[n].kind for n in todo})
    record.save(folder)
    job_ids: dict[str, str] = {}
    for name in submission_order(plan, todo):
        info = plan.stages[name]
        if not info.runs_a_command:
            continue
        after = _upstream_jobs(plan, name, job_ids)
        # Held until every job is accepted: a request sbatch refuses leaves nothing run.
        extra: dict[str, Any] = {"kill-on-invalid-dep": "yes", "requeue": True, "hold": True}
        if after:
            extra["dependency"] = "afterok:" + ":".join(after)
        executor = submitit.SlurmExecutor(folder=run_dir / "jobs" / "%j", max_num_timeout=0)
        executor.update_parameters(
            job_name=f"brainalign:{name}", signal_delay_s=config.signal_delay_s,
            stderr_to_stdout=True, setup=list(config.setup) or None,
            additional_parameters=extra, **config.resources_for(info.kind).submitit_parameters())
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                job = executor.submit(StageJob(str(root), name, str(run_dir), info.outs))
        except Exception as exc:  # noqa: BLE001 - sbatch refused: one clear error
            slurm.cancel(job_ids.values())
            record.local = []
            finalize(record, config, wait(record, config, _quiet), _quiet)
            key = info.kind if info.kind in (config.resources or {}) else "default"
            raise InputError(f"params.yaml: cluster.resources.{key}",
                             f"sbatch refused the job of {name}: {str(exc).strip()}") from None
        job_ids[name] = job.job_id
        record.jobs[name] = JobRecord(stage=name, job_id=job.job_id, log=str(job.paths.stdout),
                                      result=str(job.paths.result_pickle), after=after,
                                      outs=list(info.outs))
        record.save(folder)
    slurm.release(job_ids.values())
    for name in (n for n in todo if n in record.jobs):
        job_record = record.jobs[name]
        echo(f"submitted {name}: job {job_record.job_id}"
             + (f" after {', '.join(job_record.after)}" if job_record.after else ""))
    return record


def wait(record: RunRecord, config: ClusterConfig, echo: Echo) -> dict[str, JobStatus]:
    """Poll until every job of the run has finished one way or another; report each."""
    tracker = Tracker(record)
    reported: dict[str, str] = {}
    while True:
        try:
            statuses = tracker.poll()
        except InputError as exc:  # squeue timed out or slurmctld restarts: the jobs go on
            echo(f"SLURM did not answer ({exc.problem}); asking again")
            time.sleep(config.poll_seconds)
            continue
        for name in record.order:
            status = statuses.get(name)
            if status is None or reported.get(name) == status.state:
                continue
            if not (status.state == "pending" and name not in reported):
                echo(f"[{progress_line(statuses)}] "
                     + _describe(name, record.jobs[name], status))
            reported[name] = status.state
        if all(s.state in TERMINAL for s in statuses.values()):
            return statuses
        time.sleep(config.poll_seconds)


def finalize(record: RunRecord, config: ClusterConfig, statuses: dict[str, JobStatus],
             echo: Echo) -> int:
    """No partial output; `dvc commit` what finished (in order); summary. Returns 0 or 1."""
    root = Path(record.root)
    folder = config.run_folder(root)
    run_dir = folder / record.run_id
    for name, status in statuses.items():
        if status.state != "done" and marker(run_dir, name).exists():
            remove_outputs(record.jobs[name].outs)
    finished = [n for n in record.order if n in statuses and statuses[n].state == "done"
                and (statuses[n].result or {}).get("outcome") != "skipped"]
    now = dag.current_fingerprints(root, finished)
    moved = [n for n in finished if now[n] != (statuses[n].result or {}).get("fingerprint")]
    for name in moved:
        echo(f"{name}: its inputs changed while it ran; not recorded (it stays stale)")
    commit = [n for n in record.order if (n in finished and n not in moved) or n in record.local]
    dag.commit(root, commit)
    bad = {n: s for n, s in statuses.items() if s.state not in ("done",)}
    record.finalized = True
    record.summary = {"progress": progress_line(statuses), "committed": commit,
                      "unfinished": {n: f"{s.state}: {s.detail}" for n, s in bad.items()}}
    record.save(folder)
    skipped = sum(1 for s in statuses.values()
                  if s.state == "done" and (s.result or {}).get("outcome") == "skipped")
    echo(f"run {record.run_id}: {progress_line(statuses)}; recorded {len(commit)} stage(s) in "
         f"dvc.lock" + (f"; {skipped} up to date after their inputs were rebuilt" if skipped
                        else ""))
    if bad:
        echo("not finished (`brainalign cluster run` resubmits only these and what depends "
             "on them):")
        for name in record.order:
            if name in bad:
                echo("  " + _describe(name, record.jobs[name], bad[name]))
        return 1
    return 0


def _finish_previous(config: ClusterConfig, root: Path, echo: Echo) -> int | None:
    """Wait for and record an unfinished earlier run; its exit code, or None when none."""
    record = RunRecord.load(config.run_folder(root))
    if record is None or record.finalized:
        return None
    if Path(record.root).resolve() != root.resolve():
        raise InputError(config.run_folder(root), f"holds an unfinished run of "
                         f"{record.root}; delete {config.run_folder(root) / 'current'} to "
                         "forget it")
    echo(f"run {record.run_id} has not been recorded yet: waiting for its "
         f"{len(record.jobs)} job(s)")
    return finalize(record, config, wait(record, config, echo), echo)


def run(root: Path, config: ClusterConfig, echo: Echo, wait_for_jobs: bool = True,
        dry_run: bool = False) -> int:
    """`brainalign cluster run`; returns the exit code (0: everything recorded)."""
    slurm.require_slurm()
    if not dry_run:
        previous = _finish_previous(config, root, echo)
        if previous:
            return previous
    plan = dag.load_plan(root)
    todo = plan.todo()
    if not todo:
        echo("Data and pipelines are up to date.")
        return 0
    if dry_run:
        check_partitions(config, {plan.stages[n].kind for n in todo})
        for name in todo:
            info = plan.stages[name]
            if not info.runs_a_command:
                echo(f"{name}: verified and recorded here (no command)")
                continue
            params = config.resources_for(info.kind).submitit_parameters()
            ups = [u for u in info.upstream if u in todo]
            echo(f"{name}: job {params}" + (f", after {', '.join(ups)}" if ups else ""))
        return 0
    record = submit(root, config, plan, echo)
    if not wait_for_jobs:
        echo(f"submitted {len(record.jobs)} job(s); `brainalign cluster status` follows them, "
             "`brainalign cluster run` waits for them and records the results")
        return 0
    try:
        statuses = wait(record, config, echo)
    except KeyboardInterrupt:
        echo("interrupted: the jobs keep running; `brainalign cluster status` follows them, "
             "`brainalign cluster run` waits and records them, `brainalign cluster cancel` "
             "stops them")
        return 130
    return finalize(record, config, statuses, echo)


def status(root: Path, config: ClusterConfig, echo: Echo) -> int:
    """`brainalign cluster status`: every job of the current run and a progress count."""
    record = RunRecord.load(config.run_folder(root))
    if record is None:
        echo("no cluster run yet (`brainalign cluster run` starts one)")
        return 0
    if not record.jobs:
        echo(f"run {record.run_id}: no jobs" + (f" ({record.summary})" if record.summary
                                                 else ""))
        return 0
    slurm.require_slurm()
    statuses = Tracker(record).poll()
    when = "recorded in dvc.lock" if record.finalized else "not recorded yet"
    echo(f"run {record.run_id} ({when}): {progress_line(statuses)}")
    for name in record.order:
        if name in statuses:
            echo("  " + _describe(name, record.jobs[name], statuses[name]))
    return 0


def cancel(root: Path, config: ClusterConfig, echo: Echo) -> int:
    """`brainalign cluster cancel`: scancel the current run's jobs, then record what finished."""
    record = RunRecord.load(config.run_folder(root))
    if record is None or record.finalized:
        echo("no unfinished cluster run")
        return 0
    slurm.require_slurm()
    slurm.cancel(j.job_id for j in record.jobs.values())
    echo(f"cancelled the {len(record.jobs)} job(s) of run {record.run_id}")
    return finalize(record, config, wait(record, config, echo), echo)
