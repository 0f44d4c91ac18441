"""What runs inside one SLURM job: one DVC stage, the way `dvc repro` runs it.

Under DVC's repository lock the job asks DVC whether the stage changed (an up-to-date stage is
skipped, as `dvc repro` skips it), records the stage's inputs, removes its outputs and tries
DVC's run cache; then, without the lock, it runs the stage's ``cmd`` exactly as DVC does (same
shell, flags, working directory and DVC_ROOT / DVC_STAGE). The job does not touch dvc.lock: the
driver commits every finished stage at the end, in `dvc repro` order.

Faults leave no partial output: a failing or killed command, a timeout or a preemption removes
the stage's outputs. On preemption submitit calls :meth:`StageJob.checkpoint` and requeues the
job, which then runs the stage again from the start.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import submitit

# How long a job whose command was killed by a signal waits for submitit's preemption signal
# before it reports the kill (SLURM sends SIGTERM first, then the requeue signal).
KILL_GRACE_S = 5.0
_child: subprocess.Popen | None = None
_terminated: list[int] = []


class StageFailed(RuntimeError):
    """The stage's command exited with a non-zero code or was killed."""


class StageTimedOut(RuntimeError):
    """The job reached its time limit (SLURM's warning signal) and was not requeued."""


def marker(folder: Path, addressing: str) -> Path:
    """The file saying this stage's outputs were removed by its job (so cleanup is its own)."""
    return folder / "touched" / addressing.replace("/", "%2F")


def remove_outputs(outs: list[str] | tuple[str, ...]) -> None:
    """Delete each output file or folder (DVC's own `remove_outs`, without the lock)."""
    for out in outs:
        path = Path(out)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _stop_child() -> None:
    """Terminate the stage's process group (then kill it when it does not go)."""
    proc = _child
    if proc is None or proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _on_sigterm(signum: int, frame: Any) -> None:
    """SLURM's SIGTERM (scancel, time limit, preemption): pass it on to the command."""
    _terminated.append(signum)
    proc = _child
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)


def _relay(stream: Any, tail: collections.deque) -> None:
    """Copy the command's stderr to the job log, keeping its last lines for the report."""
    for raw in iter(stream.readline, b""):
        sys.stderr.buffer.write(raw)
        sys.stderr.buffer.flush()
        tail.append(raw.decode("utf-8", "replace").rstrip())
    stream.close()


class StageJob(submitit.helpers.Checkpointable):
    """Run DVC stage ``addressing`` of the repository at ``root``; ``folder``: the run's folder.

    Returns a summary (``outcome``: ran | restored | skipped; ``fingerprint``: the inputs it
    used, as DVC records them). Raises :class:`StageFailed` or :class:`StageTimedOut`.
    """

    def __init__(self, root: str, addressing: str, folder: str, outs: tuple[str, ...]) -> None:
        self.root = root
        self.addressing = addressing
        self.folder = folder
        self.outs = tuple(outs)

    def _clean(self) -> None:
        if marker(Path(self.folder), self.addressing).exists():
            remove_outputs(self.outs)

    def _prepare(self) -> tuple[Any, dict[str, Any] | None, str]:
        """Under the DVC lock: (stage, its fingerprint, outcome so far: skip | restored | run)."""
        from dvc.stage.cache import RunCacheNotFoundError

        from brainalign.cluster.dag import collect_stage, fingerprint, open_repo

        with open_repo(Path(self.root), wait_for_lock=True) as repo, repo.lock:
            stage = collect_stage(repo, self.addressing)
            if not stage.changed():
                return stage, None, "skipped"
            mark = marker(Path(self.folder), self.addressing)
            mark.parent.mkdir(parents=True, exist_ok=True)
            mark.write_text(f"{os.environ.get('SLURM_JOB_ID', '')}\n")
            stage.remove_outs(ignore_remove=False, force=False)
            outcome = "run"
            try:
                repo.stage_cache.restore(stage)
                outcome = "restored"
            except RunCacheNotFoundError:
                pass
            return stage, fingerprint(stage), outcome

    def _run_commands(self, stage: Any) -> None:
        """Each line of ``cmd`` through DVC's own shell invocation, as `dvc repro` runs it."""
        global _child
        from dvc.stage.run import _enforce_cmd_list, _make_cmd, get_executable, prepare_kwargs

        executable = get_executable()
        kwargs = prepare_kwargs(stage)
        for cmd in _enforce_cmd_list(stage.cmd):
            print(f"> {cmd}", flush=True)
            tail: collections.deque = collections.deque(maxlen=12)
            _child = subprocess.Popen(_make_cmd(executable, cmd), stderr=subprocess.PIPE,
                                      start_new_session=True, **kwargs)
            relay = threading.Thread(target=_relay, args=(_child.stderr, tail), daemon=True)
            relay.start()
            code = _child.wait()
            relay.join(timeout=10)
            _child = None
            if code == 0:
                continue
            remove_outputs(self.outs)
            if code < 0 or _terminated:
                time.sleep(KILL_GRACE_S)  # a preemption's requeue signal arrives meanwhile
                how = signal.Signals(-code).name if code < 0 else "SIGTERM"
                raise StageFailed(f"{self.addressing}: `{cmd}` was killed ({how}): cancelled, "
                                  "over its time limit, or preempted without requeue")
            lines = "\n".join(f"    {line}" for line in tail if line.strip())
            raise StageFailed(f"{self.addressing}: `{cmd}` exited with code {code}"
                              + (f"; its last error output:\n{lines}" if lines else ""))

    def __call__(self) -> dict[str, Any]:
        start = time.time()
        os.chdir(self.root)
        # `brainalign` and `dvc` of the environment this job's Python belongs to come first.
        os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]
        signal.signal(signal.SIGTERM, _on_sigterm)
        env = submitit.JobEnvironment()
        with contextlib.suppress(FileNotFoundError):
            env.paths.result_pickle.unlink()  # a requeued job's earlier attempt
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        print(f"brainalign cluster: stage {self.addressing} on {socket.gethostname()}, job "
              f"{env.job_id}" + (f" (restart {restarts})" if restarts else ""), flush=True)
        try:
            stage, fp, outcome = self._prepare()
            if outcome == "skipped":
                print(f"Stage '{self.addressing}' didn't change, skipping", flush=True)
            elif outcome == "run":
                self._run_commands(stage)
                outcome = "ran"
        except submitit.core.utils.UncompletedJobError as exc:
            _stop_child()
            self._clean()
            raise StageTimedOut(f"{self.addressing}: reached its time limit (not requeued: "
                                f"{exc})") from None
        except BaseException:
            _stop_child()
            self._clean()
            raise
        return {"stage": self.addressing, "outcome": outcome, "fingerprint": fp,
                "seconds": round(time.time() - start, 1), "restarts": restarts,
                "host": socket.gethostname()}

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Preempted: stop the command, remove what it wrote, requeue the stage from the start."""
        _stop_child()
        self._clean()
        print(f"brainalign cluster: {self.addressing} interrupted; requeued to start over",
              flush=True)
        return super().checkpoint(*args, **kwargs)
