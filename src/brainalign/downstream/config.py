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
HEAR_BATCH_SAMPLES = 1_344_000
"""Audio samples per embedding call in heareval (``0.7 * 120 / sample_duration * 16000 / rate``
clips of ``sample_duration * rate`` samples: 0.7 * 120 s of 16 kHz audio at any rate)."""
EMBED_DTYPES = ("float32", "float16")
EXECUTION_KEYS = ("tasks", "workers", "embed_batch_size", "embed_batch_samples", "batched")
"""Settings that change how the downstream stage runs but not its scores."""


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


def check_bool(value: Any, where: str) -> bool:
    """true or false (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise InputError(where, f"expected true or false, got {value!r}")
    return value


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
    order of fits). ``seeds`` (not in the paper, whose protocol is one fit per configuration:
    None = ``[seed]``): every configuration is trained once per seed, the grid selects on the
    mean validation score over the seeds and the task reports the mean test score over the seeds
    of the chosen configuration (per-seed scores are kept in the result JSON); a variance
    reduction for small tasks. ``task_seeds`` (not in the paper): per task folder name, seeds
    that replace ``seeds`` for that task (the embedded default averages its noisiest task,
    ``nat165-category``, over three seeds). ``batched`` (True): the grid's configurations (and
    seeds, and the refits on the other k-fold splits) train together as one stacked model
    (:mod:`brainalign.downstream.batched`), each exactly the computation of its own sequential
    fit; False = one :func:`probe.fit_probe` per fit. ``num_threads`` fixes torch's CPU threads
    during fitting (None: leave as is); the default 1 is fastest for these small MLPs on a shared
    CPU (OpenMP threads contending with other processes made 2 threads 5-10x slower here) and
    makes CPU runs reproducible. ``workers``: CPU parallelism of the fits, results identical to
    ``workers: 1``; sequential: that many forked processes; batched: that many threads, each
    training a share of the stacked fits (ignored on CUDA). ``embed_batch_size``: at most this
    many clips per call of the embedder; ``embed_batch_samples``: and at most this many audio
    samples (at the model's rate) per call, always at least one clip (default: the budget of
    heareval's ``0.7 * 120 / sample_duration * 16000 / rate`` clips per batch, 84 s of 16 kHz
    audio; None: no bound). ``embed_dtype``: storage of the cached embeddings, ``float32``
    (default) or ``float16`` (half the disk and memory; not in the paper, changes scores
    slightly). ``max_input_dim``: not in the paper (None keeps its rule); layers wider than
    this get the per-layer PCA too (see :func:`probe.prepare_split`). ``device``: ``auto`` =
    CUDA when available. ``metrics_backend``: ``auto`` = heareval when importable.
    ``unseen_labels``: ``warn`` | ``error`` (see hear_tasks). ``tasks``: default task folder
    names when the stage is called without an explicit list.
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
    seeds: tuple[int, ...] | None = None
    batched: bool = True
    embed_batch_samples: int | None = HEAR_BATCH_SAMPLES
    embed_dtype: str = "float32"
    task_seeds: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @property
    def fit_seeds(self) -> tuple[int, ...]:
        """The seeds every configuration is trained with (``seeds``, else ``[seed]``)."""
        return self.seeds if self.seeds is not None else (self.seed,)

    def seeds_for(self, task: str) -> tuple[int, ...]:
        """The seeds of one task: its ``task_seeds`` entry, else :attr:`fit_seeds`."""
        return dict(self.task_seeds).get(task, self.fit_seeds)

    def protocol(self, task: str | None = None) -> dict[str, Any]:
        """The settings that determine the scores (recorded in each task's result JSON):
        everything but the task list and execution details (batching, workers, embed calls);
        ``seeds`` are those of ``task`` when given."""
        out = {k: v for k, v in self.as_dict().items() if k not in EXECUTION_KEYS}
        out["seeds"] = list(self.fit_seeds if task is None else self.seeds_for(task))
        return out

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
            elif f.name == "task_seeds":
                v = {name: list(seeds) for name, seeds in v}
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
        if "seeds" in p and p["seeds"] is not None:
            seeds = _distinct_seeds(p["seeds"], w("seeds"))
            if "seed" in p and seeds != (kw["seed"],):
                raise InputError(w("seeds"), f"conflicts with downstream.seed = {kw['seed']}; "
                                 "give one of the two (seeds: [s] is the same as seed: s)")
            kw["seeds"] = seeds
        if "task_seeds" in p and p["task_seeds"] is not None:
            kw["task_seeds"] = _check_task_seeds(p["task_seeds"], w("task_seeds"))
        if "batched" in p:
            kw["batched"] = check_bool(p["batched"], w("batched"))
        if "embed_batch_samples" in p:
            value = p["embed_batch_samples"]
            kw["embed_batch_samples"] = (None if value is None
                                         else check_int(value, w("embed_batch_samples"), 1))
        if "embed_dtype" in p:
            kw["embed_dtype"] = check_choice(p["embed_dtype"], w("embed_dtype"), EMBED_DTYPES)
        return cls(**kw)


def _distinct_seeds(value: Any, where: str) -> tuple[int, ...]:
    seeds = check_list(value, where, lambda v, wh: check_int(v, wh, 0))
    if len(set(seeds)) != len(seeds):
        raise InputError(where, f"seeds must be distinct, got {list(seeds)}")
    return seeds


def _check_task_seeds(value: Any, where: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """``{task folder name: [seed, ...]}``, sorted by name (a canonical, hashable form)."""
    if not isinstance(value, Mapping):
        raise InputError(where, f"expected a mapping of task name to seeds, got {value!r}")
    return tuple(sorted((_check_name(name, f"{where}.{name}"),
                         _distinct_seeds(seeds, f"{where}.{name}"))
                        for name, seeds in value.items()))


def _check_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or "/" in value or value in (".", ".."):
        raise InputError(where, f"expected a task folder name, got {value!r}")
    return value
