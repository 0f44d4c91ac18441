"""The runner interface every model family implements, and the time-averaging helpers.

A runner takes a batch of equal-length waveforms at the model's rate and returns, for every
requested layer, one time-averaged vector per sound. Time averaging follows the paper's protocol
(spec section 4): frame outputs are averaged over time; CNN maps are flattened over channel x
frequency after the average.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from brainalign.errors import InputError

if TYPE_CHECKING:
    import torch

    from brainalign.models.spec import ModelSpec


class Runner:
    """Base class: subclasses set ``layers`` (all candidate keys, in order) and ``forward``."""

    spec: ModelSpec
    sample_rate: int
    layers: tuple[str, ...]
    min_samples: int

    def __init__(self, spec: ModelSpec, device: torch.device) -> None:
        self.spec = spec
        self.device = device
        self.sample_rate = spec.sample_rate
        self.layers = spec.layers
        self.min_samples = spec.min_samples

    def forward(self, audio: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """``audio`` (batch, samples) float32 on ``device`` -> {layer: (batch, dim)}."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """Extra provenance recorded in the activation file's metadata."""
        return {}


def check_layers(runner: Runner, requested: Sequence[str] | None, where: str) -> list[str]:
    """Validate requested layer keys against the runner's candidates (None = all)."""
    if requested is None:
        return list(runner.layers)
    unknown = [k for k in requested if k not in runner.layers]
    if unknown:
        raise InputError(
            where,
            f"unknown layer key(s) {unknown} for model {runner.spec.name!r}; "
            f"available: {list(runner.layers)}",
        )
    if len(set(requested)) != len(requested):
        raise InputError(where, f"duplicate layer keys in {list(requested)}")
    return list(requested)


def mean_btd(x: torch.Tensor) -> torch.Tensor:
    """(batch, time, dim) -> (batch, dim)."""
    return x.mean(dim=1)


def mean_bct(x: torch.Tensor) -> torch.Tensor:
    """(batch, channel, time) -> (batch, channel)."""
    return x.mean(dim=-1)


def mean_bcft(x: torch.Tensor) -> torch.Tensor:
    """(batch, channel, freq, time) -> (batch, channel*freq), time averaged first."""
    return x.mean(dim=-1).flatten(1)


@contextlib.contextmanager
def capture(modules: dict[str, torch.nn.Module]) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks that store each named module's output in the yielded dict."""
    store: dict[str, torch.Tensor] = {}
    handles = []
    for key, module in modules.items():
        def hook(_m: Any, _inp: Any, out: Any, key: str = key) -> None:
            store[key] = out[0] if isinstance(out, tuple) else out

        handles.append(module.register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global RNG seeded, restoring the previous state afterwards."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
