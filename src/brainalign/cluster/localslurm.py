"""A throwaway single-node SLURM on this machine (tests, benchmarks, trying `cluster run`).

munged, slurmctld and slurmd from the Debian packages run in the foreground as children of
this process, with a generated slurm.conf whose state, spool, log and socket files all live in
one temporary folder and whose ports are free ones picked at start. The combination works
without systemd or cgroups (proctrack/linuxproc, task/none, select/cons_tres). Stopping sends
SIGTERM to exactly the three daemons started here (by pid) and removes the folder.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from brainalign.errors import InputError

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo", "srun")
# Debian package of each program (`make slurm` installs them).
PACKAGES = {"munged": "munge", "slurmctld": "slurmctld", "slurmd": "slurmd",
            "sbatch": "slurm-client"}


def missing_programs() -> list[str]:
    """The daemons and clients not found on PATH (or in /usr/sbin)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    return [p for p in DAEMONS + CLIENTS if shutil.which(p, path=path) is None]


def machine_memory_mb() -> int:
    """This machine's memory in MB (the node's RealMemory by default)."""
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _program(name: str) -> str:
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    found = shutil.which(name, path=path)
    if found is None:
        raise InputError(name, "not found: install the Debian packages slurmctld slurmd "
                         "slurm-client munge (`make slurm`)")
    return found


@dataclass
class LocalSlurm:
    """One node (this machine, ``cpus`` CPUs, ``memory_mb`` MB) in one partition ``debug``.

    Use as a context manager, or call :meth:`start` and :meth:`stop`; :attr:`env` holds the
    environment (``SLURM_CONF``) under which sbatch, squeue and friends talk to it.
    """

    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    memory_mb: int = field(default_factory=machine_memory_mb)
    partition: str = "debug"
    root: Path | None = None
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """os.environ plus SLURM_CONF pointing at this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _write_config(self, node: str) -> None:
        assert self.root is not None
        r = self.root
        for sub in ("state", "spool", "log", "munge"):
            (r / sub).mkdir(mode=0o700)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        lines = [
            "ClusterName=brainalign-local",
            f"SlurmctldHost={node}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            f"SlurmUser={getpass.getuser()}",  # root, as the tests run; else the user's own
            f"SlurmdUser={getpass.getuser()}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={r / 'munge' / 'munge.socket'}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU_Memory",
            "DefMemPerCPU=500",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=2",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            "ReturnToService=2",
            "SlurmdParameters=config_overrides",
            "MinJobAge=600",
            "KillWait=10",
            "OverTimeLimit=0",
            "InactiveLimit=0",
            "MailProg=/bin/true",
            "JobRequeue=1",
            f"NodeName={node} NodeAddr=127.0.0.1 CPUs={self.cpus} "
            f"RealMemory={self.memory_mb} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 60.0) -> LocalSlurm:
        """Write the configuration, start the three daemons, wait until the node is idle."""
        missing = missing_programs()
        if missing:
            raise InputError(", ".join(missing), "not found: install the Debian packages "
                             "slurmctld slurmd slurm-client munge (`make slurm`)")
        self.root = Path(tempfile.mkdtemp(prefix="brainalign-slurm-"))
        node = socket.gethostname().split(".")[0]
        self._write_config(node)
        r = self.root
        log = (r / "log" / "daemons.out").open("ab")
        try:
            self.procs["munged"] = subprocess.Popen(
                [_program("munged"), "--foreground", "--force",
                 f"--socket={r / 'munge' / 'munge.socket'}",
                 f"--key-file={r / 'munge' / 'munge.key'}",
                 f"--pid-file={r / 'munge' / 'munged.pid'}",
                 f"--log-file={r / 'log' / 'munged.log'}",
                 f"--seed-file={r / 'munge' / 'munged.seed'}"],
                stdout=log, stderr=subprocess.STDOUT, env=self.env)
            self._wait_for(lambda: (r / "munge" / "munge.socket").exists(), timeout, "munged")
            self.procs["slurmctld"] = subprocess.Popen(
                [_program("slurmctld"), "-D", "-i", "-f", str(self.conf)],
                stdout=log, stderr=subprocess.STDOUT, env=self.env)
            self.procs["slurmd"] = subprocess.Popen(
                [_program("slurmd"), "-D", "-N", node, "-f", str(self.conf)],
                stdout=log, stderr=subprocess.STDOUT, env=self.env)
            self._wait_for(self._node_idle, timeout, "the node to become idle")
        except BaseException:
            self.stop()
            raise
        finally:
            log.close()
        return self

    def _jobs_left(self) -> bool:
        out = subprocess.run([_program("squeue"), "-h", "-o", "%i"], env=self.env,
                             capture_output=True, text=True, timeout=10)
        return out.returncode == 0 and bool(out.stdout.strip())

    def _node_idle(self) -> bool:
        out = subprocess.run([_program("sinfo"), "-h", "-N", "-o", "%T"], env=self.env,
                             capture_output=True, text=True, timeout=10)
        return out.returncode == 0 and out.stdout.strip().rstrip("*") == "idle"

    def _wait_for(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"local SLURM: {dead[0]} exited (code "
                                   f"{self.procs[dead[0]].returncode}); logs in {self.root}/log")
            if ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"local SLURM: timed out waiting for {what}; logs in {self.root}/log")

    def stop(self) -> None:
        """Cancel what still runs, SIGTERM the daemons started here (by pid, slurmd first),
        then remove the folder."""
        if self.procs.get("slurmctld") is not None and self.procs["slurmctld"].poll() is None:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run([_program("scancel"), "--full", "--user", getpass.getuser()],
                               env=self.env, capture_output=True, timeout=30)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and self._jobs_left():
                    time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> LocalSlurm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
