"""The probe grid trained as one batched model: many fits stacked, each exactly its own fit.

A *member* is one fit of :func:`brainalign.downstream.probe.fit_probe`: a grid configuration,
a seed and a data split. Members on the same data split with the same hidden sizes form a
*group*; a group's parameters are stacked along a leading member axis (``(members, out, in)``
weights) and trained together: one shuffled batch of clips per (split, seed) shared by its
members, batched matrix products (``baddbmm`` / ``bmm``) for every Linear layer, one Adam
update per learning rate. Depths: the paper's two
([1024] and [1024, 1024]) are two groups rather than padded (a padded 1-layer member would not
compute what its sequential fit computes). The refits of the chosen configuration on the other
k-fold splits train as groups of their own in one run (their training data differ).

Per member it is the same computation as training it alone:

- *Initialisation*: each member's model is built exactly as ``fit_probe`` builds it
  (``torch.manual_seed(seed)``, then :class:`probe.LayerWeightedMLP`) and its tensors are
  stacked; the state of the random generator after the build becomes the member's own dropout
  generator.
- *Dropout*: on CPU each member's masks are drawn from its own generator with the operations of
  ``torch.nn.functional.dropout`` (``bernoulli_(1 - p)``, ``div_(1 - p)``, a product), i.e. the
  masks of its sequential run, bit for bit. On CUDA the CUDA generator is switched to the
  member's state around each member's own ``F.dropout`` call, which draws the sequential run's
  masks too (written for CUDA, not run: the build machines have no GPU).
- *Shuffling*: one ``torch.randperm`` per epoch from a generator seeded with the seed, shared by
  the members of a (split, seed): the sequential run's batches.
- *Adam*: torch's fused kernel on each member's slices with the member's learning rate; the
  update is elementwise, so a slice gets the values a separate tensor gets.
- *Early stopping and checkpoints* per member (patience, strict improvement, NaN never improves,
  best weights and BatchNorm statistics restored before scoring). A member that stops is
  *frozen* by leaving the stack: the group is re-stacked without it and costs nothing more.
- *Validation*: every epoch, each member's validation predictions are scored by the monitor
  ``fit_probe`` uses (:data:`metrics.MONITOR_METRICS`, numpy, per member) or, in ``fast`` mode,
  by the torch versions vectorised over the members on their device
  (:func:`metrics.torch_monitor`; FSD50K's mAP of 16 configurations in one pass).

Exactness. On CPU with one torch thread per fit (``num_threads: 1``, the default) the batched
grid is *bit-identical* to the sequential one: every score, validation curve, epoch count and
layer weight (tested on multiclass, multilabel and k-fold tasks, both depths, several seeds).
It rests on each batched operation computing each member's numbers with the arithmetic of the
per-fit operation, which the tests check: ``baddbmm`` / ``bmm`` per slice = ``addmm`` / ``mm``
(MKL's batch gemm; the products aten would do in a plain loop go member by member), with the
weight gradient taken as ``grad.t() @ x`` as autograd does for ``addmm`` (:class:`_Linear`);
BatchNorm per member (on CUDA over the members' channels side by side, the same per-channel
statistics); softmax, sigmoid, ReLU, the losses per row or element. The layer-weighted sum
(:class:`_ExactMix`) evaluates the sequential ``torch.sum(x * w[None, :, None], dim=1)`` block
by block of 64 clips, from the shared batch, instead of through one (batch, layers, dim) product
per fit, and its gradient in aten's order (each clip's sum over the dimension, then clip after
clip); it is checked against the sequential expression on a real batch before training and
replaced by that expression if they ever differ. ``fast`` mode (the default on CUDA) computes
the mix as one matrix product per shared batch instead: equal within float rounding, not bit
for bit (and on CUDA cuBLAS's batched and unbatched products need not agree in the last bit).

CPU parallelism: ``workers`` threads, each training its share of the members (groups are cut
into per-thread stacks of balanced cost, re-cut whenever members stop); with one torch thread
per fit the results do not depend on the number of workers.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
import torch
import torch.nn.functional as F

from brainalign.downstream.config import DownstreamConfig, ProbeConfig
from brainalign.downstream.metrics import MONITOR_METRICS, MetricFn, torch_monitor
from brainalign.downstream.probe import FitResult, LayerWeightedMLP, SplitInputs, adam_update

log = logging.getLogger(__name__)

MODES = ("auto", "exact", "fast")
_BETAS = (0.9, 0.999)
_EPS = 1e-8
_BN_MOMENTUM = 0.1
_BN_EPS = 1e-5
_NAIVE_BMM = 400
"""aten's CPU bmm computes products with fewer multiply-adds than this in a plain loop, whose
rounding differs from the BLAS gemm of ``addmm``; such tiny products go member by member."""


@dataclass(frozen=True)
class Member:
    """One fit: a grid configuration trained with ``seed`` on data split ``split``."""

    conf: ProbeConfig
    seed: int
    split: int


@dataclass
class _State:
    """A member's parameters, optimiser state, random streams and early-stopping record."""

    index: int
    member: Member
    tensors: dict[str, torch.Tensor]  # parameters, Adam moments ("m:", "v:") and BN buffers
    rng: torch.Generator | torch.Tensor  # CPU generator, or the CUDA generator's state
    step: int = 0
    best_score: float = -math.inf
    best_epoch: int = 0
    wait: int = 0
    curve: list[float] = field(default_factory=list)
    best: dict[str, torch.Tensor] | None = None
    done: bool = False
    epochs_run: int = 0
    seconds: float = 0.0
    stack: _Stack | None = None
    slot: int = -1


