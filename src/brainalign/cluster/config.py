"""params.yaml ``cluster``: where run records and logs go, and the SLURM resources per stage kind.

A stage's kind is its name before ``@`` (``extract@soundnet`` -> ``extract``; ``topline`` ->
``topline``). ``resources.default`` applies to every kind; a kind's entry overrides some of its
keys. Every bad value raises one :class:`InputError` naming ``params.yaml: cluster.<key>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from brainalign.errors import InputError
from brainalign.params import section

_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_MEM = re.compile(r"^(\d+)([KMGT]?)B?$", re.IGNORECASE)


def time_minutes(value: str | int, key: str) -> int:
    """A SLURM time limit ("MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM[:SS]") in whole minutes."""
    if isinstance(value, int) and not isinstance(value, bool):
        minutes = value
    elif isinstance(value, str) and (m := _TIME.match(value.strip())):
        days, a, b, c = m.groups()
        if days is not None:  # D-HH[:MM[:SS]]
            seconds = ((int(days) * 24 + int(a)) * 60 + int(b or 0)) * 60 + int(c or 0)
        elif c is not None:  # HH:MM:SS
            seconds = (int(a) * 60 + int(b)) * 60 + int(c)
        elif b is not None:  # MM:SS
            seconds = int(a) * 60 + int(b)
        else:  # MM
            seconds = int(a) * 60
        minutes = -(-seconds // 60)
    else:
        raise InputError(key, f"expected a SLURM time limit such as 90, \"4:00:00\" or "
                         f"\"1-00:00:00\", got {value!r}")
    if minutes < 1:
        raise InputError(key, f"expected a time limit of at least one minute, got {value!r}")
    return minutes


def mem_megabytes(value: str | int, key: str) -> int:
    """A memory request ("16G", "500M", "2T" or an integer number of MB) in MB."""
    if isinstance(value, int) and not isinstance(value, bool):
        mb = value
    elif isinstance(value, str) and (m := _MEM.match(value.strip())):
        scale = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2}[m.group(2).upper()]
        mb = int(int(m.group(1)) * scale)
    else:
        raise InputError(key, f"expected a memory size such as \"16G\" or \"500M\", got {value!r}")
    if mb < 1:
        raise InputError(key, f"expected at least 1M of memory, got {value!r}")
    return mb


@dataclass(frozen=True)
class Resources:
    """The SLURM request of one stage kind; None: inherit ``resources.default`` (or SLURM's)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gpus: int | None = None
    cpus: int | None = None
    mem: str | int | None = None
    time: str | int | None = None

    def over(self, base: Resources) -> Resources:
        """These values where set, else ``base``'s."""
        return replace(base, **{f.name: getattr(self, f.name) for f in fields(self)
                                if getattr(self, f.name) is not None})

    def submitit_parameters(self) -> dict[str, Any]:
        """The request as submitit SlurmExecutor parameters."""
        out: dict[str, Any] = {"time": time_minutes(self.time or 60, "time")}
        for name in ("partition", "account", "qos", "constraint"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.cpus is not None:
            out["cpus_per_task"] = self.cpus
        if self.gpus:
            out["gpus_per_node"] = self.gpus
        if self.mem is not None:
            out["mem"] = f"{mem_megabytes(self.mem, 'mem')}M"
        return out


DEFAULT_RESOURCES = Resources(gpus=0, cpus=1, mem="4G", time="1:00:00")


@dataclass(frozen=True)
class ClusterConfig:
    """params.yaml ``cluster`` section."""

    folder: str = ".dvc/tmp/cluster"
    poll_seconds: float = 15.0
    signal_delay_s: int = 90
    setup: tuple[str, ...] = ()
    resources: dict[str, Resources] | None = None

    def __post_init__(self) -> None:
        if not self.poll_seconds > 0:
            raise InputError("cluster.poll_seconds", f"expected a number > 0, got "
                             f"{self.poll_seconds}")
        if self.signal_delay_s < 0:
            raise InputError("cluster.signal_delay_s", f"expected an integer >= 0, got "
                             f"{self.signal_delay_s}")

    def resources_for(self, kind: str) -> Resources:
        """``resources.<kind>`` over ``resources.default`` over the built-in default."""
        table = self.resources or {}
        base = table.get("default", Resources()).over(DEFAULT_RESOURCES)
        return table.get(kind, Resources()).over(base)

    def run_folder(self, root: Path) -> Path:
        """The folder of run records and job logs (relative paths: under the repository)."""
        folder = Path(self.folder)
        return folder if folder.is_absolute() else root / folder


def stage_kind(addressing: str) -> str:
    """``extract@soundnet`` -> ``extract``; ``topline`` -> ``topline``."""
    return addressing.split("@", 1)[0]


def parse_cluster(mapping: Mapping[str, Any] | None, kinds: Iterable[str] | None = None,
                  where: str = "params.yaml") -> ClusterConfig:
    """Validate params.yaml ``cluster`` (``kinds``: the stage kinds of dvc.yaml, when known)."""
    if mapping is not None and not isinstance(mapping, Mapping):
        raise InputError(f"{where}: cluster", f"expected a mapping, got {mapping!r}")
    mapping = dict(mapping or {})
    table = mapping.pop("resources", None)
    if table is not None and not isinstance(table, Mapping):
        raise InputError(f"{where}: cluster.resources",
                         f"expected a mapping of stage kind -> resources, got {table!r}")
    config = section(ClusterConfig, mapping, "cluster", where)
    known = None if kinds is None else sorted(set(kinds) | {"default"})
    resources: dict[str, Resources] = {}
    for kind, entry in (table or {}).items():
        if known is not None and kind not in known:
            raise InputError(f"{where}: cluster.resources.{kind}",
                             f"not a stage kind of dvc.yaml; expected some of {known}")
        prefix = f"{where}: cluster.resources.{kind}"
        res = section(Resources, entry, f"cluster.resources.{kind}", where)
        if res.gpus is not None and res.gpus < 0:
            raise InputError(f"{prefix}.gpus", f"expected an integer >= 0, got {res.gpus}")
        if res.cpus is not None and res.cpus < 1:
            raise InputError(f"{prefix}.cpus", f"expected an integer >= 1, got {res.cpus}")
        if res.mem is not None:
            mem_megabytes(res.mem, f"{prefix}.mem")
        if res.time is not None:
            time_minutes(res.time, f"{prefix}.time")
        resources[str(kind)] = res
    return replace(config, resources=resources)
