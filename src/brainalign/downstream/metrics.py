"""HEAR scene metrics and the paper's z-scored Overall downstream score.

Scores come from hear-eval-kit (``heareval.score.available_scores``), the published definitions
the paper used. heareval is installed without its obsolete pins (numpy==1.19.2, numba==0.48 have
no Python 3.11 wheels); ``import heareval.score`` works, but if it ever fails (it drags in
sed_eval and dcase_util) the builtin reimplementations below are used. They follow the published
definitions line by line and the tests check them equal to heareval's on random inputs:

- ``top1_acc`` / ``pitch_acc``: fraction of rows whose argmax of the prediction equals the argmax of
  the one-hot target (``np.argmax``: ties go to the lower index);
- ``chroma_acc``: the same, comparing the two argmax indices modulo 12;
- ``mAP``: ``sklearn.metrics.average_precision_score(targets, predictions, average="macro")``
  (a class without positives scores 0, with a warning);
- ``d_prime``: mean over classes of ``norm.ppf(auc) * sqrt(2)``, auc per class from
  ``roc_auc_score(average=None)``; NaN when sklearn raises ValueError;
- ``aucroc``: ``roc_auc_score(average="macro")``; NaN when sklearn raises ValueError.

Early stopping evaluates the first metric after every epoch of every fit; there the vectorised
equivalents in :data:`MONITOR_METRICS` are used (heareval's Python loop and sklearn's per-call
validation would dominate the run time; mAP is reimplemented exactly, tested to 1e-12).

Predictions are scores per class (the probe passes softmax / sigmoid outputs, as heareval does);
targets are one-hot (multiclass) or multi-hot (multilabel) arrays of shape (n, n_labels).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

from brainalign.errors import InputError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MetricFn = Callable[[np.ndarray, np.ndarray], float]

SCENE_METRICS = ("top1_acc", "pitch_acc", "chroma_acc", "mAP", "d_prime", "aucroc")
"""Metric names of HEAR scene tasks that this package can score (all maximised)."""

BACKENDS = ("auto", "heareval", "builtin")


def _check(predictions: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    predictions = np.asarray(predictions)
    targets = np.asarray(targets)
    if predictions.ndim != 2 or targets.shape != predictions.shape:
        raise InputError(
            "metrics", f"expected predictions and targets of equal shape (n, n_labels), got "
            f"{predictions.shape} and {targets.shape}",
        )
    if predictions.shape[0] == 0:
        raise InputError("metrics", "cannot score an empty set of predictions")
    return predictions, targets


def top1_accuracy(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Fraction of rows whose predicted class (argmax) is the target class (argmax of one-hot)."""
    predictions, targets = _check(predictions, targets)
    correct = int(np.sum(np.argmax(predictions, axis=1) == np.argmax(targets, axis=1)))
    return correct / len(targets)