class _Data:
    """One data split's tensors on the device."""

    def __init__(self, inputs: SplitInputs, multilabel: bool, device: torch.device) -> None:
        self.inputs = inputs
        self.x_train = torch.from_numpy(inputs.x_train).to(device)
        if multilabel:
            self.y_train = torch.from_numpy(inputs.y_train).to(device)
        else:
            self.y_train = torch.from_numpy(inputs.y_train.argmax(axis=1)).to(device)
        self.x_valid = torch.from_numpy(inputs.x_valid).to(device)
        self.x_test = torch.from_numpy(inputs.x_test).to(device)
        self.y_valid_t = torch.from_numpy(inputs.y_valid).to(device)
        self.n_train = int(self.x_train.shape[0])
        self.n_layers, self.dim = (int(v) for v in inputs.x_train.shape[1:])
        self.n_labels = int(inputs.y_train.shape[1])


def _param_names(depth: int) -> list[str]:
    names = ["layers"]
    for j in range(depth):
        names += [f"w{j}", f"b{j}", f"bn_w{j}", f"bn_b{j}"]
    return names + ["w_out", "b_out"]


def _init_state(index: int, member: Member, data: _Data, cfg: DownstreamConfig,
                device: torch.device) -> _State:
    """The member's model exactly as ``fit_probe`` builds it, and the generator state after."""
    torch.manual_seed(member.seed)
    model = LayerWeightedMLP(data.n_layers, data.dim, member.conf.hidden_dims, data.n_labels,
                             cfg.dropout, member.conf.initialization)
    rng: torch.Generator | torch.Tensor
    if device.type == "cuda":
        rng = torch.cuda.get_rng_state(device)  # fresh after manual_seed: the model is built on CPU
    else:
        rng = torch.Generator()
        rng.set_state(torch.get_rng_state())
    t: dict[str, torch.Tensor] = {"layers": model.layer_weights.data}
    for j in range(len(member.conf.hidden_dims)):
        linear, bn = model.hidden[4 * j], model.hidden[4 * j + 1]
        t[f"w{j}"], t[f"b{j}"] = linear.weight.data, linear.bias.data
        t[f"bn_w{j}"], t[f"bn_b{j}"] = bn.weight.data, bn.bias.data
        t[f"mean{j}"], t[f"var{j}"] = bn.running_mean, bn.running_var
    t["w_out"], t["b_out"] = model.output.weight.data, model.output.bias.data
    tensors = {k: v.to(device) for k, v in t.items()}
    for name in _param_names(len(member.conf.hidden_dims)):
        tensors[f"m:{name}"] = torch.zeros_like(tensors[name])
        tensors[f"v:{name}"] = torch.zeros_like(tensors[name])
    return _State(index, member, tensors, rng)


_MIX_ROWS = 64
"""Clips per block of the exact layer mix: the (block, layers, dim) product stays in cache."""


