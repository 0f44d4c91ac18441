"""`brainalign cluster ...`: run the stale pipeline stages as SLURM jobs (README "Running on a
cluster"). Heavy imports (DVC, submitit) happen inside the commands."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from brainalign.errors import InputError

app = typer.Typer(
    help="Run the pipeline's stale stages as SLURM jobs (submitit), recorded in DVC.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
ParamsOpt = Annotated[Path, typer.Option("--params", help="Parameter file (its `cluster` "
                                         "section).")]


def _config(params: Path, kinds: set[str] | None = None):
    from brainalign.cluster.config import parse_cluster
    from brainalign.params import load_params

    return parse_cluster(load_params(params).get("cluster"), kinds, where=str(params))


@contextlib.contextmanager
def _dvc_errors() -> Iterator[None]:
    """DVC's own errors (a corrupt dvc.yaml, a lock held elsewhere) as one line naming DVC."""
    from dvc.exceptions import DvcException

    try:
        yield
    except DvcException as exc:
        raise InputError("dvc", str(exc)) from None


@app.command("run")
def run_cmd(
    params: ParamsOpt = Path("params.yaml"),
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the jobs and record "
                                       "them in dvc.lock (--no-wait: submit and return).")] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the jobs and their resources; "
                                          "submit nothing.")] = False,
) -> None:
    """Submit every stale stage (and what depends on it) as a SLURM job, wait, `dvc commit`.

    Finishes an earlier run that was not recorded yet first; a rerun submits only what is
    still stale (failed, killed, timed out or never run).
    """
    from brainalign.cluster import dag, runner

    root = Path.cwd()
    with _dvc_errors():
        config = _config(params, dag.stage_kinds(root))
        code = runner.run(root, config, typer.echo, wait_for_jobs=wait, dry_run=dry_run)
    raise typer.Exit(code)


@app.command("status")
def status_cmd(params: ParamsOpt = Path("params.yaml")) -> None:
    """The jobs of the current run (pending, running, done, failed) with a progress count."""
    from brainalign.cluster import runner

    raise typer.Exit(runner.status(Path.cwd(), _config(params), typer.echo))


@app.command("cancel")
def cancel_cmd(params: ParamsOpt = Path("params.yaml")) -> None:
    """scancel the current run's jobs; record what had finished, remove partial outputs."""
    from brainalign.cluster import runner

    with _dvc_errors():
        code = runner.cancel(Path.cwd(), _config(params), typer.echo)
    raise typer.Exit(code)


@app.command("local", context_settings={"allow_extra_args": True,
                                        "ignore_unknown_options": True})
def local_cmd(
    ctx: typer.Context,
    cpus: Annotated[int, typer.Option("--cpus", help="CPUs of the node.")] = os.cpu_count() or 1,
    memory_mb: Annotated[int | None, typer.Option("--memory-mb", help="Memory of the node (MB; "
                         "default: this machine's).")] = None,
) -> None:
    """A single-node SLURM on this machine for the command after ``--`` (then stopped).

    Example: ``brainalign cluster local -- brainalign cluster run``. Without a command it
    prints the SLURM_CONF to export and runs until interrupted.
    """
    from brainalign.cluster.localslurm import LocalSlurm, machine_memory_mb

    with LocalSlurm(cpus=cpus, memory_mb=memory_mb or machine_memory_mb()) as cluster:
        typer.echo(f"local SLURM: 1 node, {cpus} CPUs, partition debug; "
                   f"export SLURM_CONF={cluster.conf}", err=True)
        if not ctx.args:
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                raise typer.Exit(0) from None
        code = subprocess.run(ctx.args, env=cluster.env).returncode
    raise typer.Exit(code)
