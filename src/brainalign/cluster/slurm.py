"""What SLURM says about jobs and partitions (squeue, sacct, sinfo, scancel).

squeue knows pending, running and recently finished jobs (for ``MinJobAge`` seconds); for
older ones sacct answers where accounting is enabled. A job neither knows is reported from its
submitit result file alone.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable

from brainalign.errors import InputError

ACTIVE = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED",
                    "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED", "SIGNALING",
                    "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "SPECIAL_EXIT", "PREEMPTED"})
"""States after which SLURM may still run the job (a preempted job is requeued or cancelled)."""


def require_slurm() -> None:
    """One clear error when the SLURM client commands are not on PATH."""
    missing = [c for c in ("sbatch", "squeue", "scancel", "sinfo", "srun") if not shutil.which(c)]
    if missing:
        raise InputError(", ".join(missing), "SLURM client commands not found: run on a SLURM "
                         "login node (or try `brainalign cluster local -- ...` on this machine)")


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def partitions() -> set[str]:
    """The partition names SLURM knows (sinfo)."""
    done = _run(["sinfo", "-h", "-o", "%R"])
    if done.returncode != 0:
        raise InputError("sinfo", f"SLURM does not answer: {done.stderr.strip()}")
    return {line.strip() for line in done.stdout.splitlines() if line.strip()}


def job_states(job_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """``{job id: (state, reason)}`` for the jobs SLURM still knows (squeue, then sacct)."""
    ids = sorted({str(j) for j in job_ids}, key=int)
    if not ids:
        return {}
    out: dict[str, tuple[str, str]] = {}
    done = _run(["squeue", "-h", "--states=all", "-j", ",".join(ids), "-o", "%i|%T|%r"])
    if done.returncode == 0:
        for line in done.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 3 and parts[0] in ids:
                out[parts[0]] = (parts[1], parts[2])
    elif "Invalid job id" not in done.stderr:
        raise InputError("squeue", f"SLURM does not answer: {done.stderr.strip()}")
    rest = [j for j in ids if j not in out]
    if rest and shutil.which("sacct"):
        acct = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State,Reason", "-j", ",".join(rest)])
        if acct.returncode == 0:  # fails where accounting is disabled: then nothing known
            for line in acct.stdout.splitlines():
                parts = line.strip().split("|")
                if len(parts) >= 2 and parts[0] in rest:
                    # sacct writes "CANCELLED by 0"
                    out[parts[0]] = (parts[1].split()[0], parts[2] if len(parts) > 2 else "")
    return out


def cancel(job_ids: Iterable[str]) -> None:
    """scancel the jobs (those already finished are ignored by SLURM)."""
    ids = [str(j) for j in job_ids]
    if ids:
        _run(["scancel", *ids])


def release(job_ids: Iterable[str]) -> None:
    """scontrol release held jobs (one clear error when SLURM refuses)."""
    ids = [str(j) for j in job_ids]
    if not ids:
        return
    done = _run(["scontrol", "release", ",".join(ids)])
    if done.returncode != 0:
        cancel(ids)
        raise InputError("scontrol release", f"SLURM refused to release the run's held jobs "
                         f"({done.stderr.strip()}); they were cancelled")
