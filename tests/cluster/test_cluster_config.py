"""params.yaml ``cluster``: values, defaults per stage kind, and one clear error for bad ones
(at parse time, and from SLURM itself: an unknown partition, a request sbatch refuses)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from toy_project import BIN, TOY_PARAMS, make_toy, run

from brainalign.cluster.config import (
    Resources,
    mem_megabytes,
    parse_cluster,
    stage_kind,
    time_minutes,
)
from brainalign.cluster.dag import load_plan, stage_kinds
from brainalign.errors import InputError
from brainalign.params import load_params

REPO = Path(__file__).resolve().parents[2]

KINDS = {"extract", "regress", "rsa", "downstream", "topline", "aggregate"}


@pytest.mark.parametrize(("value", "minutes"), [
    (90, 90), ("90", 90), ("30:30", 31), ("4:00:00", 240), ("1-00:00:00", 1440), ("2-12", 3600),
    ("1-2:30", 1590),
])
def test_time_limits_in_slurm_formats(value, minutes):
    assert time_minutes(value, "k") == minutes


@pytest.mark.parametrize(("value", "mb"), [("16G", 16384), ("500M", 500), ("2T", 2 * 1024**2),
                                           ("1024", 1024), (64, 64), ("8gb", 8192)])
def test_memory_sizes(value, mb):
    assert mem_megabytes(value, "k") == mb


def test_kinds_take_default_then_builtin_values():
    config = parse_cluster({"resources": {"default": {"partition": "cpu", "mem": "8G"},
                                          "extract": {"partition": "gpu", "gpus": 1}}}, KINDS)
    extract = config.resources_for("extract")
    assert (extract.partition, extract.gpus, extract.mem, extract.cpus) == ("gpu", 1, "8G", 1)
    assert config.resources_for("rsa") == Resources(partition="cpu", gpus=0, cpus=1, mem="8G",
                                                    time="1:00:00")
    params = extract.submitit_parameters()
    assert params == {"time": 60, "partition": "gpu", "cpus_per_task": 1, "gpus_per_node": 1,
                      "mem": "8192M"}
    assert stage_kind("extract@soundnet") == "extract" and stage_kind("paper") == "paper"


def test_the_repository_params_cluster_section_parses():
    """params.yaml's `cluster` section (or its absence) is valid for this dvc.yaml."""
    params = load_params(REPO / "params.yaml")
    config = parse_cluster(params.get("cluster"), stage_kinds(REPO))
    assert config.resources_for("extract").time is not None


@pytest.mark.parametrize(("mapping", "key", "message"), [
    ({"resources": {"extract": {"gpus": "two"}}}, "cluster.resources.extract.gpus",
     "expected an integer"),
    ({"resources": {"extract": {"gpus": -1}}}, "cluster.resources.extract.gpus", ">= 0"),
    ({"resources": {"default": {"cpus": 0}}}, "cluster.resources.default.cpus", ">= 1"),
    ({"resources": {"rsa": {"mem": "lots"}}}, "cluster.resources.rsa.mem", "memory size"),
    ({"resources": {"rsa": {"time": "soon"}}}, "cluster.resources.rsa.time", "time limit"),
    ({"resources": {"rsa": {"time": 0}}}, "cluster.resources.rsa.time", "at least one minute"),
    ({"resources": {"rsa": {"gpu": 1}}}, "cluster.resources.rsa.gpu", "unknown key"),
    ({"resources": {"extrct": {"gpus": 1}}}, "cluster.resources.extrct",
     "not a stage kind of dvc.yaml"),
    ({"resources": ["extract"]}, "cluster.resources", "expected a mapping"),
    ({"poll_seconds": 0}, "cluster.poll_seconds", "> 0"),
    ({"polling": 1}, "cluster.polling", "unknown key"),
    ({"setup": "module load cuda"}, "cluster.setup", "expected a list"),
])
def test_bad_values_name_the_key(mapping, key, message):
    with pytest.raises(InputError, match=message) as err:
        parse_cluster(mapping, KINDS)
    assert str(err.value).startswith(f"params.yaml: {key}")


def _toy_with(tmp_path, resources: dict):
    params = copy.deepcopy(TOY_PARAMS)
    params["cluster"]["resources"].update(resources)
    root = make_toy(tmp_path / "toy", params)
    (root / "release").touch()
    return root


def _one_error_line(done) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert not (done.stdout.strip()), done.stdout
    return lines[0]


def test_a_bad_value_stops_the_cli_with_one_line(tmp_path, slurm_env):
    root = _toy_with(tmp_path, {"work": {"gpus": "two"}})
    done = run([str(BIN / "brainalign"), "cluster", "run"], root, slurm_env, check=False)
    line = _one_error_line(done)
    assert line == ("error: params.yaml: cluster.resources.work.gpus: expected an integer, "
                    "got 'two'")


def test_an_unknown_partition_is_one_clear_error(tmp_path, slurm_env):
    root = _toy_with(tmp_path, {"work": {"partition": "gpu"}})
    done = run([str(BIN / "brainalign"), "cluster", "run"], root, slurm_env, check=False)
    line = _one_error_line(done)
    assert line.startswith("error: params.yaml: cluster.resources.work.partition: no partition "
                           "'gpu' on this cluster (sinfo lists debug)")
    assert not (root / ".dvc" / "tmp" / "cluster" / "current").exists()  # nothing submitted


def test_a_request_sbatch_refuses_is_one_clear_error_and_nothing_stays_queued(
        tmp_path, slurm_env):
    root = _toy_with(tmp_path, {"work": {"gpus": 1}})  # the local node has no GPU
    done = run([str(BIN / "brainalign"), "cluster", "run"], root, slurm_env, check=False)
    line = _one_error_line(done)
    assert line.startswith("error: params.yaml: cluster.resources.work: sbatch refused the job "
                           "of work@a: ")
    assert run(["squeue", "-h"], root, slurm_env).stdout.strip() == ""  # prep never ran
    assert not (root / "out").exists()
    status = run([str(BIN / "dvc"), "status", "--json"], root, slurm_env).stdout
    assert "work@a" in yaml.safe_load(status)


def test_dry_run_lists_the_jobs_and_submits_nothing(tmp_path, slurm_env):
    root = _toy_with(tmp_path, {"work": {"cpus": 2, "time": "2:00:00"}})
    out = run([str(BIN / "brainalign"), "cluster", "run", "--dry-run"], root, slurm_env).stdout
    assert out.splitlines()[0].startswith("prep: job {'time': 60")
    assert "work@b: job {'time': 120, 'cpus_per_task': 2, 'mem': '200M'}, after prep" in out
    assert "total: job" in out and "after work@a, work@b" in out
    assert not (root / ".dvc" / "tmp" / "cluster" / "current").exists()


def test_the_plan_follows_dvc(tmp_path):
    root = make_toy(tmp_path / "toy")
    plan = load_plan(root)
    assert plan.order == ("prep", "work@a", "work@b", "total")
    assert plan.stale == set(plan.order)
    assert plan.stages["total"].upstream == ("work@a", "work@b")
    assert plan.dependents("prep") == {"work@a", "work@b", "total"}
    assert plan.todo() == list(plan.order)
