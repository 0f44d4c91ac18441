"""The pipeline as DVC sees it: stages in `dvc repro` order, which are stale, and recording them.

Everything here asks DVC itself (its Python API): the order is the one `dvc repro` plans
(``plan_repro`` of the active graph), what is stale is `dvc status`, and results are recorded
with `dvc commit` of exactly the stages that ran, in that order, so dvc.lock is written the
same way a serial `dvc repro` writes it.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brainalign.cluster.config import stage_kind
from brainalign.errors import InputError


@dataclass(frozen=True)
class StageInfo:
    """One stage of the pipeline (what the scheduler needs to know about it)."""

    addressing: str
    cmd: tuple[str, ...]
    outs: tuple[str, ...]
    upstream: tuple[str, ...]
    frozen: bool = False

    @property
    def kind(self) -> str:
        return stage_kind(self.addressing)

    @property
    def runs_a_command(self) -> bool:
        """False for data sources (data.dvc) and frozen stages: DVC only verifies those."""
        return bool(self.cmd) and not self.frozen


@dataclass(frozen=True)
class Plan:
    """Every stage `dvc repro` would visit, in its order, and those `dvc status` reports."""

    order: tuple[str, ...]
    stages: dict[str, StageInfo]
    stale: frozenset[str]

    def dependents(self, addressing: str) -> set[str]:
        """Stages that depend on ``addressing``, directly or through others."""
        out: set[str] = set()
        frontier = [addressing]
        while frontier:
            here = frontier.pop()
            for name, info in self.stages.items():
                if here in info.upstream and name not in out:
                    out.add(name)
                    frontier.append(name)
        return out

    def todo(self) -> list[str]:
        """The stale stages and everything downstream of them, in `dvc repro` order.

        Downstream stages are included because their inputs are about to change; the job of
        each checks with DVC when it starts, and one whose inputs came out identical is skipped
        as `dvc repro` skips it.
        """
        wanted = set(self.stale)
        for name in self.stale:
            wanted |= self.dependents(name)
        return [name for name in self.order if name in wanted]


def _cmd_list(cmd: Any) -> tuple[str, ...]:
    if not cmd:
        return ()
    return tuple(cmd) if isinstance(cmd, list) else tuple(str(cmd).splitlines())


def open_repo(root: Path, wait_for_lock: bool = False):
    """DVC's Repo at ``root`` (one clear error when it is not a DVC repository)."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Repo(str(root), _wait_for_lock=wait_for_lock)
    except NotDvcRepoError:
        raise InputError(root, "not a DVC repository (run from the checkout's root)") from None


def load_plan(root: Path) -> Plan:
    """The pipeline of the DVC repository at ``root``: `dvc repro`'s order and `dvc status`."""
    from dvc.dvcfile import PROJECT_FILE
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    # DVC resolves targets against the working directory, as its command line does.
    with contextlib.chdir(root), open_repo(root) as repo:
        status = repo.status()
        with repo.lock:
            graph = get_active_graph(repo.index.graph)
            targets = collect_stages(repo, [PROJECT_FILE])
            steps = plan_repro(graph, targets)
            stages: dict[str, StageInfo] = {}
            for stage in steps:
                upstream = tuple(s.addressing for s in graph.successors(stage))
                stages[stage.addressing] = StageInfo(
                    addressing=stage.addressing,
                    cmd=_cmd_list(stage.cmd),
                    outs=tuple(str(out.fs_path) for out in stage.outs),
                    upstream=upstream,
                    frozen=bool(stage.frozen),
                )
    order = tuple(stages)
    return Plan(order=order, stages=stages, stale=frozenset(s for s in status if s in stages))


def stage_kinds(root: Path) -> set[str]:
    """The stage kinds of the pipeline (names before ``@``), without hashing anything."""
    with contextlib.chdir(root), open_repo(root) as repo:
        return {stage_kind(stage.addressing) for stage in repo.index.stages}


def collect_stage(repo, addressing: str):
    """The Stage object named ``addressing`` (as in `dvc repro <addressing>`)."""
    stages = repo.stage.collect(addressing)
    if len(stages) != 1:
        raise InputError(addressing, f"expected one DVC stage, found {len(stages)}")
    return stages[0]


def fingerprint(stage) -> dict[str, Any]:
    """The stage's command, dependencies and parameters as DVC would record them now.

    Computed by the job before its command runs and again before `dvc commit`: a stage whose
    inputs changed in between is not recorded (it stays stale). Needs the repository lock.
    """
    from dvc.stage.serialize import to_single_stage_lockfile

    stage.save_deps()
    entry = to_single_stage_lockfile(stage)
    return {key: entry[key] for key in ("cmd", "deps", "params") if key in entry}


def current_fingerprints(root: Path, names: Iterable[str]) -> dict[str, dict[str, Any] | None]:
    """:func:`fingerprint` of each stage now (None when a dependency is missing)."""
    from dvc.dependency.base import DependencyDoesNotExistError

    out: dict[str, dict[str, Any] | None] = {}
    with contextlib.chdir(root), open_repo(root) as repo, repo.lock:
        for name in names:
            try:
                out[name] = fingerprint(collect_stage(repo, name))
            except DependencyDoesNotExistError:
                out[name] = None
    return out


def commit(root: Path, names: list[str]) -> None:
    """`dvc commit -f` of ``names``, in this order (the order `dvc repro` would run them)."""
    if not names:
        return
    done = subprocess.run([sys.executable, "-m", "dvc", "commit", "-f", *names], cwd=root,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise InputError("dvc commit", f"failed for {', '.join(names)}:\n"
                         f"{(done.stdout + done.stderr).strip()[-3000:]}")