class _ExactMix(torch.autograd.Function):
    """Layer-weighted sums of every member's batch, bit-identical to the sequential model's
    ``torch.sum(x * w[None, :, None], dim=1)`` and to its gradient, computed block by block
    of clips instead of through the whole (batch, layers, dim) product tensor per member.

    Each output element's sum (and each clip's share of the gradient) depends only on its own
    clip, so the blocks reproduce the whole; the gradient's sum over clips is taken clip after
    clip (``index_add_``), the order of aten's reduction of the product over (clips, dim).
    """

    @staticmethod
    def forward(ctx, weights: torch.Tensor, xs: Sequence[torch.Tensor]  # type: ignore[override]
                ) -> torch.Tensor:
        ctx.xs = xs
        n, _, dim = xs[0].shape
        out = weights.new_empty((weights.shape[0], n, dim))
        w = weights.detach()
        for i, x in enumerate(xs):
            wi = w[i][None, :, None]
            for start in range(0, n, _MIX_ROWS):
                block = slice(start, start + _MIX_ROWS)
                torch.sum(x[block] * wi, dim=1, out=out[i, block])
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        xs: Sequence[torch.Tensor] = ctx.xs
        n, n_layers, _ = xs[0].shape
        grad_w = grad.new_empty((len(xs), n_layers))
        if n_layers == 1:  # aten reduces the (clips, 1, dim) product as one flat sum
            for i, x in enumerate(xs):
                grad_w[i, 0] = torch.sum(grad[i] * x[:, 0])
            return grad_w, None
        rows = grad.new_empty((n, n_layers))
        first = torch.zeros(n, dtype=torch.long, device=grad.device)
        for i, x in enumerate(xs):
            g = grad[i]
            for start in range(0, n, _MIX_ROWS):  # per clip and layer: the sum over dim
                block = slice(start, start + _MIX_ROWS)
                torch.sum(g[block, None, :] * x[block], dim=2, out=rows[block])
            acc = grad.new_zeros((1, n_layers))
            acc.index_add_(0, first, rows)  # then clip after clip, in order
            grad_w[i] = acc[0]
        return grad_w, None


