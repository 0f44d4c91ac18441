"""The paper's layer-weighted MLP probe, its 16-configuration grid and the HEAR split rules.

Protocol (paper-spec.md section 4; the authors' ``learning.MLP`` and ``run_downstream.py``):

- Input: every candidate layer's time-averaged clip vector. If layer sizes differ, each layer gets
  its own PCA fitted on the training clips of the data split, all projected to
  ``min(n_train, smallest layer dim)`` components; equal sizes are used as they are.
- Model: learnable layer weights ``w`` (init 1), combined as ``sum_l |w_l| / sum |w| * x_l``, then
  ``[Linear -> BatchNorm1d -> Dropout(0.1) -> ReLU]`` per hidden size, then a Linear output.
  Linear weights get Xavier init (uniform or normal per grid point) with gain ``'linear'`` for the
  hidden layers and ``'relu'`` for the output; biases keep torch's default init.
- Loss: cross-entropy (multiclass) or BCE-with-logits (multilabel). Adam (torch defaults), batch
  1024, shuffled training batches, at most 200 epochs. After every epoch the task's first metric
  is computed on the validation split (softmax / sigmoid outputs, as heareval does; by the fast
  equivalents in ``metrics.MONITOR_METRICS``); a strict improvement saves the weights, 20 epochs
  without one stop training (Lightning's EarlyStopping / ModelCheckpoint semantics in the
  authors' code); the best weights are restored before scoring validation and test with the
  heareval metrics.
- Grid (16): hidden [1024] or [1024, 1024] x initialization x lr, enumerated in the authors'
  ``ParameterGrid`` order; the best validation score wins, ties to the earlier configuration.
- trainvaltest tasks: the chosen configuration's test score. k-fold tasks: the grid runs on data
  split 0 only; its winner is refit on the other splits; task score = mean of the test scores.

Execution: ``downstream.batched`` (default) trains the grid as one stacked model and then the
refits as another (:mod:`brainalign.downstream.batched`; on CPU bit-identical to the fits one
by one), else :func:`fit_probe` per fit. ``downstream.seeds`` (not in the paper) trains every
configuration once per seed: selection on the mean validation score over the seeds, scores =
means over the seeds (each seed's fit is recorded too); one seed is the paper's protocol.

Deviations, all documented: every fit is seeded (``torch.manual_seed(seed)`` and a seeded
shuffling generator) and runs with ``torch.use_deterministic_algorithms(True)``; a NaN validation
score never counts as an improvement and a configuration whose validation score is NaN is never
chosen (numpy's argmax would pick it); a shuffled training batch of a single clip is skipped
(BatchNorm cannot train on one example; it is reshuffled into other batches in later epochs).
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from brainalign.downstream.config import DownstreamConfig, ProbeConfig
from brainalign.downstream.embeddings import TaskEmbeddings
from brainalign.downstream.hear_tasks import DataSplit, HearTask, check_unseen_labels
from brainalign.downstream.metrics import MetricFn, get_metric, get_monitor, resolve_backend
from brainalign.errors import InputError

log = logging.getLogger(__name__)

_INITS = {"xavier_uniform": nn.init.xavier_uniform_, "xavier_normal": nn.init.xavier_normal_}


class LayerWeightedMLP(nn.Module):
    """Learnable convex combination of layers followed by the HEAR-style MLP."""

    def __init__(self, n_layers: int, in_dim: int, hidden_dims: tuple[int, ...], n_labels: int,
                 dropout: float, initialization: str) -> None:
        super().__init__()
        if initialization not in _INITS:
            raise InputError("initialization", f"expected one of {list(_INITS)}, "
                             f"got {initialization!r}")
        init = _INITS[initialization]
        self.layer_weights = nn.Parameter(torch.ones(n_layers))
        blocks: list[nn.Module] = []
        dim = in_dim
        for hidden in hidden_dims:
            linear = nn.Linear(dim, hidden)
            init(linear.weight, gain=nn.init.calculate_gain("linear"))
            blocks += [linear, nn.BatchNorm1d(hidden), nn.Dropout(dropout), nn.ReLU()]
            dim = hidden
        self.hidden = nn.Sequential(*blocks)
        self.output = nn.Linear(dim, n_labels)
        init(self.output.weight, gain=nn.init.calculate_gain("relu"))

    def normalised_layer_weights(self) -> torch.Tensor:
        """|w| / sum |w|: non-negative layer weights summing to 1."""
        w = torch.abs(self.layer_weights)
        return w / torch.sum(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for ``x`` of shape (batch, n_layers, dim)."""
        w = self.normalised_layer_weights()
        x = torch.sum(x * w[None, :, None], dim=1)
        return self.output(self.hidden(x))


