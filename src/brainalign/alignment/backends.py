"""Array backends for the alignment engine: numpy (CPU) and torch (CUDA when present).

The engine's heavy work is a handful of dense operations (thin SVD, matrix products, a few
elementwise reductions), always in float64. A backend wraps exactly those, so the same
algorithm runs on numpy or on torch without branching. Selection logic (argmax with numpy's
NaN semantics, the edge rule) always runs in numpy on the CPU, so it is identical on every
backend.

himalaya's backends (``himalaya.backend``) cover the same ground but are selected through a
process-global setting; a small explicit object keeps the engine re-entrant and testable.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from brainalign.errors import InputError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "numpy", "torch")


class NumpyBackend:
    """float64 numpy on the CPU (BLAS threads as configured for the process)."""

    name = "numpy"
    device = "cpu"

    def asarray(self, x: Any) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def svd(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Thin SVD ``x = u @ diag(s) @ vt``."""
        return np.linalg.svd(x, full_matrices=False)

    def mean(self, x: np.ndarray, axis: int) -> np.ndarray:
        return x.mean(axis=axis, keepdims=True)

    def sum(self, x: np.ndarray, axis: int) -> np.ndarray:
        return x.sum(axis=axis)

    def sqrt(self, x: np.ndarray) -> np.ndarray:
        return np.sqrt(x)

    def clip(self, x: np.ndarray, lo: float, hi: float) -> np.ndarray:
        return np.clip(x, lo, hi)

    def empty(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.empty(shape, dtype=np.float64)

    def index(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(idx, dtype=np.int64)

    def round32(self, x: np.ndarray) -> np.ndarray:
        """Round to float32 and back (predictions stored in a float32 target's dtype)."""
        return x.astype(np.float32).astype(np.float64)


class TorchBackend:
    """float64 torch on CUDA when available (or when asked for), else on the CPU."""

    name = "torch"

    def __init__(self, device: str | None = None) -> None:
        import torch

        self.torch = torch
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device

    def asarray(self, x: Any) -> Any:
        return self.torch.as_tensor(np.asarray(x), dtype=self.torch.float64, device=self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.detach().cpu().numpy()

    def svd(self, x: Any) -> tuple[Any, Any, Any]:
        return self.torch.linalg.svd(x, full_matrices=False)

    def mean(self, x: Any, axis: int) -> Any:
        return x.mean(dim=axis, keepdim=True)

    def sum(self, x: Any, axis: int) -> Any:
        return x.sum(dim=axis)

    def sqrt(self, x: Any) -> Any:
        return self.torch.sqrt(x)

    def clip(self, x: Any, lo: float, hi: float) -> Any:
        return self.torch.clamp(x, lo, hi)

    def empty(self, shape: tuple[int, ...]) -> Any:
        return self.torch.empty(shape, dtype=self.torch.float64, device=self.device)

    def index(self, idx: np.ndarray) -> Any:
        return self.torch.as_tensor(np.asarray(idx, dtype=np.int64), device=self.device)

    def round32(self, x: Any) -> Any:
        return x.to(self.torch.float32).to(self.torch.float64)


Backend = NumpyBackend | TorchBackend


def get_backend(name: str = "auto") -> Backend:
    """Return a backend by name: ``numpy``, ``torch`` (CUDA if present) or ``auto``.

    ``auto`` picks torch on CUDA when a GPU is visible and numpy otherwise (torch on the CPU is
    not faster than numpy for these shapes).
    """
    if name not in BACKENDS:
        raise InputError("backend", f"expected one of {BACKENDS}, got {name!r}")
    if name == "numpy":
        return NumpyBackend()
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a declared dependency
        if name == "torch":
            raise InputError(
                "backend", "torch backend requested but torch is not installed"
            ) from None
        return NumpyBackend()
    if name == "auto":
        return TorchBackend("cuda") if torch.cuda.is_available() else NumpyBackend()
    return TorchBackend()