def chroma_accuracy(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Top-1 accuracy ignoring octave errors: label indices compared modulo 12 (heareval)."""
    predictions, targets = _check(predictions, targets)
    pred = np.argmax(predictions, axis=1) % 12
    true = np.argmax(targets, axis=1) % 12
    return int(np.sum(pred == true)) / len(targets)


def mean_average_precision(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Macro-averaged average precision over classes (sklearn)."""
    from sklearn.metrics import average_precision_score

    predictions, targets = _check(predictions, targets)
    return average_precision_score(targets, predictions, average="macro")


def d_prime(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Mean over classes of sqrt(2) * Phi^-1(ROC AUC); NaN when an AUC is undefined (sklearn)."""
    from scipy import stats
    from sklearn.metrics import roc_auc_score

    predictions, targets = _check(predictions, targets)
    try:
        auc = roc_auc_score(targets, predictions, average=None)
    except ValueError:
        return float("nan")
    return np.mean(stats.norm().ppf(auc) * np.sqrt(2.0))


def auc_roc(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Macro ROC AUC; NaN when sklearn cannot compute it."""
    from sklearn.metrics import roc_auc_score

    predictions, targets = _check(predictions, targets)
    try:
        return roc_auc_score(targets, predictions, average="macro")
    except ValueError:
        return float("nan")


BUILTIN_METRICS: dict[str, MetricFn] = {
    "top1_acc": top1_accuracy,
    "pitch_acc": top1_accuracy,
    "chroma_acc": chroma_accuracy,
    "mAP": mean_average_precision,
    "d_prime": d_prime,
    "aucroc": auc_roc,
}


@cache
def heareval_scores() -> Mapping[str, Callable[..., object]] | None:
    """heareval's ``available_scores`` table, or None when ``heareval.score`` cannot be imported."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pkg_resources deprecation from dcase_util
            from heareval.score import available_scores
    except Exception as exc:  # noqa: BLE001 - any import failure means: use the builtins
        log.warning("heareval.score unavailable (%s); using builtin metric definitions", exc)
        return None
    return available_scores


def _heareval_metric(name: str) -> MetricFn:
    factory = heareval_scores()[name]  # type: ignore[index]
    scorer = factory(label_to_idx={})

    def score(predictions: np.ndarray, targets: np.ndarray) -> float:
        predictions, targets = _check(predictions, targets)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn's "no positive class" warnings
            return float(scorer(predictions, targets))  # type: ignore[operator]

    return score


def resolve_backend(backend: str) -> str:
    """Map ``auto`` to ``heareval`` when importable, else ``builtin``; validate the name."""
    if backend not in BACKENDS:
        raise InputError("metrics_backend", f"expected one of {list(BACKENDS)}, got {backend!r}")
    if backend == "builtin":
        return "builtin"
    if heareval_scores() is None:
        if backend == "heareval":
            raise InputError("metrics_backend", "heareval.score cannot be imported")
        return "builtin"
    return "heareval"


def fast_mean_average_precision(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Macro mAP like :func:`mean_average_precision`, vectorised over classes and without
    sklearn's per-call validation (about 30-100x faster); equal to it within float rounding.

    Per class: AP = (1 / n_pos) * sum over positives of the precision at the end of the positive's
    group of tied scores (scores sorted descending); a class without positives scores 0.
    """
    predictions, targets = _check(predictions, targets)
    n = predictions.shape[0]
    order = np.argsort(predictions, axis=0, kind="stable")[::-1]
    scores = np.take_along_axis(predictions, order, axis=0)
    hits = np.take_along_axis(targets > 0, order, axis=0).astype(np.float64)
    rank = np.arange(n)[:, None]
    group_last = np.ones_like(scores, dtype=bool)
    group_last[:-1] = scores[1:] != scores[:-1]
    # index of the last element of each element's tie group
    end = np.minimum.accumulate(np.where(group_last, rank, n)[::-1], axis=0)[::-1]
    precision = np.cumsum(hits, axis=0) / (rank + 1)
    n_pos = hits.sum(axis=0)
    total = np.sum(hits * np.take_along_axis(precision, end, axis=0), axis=0)
    ap = np.divide(total, n_pos, out=np.zeros_like(total), where=n_pos > 0)
    return float(np.mean(ap))


MONITOR_METRICS: dict[str, MetricFn] = {
    "top1_acc": top1_accuracy,
    "pitch_acc": top1_accuracy,
    "chroma_acc": chroma_accuracy,
    "mAP": fast_mean_average_precision,
    "d_prime": d_prime,
    "aucroc": auc_roc,
}
"""Per-epoch early-stopping monitors: vectorised equivalents of the published definitions
(computed every epoch of every fit, where heareval's Python loops and sklearn's validation would
dominate the run time). Reported validation and test scores always use :func:`get_metric`."""


TorchMonitorFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]


def _torch_argmax_accuracy(modulo: int | None) -> TorchMonitorFn:
    def score(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        import torch

        pred = torch.argmax(predictions, dim=-1)  # first maximum, as np.argmax
        true = torch.argmax(targets, dim=-1)
        if modulo is not None:
            pred, true = pred % modulo, true % modulo
        return (pred == true[None]).sum(dim=-1).double() / targets.shape[0]

    return score


def torch_mean_average_precision(predictions: torch.Tensor, targets: torch.Tensor
                                 ) -> torch.Tensor:
    """:func:`fast_mean_average_precision` of many score sets at once, on their device.

    ``predictions``: (members, n, labels); ``targets``: (n, labels). Returns (members,) float64
    scores: the same definition (tie groups credited at their end; a class without positives
    scores 0), equal to the numpy version within float rounding (tests: 1e-12).
    """
    import torch

    members, n, labels = predictions.shape
    scores, order = torch.sort(predictions.double(), dim=1, descending=True, stable=True)
    hits = (targets > 0).double()[None].expand(members, n, labels).gather(1, order)
    rank = torch.arange(n, device=predictions.device)[None, :, None]
    group_last = torch.ones_like(scores, dtype=torch.bool)
    group_last[:, :-1] = scores[:, 1:] != scores[:, :-1]
    # index of the last element of each element's tie group: a reversed running minimum
    last = torch.where(group_last, rank.expand_as(scores), torch.full_like(order, n))
    end = torch.flip(torch.cummin(torch.flip(last, dims=[1]), dim=1).values, dims=[1])
    precision = torch.cumsum(hits, dim=1) / (rank + 1)
    n_pos = hits.sum(dim=1)
    total = torch.sum(hits * precision.gather(1, end), dim=1)
    ap = torch.where(n_pos > 0, total / n_pos.clamp(min=1), torch.zeros_like(total))
    return ap.mean(dim=1)


TORCH_MONITORS: dict[str, TorchMonitorFn] = {
    "top1_acc": _torch_argmax_accuracy(None),
    "pitch_acc": _torch_argmax_accuracy(None),
    "chroma_acc": _torch_argmax_accuracy(12),
    "mAP": torch_mean_average_precision,
}
"""Early-stopping monitors vectorised over the members of a batched grid (torch tensors on the
fit's device); ``d_prime`` and ``aucroc`` have none (the numpy monitors are used)."""


def torch_monitor(name: str) -> TorchMonitorFn | None:
    """The vectorised monitor of metric ``name``, or None when there is none."""
    if name not in SCENE_METRICS:
        raise InputError("evaluation", f"unsupported metric {name!r}")
    return TORCH_MONITORS.get(name)


def get_monitor(name: str) -> MetricFn:
    """The fast early-stopping version of metric ``name``."""
    if name not in SCENE_METRICS:
        raise InputError("evaluation", f"unsupported metric {name!r}")
    fn = MONITOR_METRICS[name]

    def score(predictions: np.ndarray, targets: np.ndarray) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(fn(predictions, targets))

    return score


def get_metric(name: str, backend: str = "auto") -> MetricFn:
    """The scoring function of HEAR metric ``name`` (see :data:`SCENE_METRICS`)."""
    if name not in SCENE_METRICS:
        raise InputError(
            "evaluation", f"unsupported metric {name!r}; scene tasks support {list(SCENE_METRICS)}"
        )
    if resolve_backend(backend) == "heareval":
        return _heareval_metric(name)
    builtin = BUILTIN_METRICS[name]

    def score(predictions: np.ndarray, targets: np.ndarray) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(builtin(predictions, targets))

    return score


def overall_scores(
    task_scores: Mapping[str, Mapping[str, float]], tasks: Sequence[str] | None = None
) -> dict[str, dict[str, object]]:
    """The paper's Overall downstream score of every model.

    ``task_scores[model][task]`` is the model's task score. Each task's scores are z-scored across
    the models ((s - mean) / sample SD, ddof=1); Overall = mean over tasks of the z-scores.
    Needs at least two models; every model must have every task. A task whose score is the same
    for every model (SD = 0) has no spread to rank by: its z-scores are set to 0 (logged).
    Returns ``{model: {"overall": float, "z": {task: float}}}``.
    """
    models = list(task_scores)
    if len(models) < 2:
        raise InputError("overall", f"z-scoring needs at least 2 models, got {len(models)}")
    if tasks is None:
        tasks = sorted(task_scores[models[0]])
    tasks = list(tasks)
    if not tasks:
        raise InputError("overall", "no tasks to average over")
    table = np.empty((len(models), len(tasks)), dtype=np.float64)
    for i, model in enumerate(models):
        for j, task in enumerate(tasks):
            if task not in task_scores[model]:
                raise InputError(f"overall: {model}", f"missing a score for task {task!r}")
            value = float(task_scores[model][task])
            if not np.isfinite(value):
                raise InputError(f"overall: {model}", f"score of task {task!r} is {value}")
            table[i, j] = value
    mean = table.mean(axis=0)
    sd = table.std(axis=0, ddof=1)
    z = np.zeros_like(table)
    for j, task in enumerate(tasks):
        if sd[j] == 0:
            log.warning("task %s: every model scores %.6g; its z-scores are set to 0", task,
                        mean[j])
        else:
            z[:, j] = (table[:, j] - mean[j]) / sd[j]
    return {
        model: {
            "overall": float(z[i].mean()),
            "z": {task: float(z[i, j]) for j, task in enumerate(tasks)},
        }
        for i, model in enumerate(models)
    }