@dataclass(frozen=True)
class SplitInputs:
    """Probe inputs of one data split: (n, n_layers, dim) float32 arrays and float32 targets."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    pca_components: int | None


@dataclass
class FitResult:
    """A fitted probe restored to its best epoch, with its scores."""

    config: ProbeConfig
    best_epoch: int
    epochs_run: int
    valid: dict[str, float]
    test: dict[str, float]
    layer_weights: list[float]
    seconds: float
    valid_curve: list[float]

    def record(self) -> dict[str, Any]:
        return {
            "config": self.config.as_dict(),
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "valid": {k: _num(v) for k, v in self.valid.items()},
            "test": {k: _num(v) for k, v in self.test.items()},
            "layer_weights": [round(w, 8) for w in self.layer_weights],
        }


class Adam:
    """Adam (Kingma & Ba 2015) with torch's defaults (betas 0.9/0.999, eps 1e-8, no weight decay).

    The step is torch's own fused kernel (``torch._fused_adam_``, what
    ``torch.optim.Adam(fused=True)`` runs; about 5x faster on CPU than the per-tensor path for a
    1024x1024 layer), with the per-tensor arithmetic of ``torch.optim.Adam`` as fallback.
    ``torch.optim.Adam`` itself is not used because constructing it imports ``torch._dynamo``
    (4-6 s of the 60 s demo budget on 2 cores). Tests check both paths against torch.optim.Adam.
    """

    def __init__(self, params: list[nn.Parameter], lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 fused: bool | None = None) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.betas, self.eps = lr, betas, eps
        self.fused = hasattr(torch, "_fused_adam_") if fused is None else fused
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        params = [self.params[i] for i in live]
        steps = [self.steps[i] for i in live]
        torch._foreach_add_(steps, 1)
        adam_update(params, [p.grad for p in params], [self.exp_avg[i] for i in live],
                    [self.exp_avg_sq[i] for i in live], steps, self.lr, self.betas, self.eps,
                    self.fused)


@torch.no_grad()
def adam_update(params: list[torch.Tensor], grads: list[torch.Tensor],
                exp_avg: list[torch.Tensor], exp_avg_sq: list[torch.Tensor],
                steps: list[torch.Tensor], lr: float, betas: tuple[float, float], eps: float,
                fused: bool) -> None:
    """One Adam update of each tensor in place (``steps`` already counts this step).

    Elementwise per tensor, so updating views of stacked tensors gives the same values as
    updating separate tensors of the same sizes (the batched grid relies on it).
    """
    beta1, beta2 = betas
    if fused:
        torch._fused_adam_(
            params, grads, exp_avg, exp_avg_sq, [], steps, amsgrad=False, lr=lr,
            beta1=beta1, beta2=beta2, weight_decay=0.0, eps=eps, maximize=False,
            grad_scale=None, found_inf=None,
        )
        return
    for p, g, m, v, t in zip(params, grads, exp_avg, exp_avg_sq, steps, strict=True):
        step = t.item()
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bias2_sqrt = (1 - beta2**step) ** 0.5
        denom = (v.sqrt() / bias2_sqrt).add_(eps)
        p.addcdiv_(m, denom, value=-(lr / (1 - beta1**step)))


def _num(x: float) -> float | None:
    """JSON-safe score: None for NaN/inf."""
    return float(x) if math.isfinite(x) else None


def _stack(task_split: Mapping[str, np.ndarray], layers: tuple[str, ...]) -> list[np.ndarray]:
    return [np.asarray(task_split[layer], dtype=np.float32) for layer in layers]


def prepare_split(task: HearTask, emb: TaskEmbeddings, ds: DataSplit,
                  max_input_dim: int | None = None) -> SplitInputs:
    """Gather the clips of ``ds`` and stack layers, with per-layer PCA when layer sizes differ.

    ``max_input_dim`` (not in the paper; None keeps its rule) also applies the per-layer PCA,
    to min(n_train, max_input_dim, smallest layer) components, when any layer is wider than it:
    a CPU budget for very wide single-layer models such as the SpectroTemporal baseline.
    """
    from sklearn.decomposition import PCA

    def gather(names: tuple[str, ...]) -> tuple[list[np.ndarray], np.ndarray]:
        per_split = [_stack(emb.splits[s], emb.layers) for s in names]
        xs = [np.concatenate([p[i] for p in per_split], axis=0) for i in range(len(emb.layers))]
        y = np.concatenate([task.targets(s) for s in names], axis=0)
        return xs, y

    xtr, ytr = gather(ds.train)
    xva, yva = gather(ds.valid)
    xte, yte = gather(ds.test)
    n_train = ytr.shape[0]
    if n_train < 2:
        raise InputError(f"{task.name} split {ds.index}", f"needs at least 2 training clips, "
                         f"got {n_train}")
    dims = [x.shape[1] for x in xtr]
    n_comp: int | None = None
    too_wide = max_input_dim is not None and max(dims) > max_input_dim
    if len(set(dims)) > 1 or too_wide:
        n_comp = min(n_train, min(dims), max_input_dim or min(dims))
        for i in range(len(xtr)):
            pca = PCA(n_components=n_comp, svd_solver="full").fit(xtr[i])
            xtr[i], xva[i], xte[i] = (pca.transform(x) for x in (xtr[i], xva[i], xte[i]))

    def to3d(xs: list[np.ndarray]) -> np.ndarray:
        return np.ascontiguousarray(np.stack(xs, axis=1), dtype=np.float32)

    return SplitInputs(to3d(xtr), ytr, to3d(xva), yva, to3d(xte), yte, n_comp)


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device", "CUDA requested but not available")
    return torch.device(name)


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Fix torch's CPU thread count for the block (None: leave it)."""
    prev = torch.get_num_threads()
    try:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        yield
    finally:
        torch.set_num_threads(prev)


