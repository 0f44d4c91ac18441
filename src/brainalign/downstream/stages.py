"""Pipeline stage functions of the downstream evaluation (wired into the CLI and DVC by the lead).

- :func:`run_downstream` (stage ``downstream@<model>``): probe one model on HEAR-format tasks;
  writes ``<out_dir>/<task>.json`` (every grid configuration's valid and test scores, the chosen
  configuration, per-split scores) and ``<out_dir>/metrics.json`` (``{task: {"score": task
  score, <metric>: mean test score, ...}}``, for ``dvc metrics``).
- :func:`run_build_mini_tasks`: build the three offline HEAR-format demo tasks.
- :func:`run_overall`: z-score task scores across models into the paper's Overall score.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from brainalign.atomic import write_json
from brainalign.downstream.config import DownstreamConfig, _check_name
from brainalign.downstream.embeddings import EmbedFn, task_embeddings
from brainalign.downstream.hear_tasks import load_task
from brainalign.downstream.metrics import overall_scores
from brainalign.downstream.mini_tasks import MiniTasksConfig, build_mini_tasks
from brainalign.downstream.probe import evaluate_task, torch_threads
from brainalign.errors import InputError
from brainalign.readers import read_json_object

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


def run_downstream(
    model_name: str,
    embed: EmbedFn,
    sample_rate: int,
    tasks_root: str | Path,
    task_names: Sequence[str] | None,
    out_dir: str | Path,
    params: Mapping[str, Any] | None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    model_digest: str = "",
) -> dict[str, float | None]:
    """Evaluate ``model_name`` on each task folder ``<tasks_root>/<task>``.

    ``embed(audio_list, sample_rate) -> {layer: (n_clips, dim)}`` gives time-averaged embeddings
    of every candidate layer; clips are passed at ``sample_rate`` (the model's rate).
    ``task_names`` None uses ``params.tasks``. Embeddings are cached in
    ``<cache_dir>/<model>/<task>.npz`` (default ``<out_dir>/embeddings``; point it outside
    DVC-tracked outputs to keep it between runs), written incrementally while they are computed
    so that an interrupted run resumes (see :mod:`embeddings`). The embedder runs with torch's
    CPU threads set to ``params.num_threads`` (None leaves them). Returns ``{task: score}`` (the
    task's first metric, mean over splits, mean over ``params.seeds``). ``model_digest`` enters
    the caches' fingerprint (what fixes the model: code, weights, extraction settings).
    """
    cfg = DownstreamConfig.from_params(params)
    _check_name(model_name, "model_name")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise InputError("sample_rate", f"expected a positive integer rate, got {sample_rate!r}")
    names = list(cfg.tasks if task_names is None else task_names)
    if not names:
        raise InputError("task_names", "no tasks to evaluate")
    for i, name in enumerate(names):
        _check_name(name, f"task_names[{i}]")
    tasks_root = Path(tasks_root)
    out_dir = Path(out_dir)
    cache = out_dir / "embeddings" if cache_dir is None else Path(cache_dir)
    # Validate every task before spending time on any of them.
    tasks = []
    for name in names:
        root = tasks_root / name
        if not root.is_dir():
            raise InputError(root, "task folder not found")
        tasks.append(load_task(root, cfg.unseen_labels))
    metrics: dict[str, dict[str, float | None]] = {}
    summary: dict[str, float | None] = {}
    for task in tasks:
        t0 = time.perf_counter()
        with torch_threads(cfg.num_threads):
            emb = task_embeddings(task, model_name, embed, sample_rate, cache,
                                  cfg.embed_batch_size, progress, cfg.embed_batch_samples,
                                  cfg.embed_dtype, model_digest=model_digest)
        result = evaluate_task(task, emb, cfg, progress=progress)
        result["sample_rate"] = sample_rate
        write_json(out_dir / f"{task.name}.json", result)
        metrics[task.name] = {"score": result["score"], **result["scores"]}
        summary[task.name] = result["score"]
        log.info("downstream %s/%s done in %.1f s", model_name, task.name,
                 time.perf_counter() - t0)
    write_json(out_dir / METRICS_FILE, metrics)
    return summary


def run_build_mini_tasks(
    wav_dir: str | Path,
    labels_csv: str | Path,
    folds_path: str | Path,
    out_root: str | Path,
    params: Mapping[str, Any] | None,
) -> dict[str, int]:
    """Build the offline HEAR-format demo tasks under ``out_root`` (see mini_tasks)."""
    cfg = MiniTasksConfig.from_params(params)
    return build_mini_tasks(wav_dir, labels_csv, folds_path, out_root, cfg)


def read_model_metrics(path: str | Path) -> dict[str, dict[str, float]]:
    """Read a ``metrics.json`` written by :func:`run_downstream`."""
    shape = 'expected {task: {"score": ..., <metric>: ...}}'
    data = read_json_object(path, "downstream metrics file not found", shape)
    if not all(isinstance(v, dict) for v in data.values()):
        raise InputError(path, shape)
    return data


def run_overall(
    metrics_files: Mapping[str, str | Path],
    out_path: str | Path,
    task_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Overall downstream score per model from each model's ``metrics.json``.

    Task score = the ``score`` entry (the task's first metric, mean over splits). Writes
    ``{"tasks": [...], "models": {model: {"overall", "z": {task}, "scores": {task}}}}`` to
    ``out_path`` and returns ``{model: overall}``.
    """
    scores: dict[str, dict[str, float]] = {}
    tasks: list[str] | None = list(task_names) if task_names is not None else None
    for model, path in metrics_files.items():
        path = Path(path)
        data = read_model_metrics(path)
        names = tasks if tasks is not None else sorted(data)
        scores[model] = {}
        for task in names:
            if task not in data:
                raise InputError(path, f"no score for task {task!r}")
            value = data[task].get("score")
            if value is None:
                raise InputError(path, f"task {task!r}: no finite score")
            scores[model][task] = float(value)
        if tasks is None:
            tasks = names
    assert tasks is not None
    result = overall_scores(scores, tasks)
    write_json(out_path, {
        "tasks": tasks,
        "models": {m: {**result[m], "scores": scores[m]} for m in scores},
    })
    return {m: float(result[m]["overall"]) for m in scores}
