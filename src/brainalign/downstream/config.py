"""Protocol settings of the downstream evaluation (``params.yaml: downstream``), paper defaults."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from brainalign.errors import InputError

INITIALIZATIONS = ("xavier_uniform", "xavier_normal")
PAPER_TASKS = (
    "nsynth_pitch-v2.2.3-50h",
    "tfds_gtzan-1.0.0-full",
    "speech_commands-v0.0.2-full",
    "tfds_crema_d-1.0.0-full",
    "fsd50k-v1.0-full",
    "esc50-v2.0.0-full",
)
"""The six HEAR tasks of the paper (folder names of the 48 kHz tarballs), in Table 1 order."""
MINI_TASKS = ("nat165-category", "synth-pitch", "synth-multilabel")
"""The offline demo tasks built by :func:`brainalign.downstream.mini_tasks.build_mini_tasks`."""


def _where(section: str, key: str) -> str:
    return f"params.yaml: {section}.{key}"


def check_int(value: Any, where: str, minimum: int | None = None) -> int:
    """A whole number (not a bool), at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(where, f"expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise InputError(where, f"expected an integer >= {minimum}, got {value}")
    return value


def check_float(value: Any, where: str, low: float | None = None, high: float | None = None,
                low_open: bool = False) -> float:
    """A real number within [low, high] (or (low, high] when ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(where, f"expected a number, got {value!r}")
    value = float(value)
    if low is not None and (value < low or (low_open and value == low)):
        raise InputError(where, f"expected a number {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise InputError(where, f"expected a number <= {high}, got {value}")
    return value


def check_list(value: Any, where: str, item: Callable[[Any, str], Any]) -> tuple[Any, ...]:
    """A non-empty list whose items pass ``item``."""
    if not isinstance(value, list | tuple) or not value:
        raise InputError(where, f"expected a non-empty list, got {value!r}")
    return tuple(item(v, f"{where}[{i}]") for i, v in enumerate(value))


def check_choice(value: Any, where: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InputError(where, f"expected one of {list(choices)}, got {value!r}")
    return value


def check_keys(params: Mapping[str, Any] | None, section: str, allowed: set[str]) -> dict[str, Any]:
    """The section as a dict; unknown keys raise naming the key."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise InputError(f"params.yaml: {section}",
                         f"expected a mapping, got {type(params).__name__}")
    for key in params:
        if key not in allowed:
            raise InputError(_where(section, str(key)),
                             f"unknown key; expected one of {sorted(allowed)}")
    return dict(params)


@dataclass(frozen=True)
class ProbeConfig:
    """One point of the 16-configuration grid."""

    hidden_dims: tuple[int, ...]
    lr: float
    initialization: str

    def as_dict(self) -> dict[str, Any]:
        return {"hidden_dims": list(self.hidden_dims), "lr": self.lr,
                "initialization": self.initialization}


@dataclass(frozen=True)
class DownstreamConfig:
    """Probe protocol; defaults are the paper's values (paper-spec.md section 4, Downstream).

    ``seed`` seeds every probe fit (each fit restarts from it, so results do not depend on the
    order of fits). ``num_threads`` fixes torch's CPU threads during fitting (None: leave as is);
    the default 1 is fastest for these small MLPs on a shared CPU (OpenMP threads contending
    with other processes made 2 threads 5-10x slower here) and makes CPU runs reproducible.
    ``workers``: probe fits run in that many forked CPU processes (results are identical to
    ``workers: 1``; ignored on CUDA). ``embed_batch_size``: clips per call of the embedder.
    ``max_input_dim``: not in the paper (None keeps its rule); layers wider than this get the
    per-layer PCA too (see :func:`probe.prepare_split`). ``device``: ``auto`` = CUDA when
    available. ``metrics_backend``: ``auto`` = heareval when
    importable. ``unseen_labels``: ``warn`` | ``error`` (see hear_tasks). ``tasks``: default task
    folder names when the stage is called without an explicit list.
    """

    tasks: tuple[str, ...] = PAPER_TASKS
    seed: int = 0
    batch_size: int = 1024
    max_epochs: int = 200
    patience: int = 20
    dropout: float = 0.1
    hidden_dims: tuple[tuple[int, ...], ...] = ((1024,), (1024, 1024))
    learning_rates: tuple[float, ...] = (3.2e-3, 1e-3, 3.2e-4, 1e-4)
    initializations: tuple[str, ...] = INITIALIZATIONS
    unseen_labels: str = "warn"
    metrics_backend: str = "auto"
    device: str = "auto"
    num_threads: int | None = 1
    workers: int = 1
    embed_batch_size: int = 32
    max_input_dim: int | None = None

    def grid(self) -> list[ProbeConfig]:
        """The grid in sklearn ``ParameterGrid`` order of the authors' code (keys sorted:
        hidden_dims, initialization, lr; the last varies fastest)."""
        return [
            ProbeConfig(hidden_dims=h, lr=lr, initialization=init)
            for h in self.hidden_dims
            for init in self.initializations
            for lr in self.learning_rates
        ]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "hidden_dims":
                v = [list(h) for h in v]
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, section: str = "downstream"
                    ) -> DownstreamConfig:
        """Validate a params.yaml section; unknown keys and malformed values raise InputError."""
        p = check_keys(params, section, {f.name for f in fields(cls)})
        kw: dict[str, Any] = {}
        w = lambda k: _where(section, k)  # noqa: E731
        if "tasks" in p:
            kw["tasks"] = check_list(p["tasks"], w("tasks"), _check_name)
        for key, minimum in (("seed", 0), ("batch_size", 2), ("max_epochs", 1), ("patience", 1),
                             ("embed_batch_size", 1), ("workers", 1)):
            if key in p:
                kw[key] = check_int(p[key], w(key), minimum)
        if "dropout" in p:
            kw["dropout"] = check_float(p["dropout"], w("dropout"), 0.0, 0.99)
        if "hidden_dims" in p:
            kw["hidden_dims"] = check_list(
                p["hidden_dims"], w("hidden_dims"),
                lambda v, where: check_list(v, where, lambda x, wh: check_int(x, wh, 1)),
            )
        if "learning_rates" in p:
            kw["learning_rates"] = check_list(
                p["learning_rates"], w("learning_rates"),
                lambda v, where: check_float(v, where, 0.0, None, low_open=True),
            )
        if "initializations" in p:
            kw["initializations"] = check_list(
                p["initializations"], w("initializations"),
                lambda v, where: check_choice(v, where, INITIALIZATIONS),
            )
        if "unseen_labels" in p:
            kw["unseen_labels"] = check_choice(p["unseen_labels"], w("unseen_labels"),
                                               ("warn", "error"))
        if "metrics_backend" in p:
            kw["metrics_backend"] = check_choice(p["metrics_backend"], w("metrics_backend"),
                                                 ("auto", "heareval", "builtin"))
        if "device" in p:
            kw["device"] = check_choice(p["device"], w("device"), ("auto", "cpu", "cuda"))
        if "num_threads" in p and p["num_threads"] is not None:
            kw["num_threads"] = check_int(p["num_threads"], w("num_threads"), 1)
        if "max_input_dim" in p and p["max_input_dim"] is not None:
            kw["max_input_dim"] = check_int(p["max_input_dim"], w("max_input_dim"), 1)
        return cls(**kw)


def _check_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or "/" in value or value in (".", ".."):
        raise InputError(where, f"expected a task folder name, got {value!r}")
    return value