@contextlib.contextmanager
def deterministic_torch(num_threads: int | None, device: torch.device) -> Iterator[None]:
    """Deterministic algorithms (and a fixed CPU thread count) for the duration of the block."""
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_threads = torch.get_num_threads()
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    try:
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.set_num_threads(prev_threads)


def _predict(model: nn.Module, x: torch.Tensor, multilabel: bool, batch: int) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch):
            logits = model(x[start:start + batch])
            out.append(torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1))
    return torch.cat(out).cpu().numpy().astype(np.float64)


def fit_probe(
    inputs: SplitInputs,
    prediction_type: str,
    metrics: Mapping[str, MetricFn],
    conf: ProbeConfig,
    cfg: DownstreamConfig,
    device: torch.device,
    monitor: MetricFn | None = None,
    seed: int | None = None,
) -> FitResult:
    """Train one probe with early stopping on the first metric; score valid and test.

    ``monitor`` computes the first metric every epoch (default: ``metrics``' first entry);
    the reported scores always come from ``metrics``. ``seed`` (default ``cfg.seed``) seeds the
    initialisation, the dropout masks and the shuffling.
    """
    start_time = time.perf_counter()
    multilabel = prediction_type == "multilabel"
    primary_name = next(iter(metrics))
    primary = monitor if monitor is not None else metrics[primary_name]
    n_layers, dim = inputs.x_train.shape[1:]
    n_labels = inputs.y_train.shape[1]

    seed = cfg.seed if seed is None else seed
    torch.manual_seed(seed)
    shuffle_gen = torch.Generator().manual_seed(seed)
    model = LayerWeightedMLP(n_layers, dim, conf.hidden_dims, n_labels, cfg.dropout,
                             conf.initialization).to(device)
    optimiser = Adam(list(model.parameters()), lr=conf.lr)
    x_train = torch.from_numpy(inputs.x_train).to(device)
    if multilabel:
        y_train = torch.from_numpy(inputs.y_train).to(device)
        loss_fn: nn.Module = nn.BCEWithLogitsLoss()
    else:
        y_train = torch.from_numpy(inputs.y_train.argmax(axis=1)).to(device)
        loss_fn = nn.CrossEntropyLoss()
    x_valid = torch.from_numpy(inputs.x_valid).to(device)
    n = x_train.shape[0]

    best_score = -math.inf
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch = 0
    wait = 0
    epoch = 0
    curve: list[float] = []
    for epoch in range(1, cfg.max_epochs + 1):
        model.train()
        order = torch.randperm(n, generator=shuffle_gen).to(device)
        for s in range(0, n, cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            if idx.numel() < 2:
                continue  # BatchNorm1d cannot train on a single example
            optimiser.zero_grad()
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            loss.backward()
            optimiser.step()
        score = primary(_predict(model, x_valid, multilabel, cfg.batch_size), inputs.y_valid)
        curve.append(score)
        if score > best_score:  # strict; NaN never improves
            best_score = score
            best_epoch = epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            wait = 0
        else:
            wait += 1
            if wait >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        log.warning("%s: validation %s was never finite; keeping the last epoch", conf,
                    primary_name)
        best_epoch = epoch
    p_valid = _predict(model, x_valid, multilabel, cfg.batch_size)
    p_test = _predict(model, torch.from_numpy(inputs.x_test).to(device), multilabel,
                      cfg.batch_size)
    valid = {name: fn(p_valid, inputs.y_valid) for name, fn in metrics.items()}
    test = {name: fn(p_test, inputs.y_test) for name, fn in metrics.items()}
    weights = model.normalised_layer_weights().detach().cpu().tolist()
    return FitResult(conf, best_epoch, epoch, valid, test, weights,
                     time.perf_counter() - start_time, curve)


def select_best(results: list[FitResult], metric: str) -> int:
    """Index of the best validation score (first of ties; NaN never wins; all NaN -> 0)."""
    best, best_score = 0, -math.inf
    for i, r in enumerate(results):
        v = r.valid[metric]
        if v > best_score:
            best, best_score = i, v
    if not math.isfinite(best_score):
        log.warning("no configuration has a finite validation %s; choosing the first", metric)
    return best


@dataclass(frozen=True)
class _Job:
    """One probe fit; ``inputs_key`` names a :data:`_SHARED_INPUTS` entry (inherited by forked
    workers instead of being pickled to them)."""

    inputs_key: int
    prediction_type: str
    evaluation: tuple[str, ...]
    backend: str
    conf: ProbeConfig
    cfg: DownstreamConfig
    device: str
    seed: int = 0


_SHARED_INPUTS: dict[int, SplitInputs] = {}


def _run_job(job: _Job) -> FitResult:
    device = torch.device(job.device)
    with deterministic_torch(job.cfg.num_threads, device):
        metrics = {m: get_metric(m, job.backend) for m in job.evaluation}
        return fit_probe(_SHARED_INPUTS[job.inputs_key], job.prediction_type, metrics, job.conf,
                         job.cfg, device, monitor=get_monitor(job.evaluation[0]), seed=job.seed)


def _run_jobs(jobs: list[_Job], workers: int, bar: tqdm) -> list[FitResult]:
    """Run fits in order, or in ``workers`` forked processes (same results: each fit is seeded
    and single-threaded deterministic)."""
    if workers <= 1 or len(jobs) <= 1:
        out = []
        for job in jobs:
            out.append(_run_job(job))
            bar.update(1)
        return out
    ctx = multiprocessing.get_context("fork")
    results: list[FitResult | None] = [None] * len(jobs)
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
        futures = {pool.submit(_run_job, job): i for i, job in enumerate(jobs)}
        for fut in as_completed(futures):
            results[futures[fut]] = fut.result()
            bar.update(1)
    return [r for r in results if r is not None]


@dataclass
class SeedFits:
    """One configuration's fits on one data split, one per seed."""

    config: ProbeConfig
    seeds: tuple[int, ...]
    fits: list[FitResult]

    def mean(self, which: str, metric: str) -> float:
        """Mean over the seeds of the ``valid`` or ``test`` score ``metric`` (NaN if any is)."""
        return float(np.mean([getattr(f, which)[metric] for f in self.fits]))

    def record(self) -> dict[str, Any]:
        """The fit's record; with several seeds the means and a record per seed."""
        if len(self.fits) == 1:
            return self.fits[0].record()
        metrics = list(self.fits[0].valid)
        return {
            "config": self.config.as_dict(),
            "valid": {m: _num(self.mean("valid", m)) for m in metrics},
            "test": {m: _num(self.mean("test", m)) for m in metrics},
            "seeds": [{"seed": s, **{k: v for k, v in f.record().items() if k != "config"}}
                      for s, f in zip(self.seeds, self.fits, strict=True)],
        }


def select_best_mean(results: list[SeedFits], metric: str) -> int:
    """Index of the best mean validation score over seeds (first of ties; NaN never wins)."""
    best, best_score = 0, -math.inf
    for i, r in enumerate(results):
        v = r.mean("valid", metric)
        if v > best_score:
            best, best_score = i, v
    if not math.isfinite(best_score):
        log.warning("no configuration has a finite validation %s; choosing the first", metric)
    return best


def _group(fits: list[FitResult], confs: list[ProbeConfig], seeds: tuple[int, ...]
           ) -> list[SeedFits]:
    """Fits listed configuration-major, seed-minor -> one SeedFits per configuration."""
    k = len(seeds)
    return [SeedFits(c, seeds, fits[i * k:(i + 1) * k]) for i, c in enumerate(confs)]


def _check_embeddings(task: HearTask, emb: TaskEmbeddings) -> None:
    if set(emb.splits) != set(task.splits):
        raise InputError(f"embeddings of {task.name}", f"splits {sorted(emb.splits)} do not match "
                         f"the task's {sorted(task.splits)}")
    for s in task.splits:
        for layer in emb.layers:
            if emb.splits[s][layer].shape[0] != len(task.split_files[s]):
                raise InputError(f"embeddings of {task.name}", f"split {s!r} layer {layer!r} has "
                                 f"{emb.splits[s][layer].shape[0]} rows for "
                                 f"{len(task.split_files[s])} files")


def evaluate_task(
    task: HearTask, emb: TaskEmbeddings, cfg: DownstreamConfig, progress: bool = True,
    batched_mode: str = "auto",
) -> dict[str, Any]:
    """Grid search + split rules on one task; returns the JSON-ready result record.

    ``cfg.batched`` trains the grid (and then the refits on the other splits) with
    :func:`brainalign.downstream.batched.fit_members`, else one :func:`fit_probe` per fit;
    ``batched_mode`` is its ``mode`` (``auto``: bit-identical on CPU, fast on CUDA).
    """
    _check_embeddings(task, emb)
    backend = resolve_backend(cfg.metrics_backend)
    for m in task.evaluation:
        get_metric(m, backend)  # validates names; imports heareval before any fork
    primary = task.evaluation[0]
    unseen = check_unseen_labels(task, cfg.unseen_labels)
    device = resolve_device(cfg.device)
    data_splits = task.data_splits()
    grid = cfg.grid()
    seeds = cfg.seeds_for(task.name)
    t0 = time.perf_counter()
    n_fits = (len(grid) + len(data_splits) - 1) * len(seeds)
    with tqdm(total=n_fits, desc=f"probe {emb.model}/{task.name}", leave=False,
              disable=not progress) as bar:
        if cfg.batched:
            grid_results, chosen, split_results, pca = _evaluate_batched(
                task, emb, cfg, backend, device, data_splits, grid, seeds, bar, batched_mode)
        else:
            grid_results, chosen, split_results, pca = _evaluate_sequential(
                task, emb, cfg, backend, device, data_splits, grid, seeds, bar)
    scores = {m: float(np.mean([r.mean("test", m) for r in split_results]))
              for m in task.evaluation}
    log.info("%s/%s: %s = %.4f (%d fits, %.1f s)", emb.model, task.name, primary,
             scores[primary], n_fits, time.perf_counter() - t0)
    return {
        "model": emb.model,
        "task": task.name,
        "task_name": task.task_name,
        "prediction_type": task.prediction_type,
        "split_mode": task.split_mode,
        "metric": primary,
        "evaluation": list(task.evaluation),
        "metrics_backend": backend,
        "labels": list(task.labels),
        "layers": list(emb.layers),
        "layer_dims": emb.layer_dims(),
        "pca_components": pca,
        "unseen_labels": {str(k): v for k, v in unseen.items()},
        "protocol": cfg.protocol(task.name),
        "grid": [r.record() for r in grid_results],
        "chosen_index": chosen,
        "chosen_config": grid[chosen].as_dict(),
        "splits": [
            {**ds.as_dict(), **r.record()} for ds, r in zip(data_splits, split_results, strict=True)
        ],
        "score": _num(scores[primary]),
        "scores": {m: _num(v) for m, v in scores.items()},
    }


def _evaluate_sequential(
    task: HearTask, emb: TaskEmbeddings, cfg: DownstreamConfig, backend: str,
    device: torch.device, data_splits: list[DataSplit], grid: list[ProbeConfig],
    seeds: tuple[int, ...], bar: tqdm,
) -> tuple[list[SeedFits], int, list[SeedFits], list[int | None]]:
    """One fit_probe per (configuration, seed), optionally in forked workers."""
    workers = cfg.workers if device.type == "cpu" else 1

    def job(key: int, conf: ProbeConfig, seed: int) -> _Job:
        return _Job(key, task.prediction_type, task.evaluation, backend, conf, cfg, str(device),
                    seed)

    try:
        _SHARED_INPUTS[0] = prepare_split(task, emb, data_splits[0], cfg.max_input_dim)
        pca = [_SHARED_INPUTS[0].pca_components]
        fits = _run_jobs([job(0, c, s) for c in grid for s in seeds], workers, bar)
        grid_results = _group(fits, grid, seeds)
        chosen = select_best_mean(grid_results, task.evaluation[0])
        _SHARED_INPUTS.clear()
        split_results = [grid_results[chosen]]
        # one split's inputs in memory at a time unless fits run in parallel
        batches = [data_splits[1:]] if workers > 1 else [[ds] for ds in data_splits[1:]]
        for batch in batches:
            for ds in batch:
                _SHARED_INPUTS[ds.index] = prepare_split(task, emb, ds, cfg.max_input_dim)
                pca.append(_SHARED_INPUTS[ds.index].pca_components)
            fits = _run_jobs([job(ds.index, grid[chosen], s) for ds in batch for s in seeds],
                             workers, bar)
            split_results += _group(fits, [grid[chosen]] * len(batch), seeds)
            _SHARED_INPUTS.clear()
    finally:
        _SHARED_INPUTS.clear()
    return grid_results, chosen, split_results, pca


def _evaluate_batched(
    task: HearTask, emb: TaskEmbeddings, cfg: DownstreamConfig, backend: str,
    device: torch.device, data_splits: list[DataSplit], grid: list[ProbeConfig],
    seeds: tuple[int, ...], bar: tqdm, mode: str,
) -> tuple[list[SeedFits], int, list[SeedFits], list[int | None]]:
    """The grid (x seeds) as one batched run on split 0, then every other split's refits as
    another (all those splits' inputs in memory together)."""
    from brainalign.downstream.batched import Member, fit_members

    metrics = {m: get_metric(m, backend) for m in task.evaluation}
    primary = task.evaluation[0]

    def run(inputs: dict[int, SplitInputs], members: list[Member]) -> list[FitResult]:
        with deterministic_torch(cfg.num_threads, device):
            return fit_members(inputs, members, task.prediction_type, metrics, primary, cfg,
                               device, mode=mode, on_done=lambda _: bar.update(1))

    first = prepare_split(task, emb, data_splits[0], cfg.max_input_dim)
    pca = [first.pca_components]
    fits = run({0: first}, [Member(c, s, 0) for c in grid for s in seeds])
    del first
    grid_results = _group(fits, grid, seeds)
    chosen = select_best_mean(grid_results, primary)
    split_results = [grid_results[chosen]]
    if len(data_splits) > 1:
        inputs = {ds.index: prepare_split(task, emb, ds, cfg.max_input_dim)
                  for ds in data_splits[1:]}
        pca += [inputs[ds.index].pca_components for ds in data_splits[1:]]
        fits = run(inputs, [Member(grid[chosen], s, ds.index) for ds in data_splits[1:]
                            for s in seeds])
        split_results += _group(fits, [grid[chosen]] * (len(data_splits) - 1), seeds)
    return grid_results, chosen, split_results, pca