def _direct_mix(weights: torch.Tensor, xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The sequential model's expression, member by member (the fallback of :class:`_ExactMix`)."""
    return torch.stack([torch.sum(x * w[None, :, None], dim=1)
                        for x, w in zip(xs, weights.unbind(0), strict=True)])


def _fast_mix(weights: torch.Tensor, xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """One matrix product per shared batch (members of a batch are adjacent): fast, equal to
    the sequential sum within float rounding."""
    parts, start = [], 0
    while start < len(xs):
        end = start
        while end < len(xs) and xs[end] is xs[start]:
            end += 1
        parts.append(torch.einsum("cl,nld->cnd", weights[start:end], xs[start]))
        start = end
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def exact_mix_matches(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether :class:`_ExactMix` reproduces the sequential expression on this batch (values
    and the layer-weight gradient), bit for bit."""
    with torch.enable_grad():
        return _exact_mix_matches(x, w)


def _exact_mix_matches(x: torch.Tensor, w: torch.Tensor) -> bool:
    w1 = w.detach().clone().requires_grad_(True)
    ref = torch.sum(x * w1[None, :, None], dim=1)
    grad = torch.linspace(-1.0, 1.0, ref.numel(), dtype=ref.dtype, device=ref.device
                          ).reshape(ref.shape)
    ref.backward(grad)
    w2 = w.detach().clone()[None].requires_grad_(True)
    got = _ExactMix.apply(w2, [x])
    got.backward(grad[None])
    assert w1.grad is not None and w2.grad is not None
    return bool(torch.equal(ref, got[0]) and torch.equal(w1.grad, w2.grad[0]))


def _bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.bmm``, member by member with ``torch.mm`` where aten's bmm would not use BLAS."""
    if a.device.type == "cpu" and a.shape[1] * a.shape[2] * b.shape[2] < _NAIVE_BMM:
        return torch.stack([torch.mm(x, y) for x, y in zip(a.unbind(0), b.unbind(0),
                                                           strict=True)])
    return torch.bmm(a, b)


class _Linear(torch.autograd.Function):
    """Every member's ``F.linear`` as one batched product, with the gradients computed by the
    very products autograd uses for ``addmm(bias, x, weight.t())``: ``grad @ weight`` for the
    input and ``grad.t() @ x`` for the weight (not ``(x.t() @ grad).t()``: autograd picks the
    former because ``weight.t()`` is column-major, and the two round differently)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor,  # type: ignore[override]
                bias: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        ctx.save_for_backward(x, weight)
        if x.device.type == "cpu" and x.shape[1] * x.shape[2] * weight.shape[1] < _NAIVE_BMM:
            return torch.stack([torch.addmm(b, xi, w.t()) for xi, w, b
                                in zip(x.unbind(0), weight.unbind(0), bias.unbind(0),
                                       strict=True)])
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: torch.Tensor  # type: ignore[override]
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = _bmm(grad, weight) if ctx.needs_input_grad[0] else None
        grad_w = _bmm(grad.transpose(1, 2), x) if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(dim=1) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Every member's ``F.linear``: (members, batch, in) -> (members, batch, out)."""
    return _Linear.apply(x, weight, bias)


def _batch_norm(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
                var: torch.Tensor, training: bool) -> torch.Tensor:
    """Every member's BatchNorm1d (training: batch statistics, running statistics updated in
    place in the contiguous (members, channels) ``mean`` and ``var``). On CPU member by member
    (half the time of the alternative: no transposed copies); on CUDA in one call, with the
    members' channels side by side, (batch, members * channels): statistics are per channel,
    so per member, either way."""
    if h.device.type == "cpu":
        return torch.stack([
            F.batch_norm(x, mean[i], var[i], weight[i], bias[i], training, _BN_MOMENTUM,
                         _BN_EPS) for i, x in enumerate(h.unbind(0))])
    members, n, channels = h.shape
    flat = h.transpose(0, 1).reshape(n, members * channels)
    out = F.batch_norm(flat, mean.view(-1), var.view(-1), weight.reshape(-1), bias.reshape(-1),
                       training, _BN_MOMENTUM, _BN_EPS)
    return out.view(n, members, channels).transpose(0, 1).contiguous()


class _Stack:
    """Members of one group, stacked on a leading axis, trained with shared batches."""

    def __init__(self, states: list[_State], data: _Data, engine: _Engine,
                 source: str = "tensors") -> None:
        self.states = states
        self.data = data
        self.engine = engine
        self.depth = len(states[0].member.conf.hidden_dims)
        self.names = _param_names(self.depth)
        sources = [s.best if source == "best" else s.tensors for s in states]
        assert all(src is not None for src in sources)
        self.t = {k: torch.stack([src[k] for src in sources])  # type: ignore[index]
                  for k in sources[0]}  # type: ignore[union-attr]
        for name in self.names:
            self.t[name].requires_grad_(True)
        self.steps = {name: torch.tensor(float(states[0].step), device=data.x_train.device)
                      for name in self.names}
        self.by_lr: dict[float, list[int]] = {}
        for i, s in enumerate(states):
            self.by_lr.setdefault(s.member.conf.lr, []).append(i)
            if source == "tensors":
                s.tensors = {}
                s.stack, s.slot = self, i
        self.seeds = [s.member.seed for s in states]

    def release(self) -> None:
        """Hand every member its tensors back (views of the stacked ones)."""
        for i, s in enumerate(self.states):
            s.tensors = {k: v.detach()[i] for k, v in self.t.items()}
            s.step = int(self.steps[self.names[0]].item())
            s.stack, s.slot = None, -1

    def snapshot(self, slot: int) -> dict[str, torch.Tensor]:
        """A copy of one member's parameters and BatchNorm statistics (its checkpoint)."""
        return {k: v.detach()[slot].clone() for k, v in self.t.items()
                if not k.startswith(("m:", "v:"))}

    # -- the model ---------------------------------------------------------------------------
    def _mix(self, weights: torch.Tensor, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        mode = self.engine.mix_mode
        if mode == "fast":
            return _fast_mix(weights, xs)
        if mode == "direct":
            return _direct_mix(weights, xs)
        return _ExactMix.apply(weights, xs)

    def _dropout(self, h: torch.Tensor) -> torch.Tensor:
        p = self.engine.cfg.dropout
        if p == 0:
            return h  # F.dropout returns its input unchanged and draws nothing
        if h.device.type == "cuda":
            h = h.contiguous()
            outs = []
            for i, s in enumerate(self.states):
                torch.cuda.set_rng_state(s.rng, h.device)  # type: ignore[arg-type]
                outs.append(F.dropout(h[i], p, True))
                s.rng = torch.cuda.get_rng_state(h.device)
            return torch.stack(outs)
        noise = torch.empty(h.shape, dtype=h.dtype, device=h.device)
        for i, s in enumerate(self.states):
            noise[i].bernoulli_(1 - p, generator=s.rng)  # type: ignore[arg-type]
        noise.div_(1 - p)
        return h * noise

    def forward(self, xs: Sequence[torch.Tensor], training: bool) -> torch.Tensor:
        """Logits (members, batch, labels) for each member's batch ``xs[i]``."""
        t = self.t
        w = torch.abs(t["layers"])
        w = w / torch.sum(w, dim=1, keepdim=True)
        h = self._mix(w, xs)
        for j in range(self.depth):
            h = _linear(h, t[f"w{j}"], t[f"b{j}"])
            h = _batch_norm(h, t[f"bn_w{j}"], t[f"bn_b{j}"], t[f"mean{j}"], t[f"var{j}"],
                            training)
            if training:
                h = self._dropout(h)
            h = torch.relu(h)
        return _linear(h, t["w_out"], t["b_out"])

    # -- training ----------------------------------------------------------------------------
    def train_epoch(self, orders: Mapping[tuple[int, int], torch.Tensor]) -> None:
        """One epoch over the shuffled training clips (the last batch of one clip skipped)."""
        data, cfg = self.data, self.engine.cfg
        split = self.states[0].member.split
        seeds = sorted(set(self.seeds))
        for start in range(0, data.n_train, cfg.batch_size):
            idx = {s: orders[(split, s)][start:start + cfg.batch_size] for s in seeds}
            if idx[seeds[0]].numel() < 2:
                continue  # BatchNorm1d cannot train on a single example
            xb = {s: data.x_train[i] for s, i in idx.items()}
            yb = {s: data.y_train[i] for s, i in idx.items()}
            self._step([xb[s] for s in self.seeds], [yb[s] for s in self.seeds])

    def _step(self, xs: list[torch.Tensor], ys: list[torch.Tensor]) -> None:
        engine = self.engine
        for name in self.names:
            self.t[name].grad = None
        logits = self.forward(xs, training=True)
        loss_fn = (F.binary_cross_entropy_with_logits if engine.multilabel else F.cross_entropy)
        losses = [loss_fn(z, y) for z, y in zip(logits.unbind(0), ys, strict=True)]
        torch.stack(losses).sum().backward()
        with torch.no_grad():
            torch._foreach_add_(list(self.steps.values()), 1)
            for lr, slots in self.by_lr.items():
                params, grads, m, v, steps = [], [], [], [], []
                for name in self.names:
                    grad = self.t[name].grad
                    assert grad is not None
                    for i in slots:
                        params.append(self.t[name][i])
                        grads.append(grad[i])
                        m.append(self.t[f"m:{name}"][i])
                        v.append(self.t[f"v:{name}"][i])
                        steps.append(self.steps[name])
                adam_update(params, grads, m, v, steps, lr, _BETAS, _EPS, engine.fused)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax / sigmoid outputs (members, clips, labels), in ``batch_size`` chunks as
        ``probe._predict`` (chunking is part of the arithmetic)."""
        out = []
        batch = self.engine.cfg.batch_size
        for start in range(0, x.shape[0], batch):
            chunk = x[start:start + batch]
            logits = self.forward([chunk] * len(self.states), training=False)
            out.append(torch.sigmoid(logits) if self.engine.multilabel
                       else torch.softmax(logits, dim=2))
        return torch.cat(out, dim=1)

    def validate(self) -> list[float]:
        """The monitored metric of every member on the validation clips."""
        probs = self.predict(self.data.x_valid)
        engine = self.engine
        if engine.torch_monitor is not None:
            scores = engine.torch_monitor(probs.double(), self.data.y_valid_t)
            return [float(v) for v in scores.cpu().tolist()]
        y = self.data.inputs.y_valid
        return [float(engine.monitor(p.cpu().numpy().astype(np.float64), y))
                for p in probs.unbind(0)]

    def run_epoch(self, orders: Mapping[tuple[int, int], torch.Tensor]
                  ) -> list[tuple[_State, float]]:
        self.train_epoch(orders)
        return list(zip(self.states, self.validate(), strict=True))


class _Engine:
    """Shared settings of one batched run."""

    def __init__(self, cfg: DownstreamConfig, multilabel: bool, monitor_name: str,
                 fast: bool) -> None:
        self.cfg = cfg
        self.multilabel = multilabel
        self.fused = hasattr(torch, "_fused_adam_")
        self.mix_mode = "fast" if fast else "exact"
        self.monitor_name = monitor_name
        # the unwrapped function: the caller silences warnings once (catch_warnings is not
        # thread-safe, and the lanes score in threads)
        self.monitor = MONITOR_METRICS[monitor_name]
        self.torch_monitor = torch_monitor(monitor_name) if fast else None

    def check_mix(self, data: _Data) -> None:
        """Verify the exact layer mix once, on a real batch; fall back if it ever differs."""
        if self.mix_mode != "exact":
            return
        x = data.x_train[:self.cfg.batch_size]
        w = torch.linspace(0.5, 1.5, data.n_layers, device=x.device)
        if not exact_mix_matches(x, w / torch.sum(w)):
            log.warning("the batched layer mix differs from torch.sum here; using the "
                        "sequential expression per member (slower, same results)")
            self.mix_mode = "direct"


def _cost(state: _State, data: _Data) -> float:
    """Relative training cost of a member per epoch (multiply-adds per clip x clips)."""
    dims = [data.dim, *state.member.conf.hidden_dims, data.n_labels]
    flops = data.n_layers * data.dim + sum(a * b for a, b in pairwise(dims))
    return float(flops * data.n_train)


def _plan(states: list[_State], data: Mapping[int, _Data], lanes: int
          ) -> list[list[list[_State]]]:
    """Cut the groups of active members into per-lane stacks of balanced cost."""
    groups: dict[tuple[int, tuple[int, ...]], list[_State]] = {}
    for s in states:
        groups.setdefault((s.member.split, s.member.conf.hidden_dims), []).append(s)
    pieces: list[list[_State]] = []
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda s: (s.member.seed, s.index))
        k = min(lanes, len(members))
        bounds = [round(i * len(members) / k) for i in range(k + 1)]
        pieces += [members[a:b] for a, b in pairwise(bounds) if b > a]
    pieces.sort(key=lambda p: -sum(_cost(s, data[s.member.split]) for s in p))
    load = [0.0] * lanes
    plan: list[list[list[_State]]] = [[] for _ in range(lanes)]
    for piece in pieces:
        lane = min(range(lanes), key=lambda i: load[i])
        plan[lane].append(piece)
        load[lane] += sum(_cost(s, data[s.member.split]) for s in piece)
    return [lane for lane in plan if lane]


@contextlib.contextmanager
def _run_guard(device: torch.device) -> Iterator[None]:
    """Leave the global random generators as they were (members use their own streams), and
    skip deterministic mode's filling of every new tensor with NaN for the run: the stacked
    activations are large, the filling cost 10 % of a CPU run, and no result reads memory it
    did not write (the fits stay bit-identical)."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()
               ] if device.type == "cuda" else []
    fill = torch.utils.deterministic.fill_uninitialized_memory  # type: ignore[attr-defined]
    try:
        torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = fill  # type: ignore[attr-defined]


def fit_members(
    inputs: Mapping[int, SplitInputs],
    members: Sequence[Member],
    prediction_type: str,
    metrics: Mapping[str, MetricFn],
    monitor_name: str,
    cfg: DownstreamConfig,
    device: torch.device,
    mode: str = "auto",
    on_done: Callable[[Member], None] | None = None,
) -> list[FitResult]:
    """Train every member (one fit each) together; results in ``members`` order.

    Each result equals ``fit_probe(inputs[m.split], prediction_type, metrics, m.conf, cfg,
    device, monitor=get_monitor(monitor_name), seed=m.seed)`` (see the module docstring for how
    exactly). ``mode``: ``exact`` (bit-identical layer mix), ``fast`` (matrix-product layer mix
    and torch monitors), ``auto`` = exact on CPU, fast on CUDA. ``on_done`` is called as each
    member finishes training.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not members:
        return []
    t0 = time.perf_counter()
    multilabel = prediction_type == "multilabel"
    fast = mode == "fast" or (mode == "auto" and device.type == "cuda")
    engine = _Engine(cfg, multilabel, monitor_name, fast)
    data = {k: _Data(inputs[k], multilabel, device) for k in sorted({m.split for m in members})}
    lanes = 1 if device.type == "cuda" else max(1, cfg.workers)
    threads = torch.get_num_threads()
    with _run_guard(device):
        states = [_init_state(i, m, data[m.split], cfg, device) for i, m in enumerate(members)]
        shufflers = {(m.split, m.seed): torch.Generator().manual_seed(m.seed) for m in members}
        pool = (ThreadPoolExecutor(max_workers=lanes, initializer=torch.set_num_threads,
                                   initargs=(threads,)) if lanes > 1 else None)
        try:
            _train(states, data, engine, lanes, shufflers, device, pool, on_done, t0)
        finally:
            if pool is not None:
                pool.shutdown()
    return _score(states, data, engine, metrics)


def _train(states: list[_State], data: Mapping[int, _Data], engine: _Engine, lanes: int,
           shufflers: Mapping[tuple[int, int], torch.Generator], device: torch.device,
           pool: ThreadPoolExecutor | None, on_done: Callable[[Member], None] | None,
           t0: float) -> None:
    cfg = engine.cfg
    active = list(states)
    engine.check_mix(data[min(data)])
    plan = [[_Stack(piece, data[piece[0].member.split], engine) for piece in lane]
            for lane in _plan(active, data, lanes)]

    def run_lane(lane: list[_Stack], orders: Mapping[tuple[int, int], torch.Tensor]
                 ) -> list[tuple[_State, float]]:
        return [r for stack in lane for r in stack.run_epoch(orders)]

    for epoch in range(1, cfg.max_epochs + 1):
        pairs = sorted({(s.member.split, s.member.seed) for s in active})
        orders = {p: torch.randperm(data[p[0]].n_train, generator=shufflers[p]).to(device)
                  for p in pairs}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the monitors' sklearn warnings, as get_monitor
            if pool is None:
                results = [r for lane in plan for r in run_lane(lane, orders)]
            else:
                results = [r for rs in pool.map(run_lane, plan, [orders] * len(plan))
                           for r in rs]
        stopped = []
        for s, score in results:
            s.curve.append(score)
            if score > s.best_score:  # strict; NaN never improves
                assert s.stack is not None
                s.best_score, s.best_epoch, s.wait = score, epoch, 0
                s.best = s.stack.snapshot(s.slot)
            else:
                s.wait += 1
            if s.wait >= cfg.patience or epoch == cfg.max_epochs:
                stopped.append(s)
        if not stopped:
            continue
        for stack in (st for lane in plan for st in lane):
            stack.release()
        for s in stopped:
            s.done, s.epochs_run = True, epoch
            s.seconds = time.perf_counter() - t0
            if s.best is None:
                log.warning("%s (seed %d): validation %s was never finite; keeping the last "
                            "epoch", s.member.conf, s.member.seed, engine.monitor_name)
                s.best = {k: v.clone() for k, v in s.tensors.items()
                          if not k.startswith(("m:", "v:"))}
                s.best_epoch = epoch
            s.tensors = {}
            if on_done is not None:
                on_done(s.member)
        active = [s for s in active if not s.done]
        if not active:
            break
        plan = [[_Stack(piece, data[piece[0].member.split], engine) for piece in lane]
                for lane in _plan(active, data, lanes)]


def _score(states: list[_State], data: Mapping[int, _Data], engine: _Engine,
           metrics: Mapping[str, MetricFn]) -> list[FitResult]:
    """Restore every member's best checkpoint and score validation and test."""
    results: list[FitResult | None] = [None] * len(states)
    groups: dict[tuple[int, tuple[int, ...]], list[_State]] = {}
    for s in states:
        groups.setdefault((s.member.split, s.member.conf.hidden_dims), []).append(s)
    for (split, _), members in sorted(groups.items()):
        d = data[split]
        stack = _Stack(members, d, engine, source="best")
        p_valid, p_test = stack.predict(d.x_valid), stack.predict(d.x_test)
        for i, s in enumerate(members):
            pv = p_valid[i].cpu().numpy().astype(np.float64)
            pt = p_test[i].cpu().numpy().astype(np.float64)
            valid = {name: fn(pv, d.inputs.y_valid) for name, fn in metrics.items()}
            test = {name: fn(pt, d.inputs.y_test) for name, fn in metrics.items()}
            assert s.best is not None
            lw = torch.abs(s.best["layers"])
            weights = (lw / torch.sum(lw)).cpu().tolist()
            results[s.index] = FitResult(s.member.conf, s.best_epoch, s.epochs_run, valid, test,
                                         weights, s.seconds, s.curve)
    return [r for r in results if r is not None]
