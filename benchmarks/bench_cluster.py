"""Benchmark `brainalign cluster run` against a serial `dvc repro` on the same machine.

The reduced end-to-end configuration (tests/test_pipeline_e2e.py: 3 models, small voxel sets,
a one-config probe grid; every stage incl. the PDF) is fetched once and copied twice; one copy
runs `dvc repro`, the other `brainalign cluster run` on a local single-node SLURM with 2 CPUs
(two 1-CPU jobs at a time). One run each way; both must write the same dvc.lock. Writes
benchmarks/results/cluster.{json,md}. The ratio is this machine's, not a promise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "cluster"))

from reduced_project import make_project, project_env  # noqa: E402

from brainalign.cluster.localslurm import LocalSlurm  # noqa: E402


def _timed(cmd: list[str], cwd: Path, env: dict, log: Path) -> float:
    t0 = time.perf_counter()
    with log.open("w") as fh:
        done = subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (see {log}):\n{log.read_text()[-2000:]}")
    return seconds


def _job_seconds(root: Path) -> list[float]:
    """The run time of each job of the cluster run (from the jobs' results)."""
    from submitit.core.utils import pickle_load

    folder = root / ".dvc" / "tmp" / "cluster"
    record = json.loads((folder / (folder / "current").read_text().strip() / "run.json")
                        .read_text())
    return [float(pickle_load(Path(j["result"]))[1]["seconds"])
            for j in record["jobs"].values()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=REPO.parent / "bench-cluster")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local SLURM node")
    args = parser.parse_args()
    mirror = Path(os.environ.get("BRAINALIGN_MIRROR") or REPO.parent / "shared" / "mirror")
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    base = make_project(args.workdir / "fetched", mirror)
    serial, cluster = args.workdir / "serial", args.workdir / "cluster"
    shutil.copytree(base, serial, symlinks=True)
    shutil.copytree(base, cluster, symlinks=True)
    logs = args.results / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    load_start = list(os.getloadavg())
    serial_s = _timed(["dvc", "repro"], serial, project_env(mirror), logs / "cluster_serial.log")
    with LocalSlurm(cpus=args.cpus, memory_mb=4000) as slurm:
        env = project_env(mirror, {"SLURM_CONF": str(slurm.conf)})
        cluster_s = _timed(["brainalign", "cluster", "run"], cluster, env,
                           logs / "cluster_run.log")
    same_lock = (serial / "dvc.lock").read_bytes() == (cluster / "dvc.lock").read_bytes()
    status = subprocess.run(["dvc", "status"], cwd=cluster, env=project_env(mirror),
                            capture_output=True, text=True).stdout
    jobs = _job_seconds(cluster)
    result = {
        "serial_dvc_repro_seconds": round(serial_s, 1),
        "cluster_run_seconds": round(cluster_s, 1),
        "speedup": round(serial_s / cluster_s, 2),
        "jobs": len(jobs),
        "sum_of_job_seconds": round(sum(jobs), 1),
        "local_slurm_cpus": args.cpus,
        "dvc_lock_identical": same_lock,
        "dvc_status_clean": "up to date" in status,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_start": load_start, "load_average_end": list(os.getloadavg())},
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "cluster.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        "# Cluster benchmark (reduced end-to-end configuration, one run each way)", "",
        f"Machine: {result['machine']['cpus']} CPUs, {result['machine']['platform']}; load "
        f"average {load_start[0]:.1f} at the start (other jobs share the machine).", "",
        "| run | wall seconds |", "|---|---|",
        f"| serial `dvc repro` | {result['serial_dvc_repro_seconds']} |",
        f"| `brainalign cluster run`, local SLURM, {args.cpus} x 1-CPU jobs at a time | "
        f"{result['cluster_run_seconds']} |", "",
        f"Ratio {result['speedup']}x; {len(jobs)} jobs totalling {result['sum_of_job_seconds']} "
        f"s of stage time; dvc.lock identical: {same_lock}; `dvc status` clean: "
        f"{result['dvc_status_clean']}.", "",
    ]
    (args.results / "cluster.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0 if same_lock else 1


if __name__ == "__main__":
    raise SystemExit(main())
