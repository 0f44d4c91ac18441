"""Activation files: one NPZ per model, {layer: (n_sounds, dim)} plus JSON metadata.

Layout (no pickle; ``np.load(..., allow_pickle=False)`` reads it):
- ``layer/<name>``: float32 array (n_sounds, dim), one time-averaged vector per sound;
- ``meta``: a 0-d unicode array holding JSON with at least ``model``, ``layers`` (ordered),
  ``stimuli`` (stimulus order of the rows), plus provenance (package versions, weight sha256,
  sample rate, device).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from brainalign.errors import InputError
from brainalign.npz import write_npz
from brainalign.outputs import damaged

_LAYER_PREFIX = "layer/"


@dataclass(frozen=True)
class Activations:
    """Per-layer activations of one model, rows in ``stimuli`` order."""

    model: str
    layers: dict[str, np.ndarray] = field(repr=False)
    stimuli: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def layer_names(self) -> list[str]:
        return list(self.layers)


def save_activations(path: str | Path, acts: Activations) -> None:
    """Atomically write ``acts`` to ``path`` (NPZ)."""
    n = len(acts.stimuli)
    arrays: dict[str, np.ndarray] = {}
    for name, arr in acts.layers.items():
        arr = np.asarray(arr)
        if arr.ndim != 2 or arr.shape[0] != n:
            raise InputError(f"{acts.model}:{name}", f"expected shape ({n}, dim), got {arr.shape}")
        arrays[_LAYER_PREFIX + name] = arr
    meta = dict(acts.meta)
    meta.update(model=acts.model, layers=list(acts.layers), stimuli=list(acts.stimuli))
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    write_npz(path, arrays)


def load_activations(path: str | Path) -> Activations:
    """Read an activation file written by :func:`save_activations`, validating its structure."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "activation file not found (run `brainalign extract`)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            layers = {name: npz[_LAYER_PREFIX + name] for name in meta["layers"]}
    except Exception as exc:  # a damaged zip raises BadZipFile, EOFError, ValueError, ...
        raise damaged(path, exc, "activation file") from None
    stimuli = tuple(meta["stimuli"])
    for name, arr in layers.items():
        if arr.ndim != 2 or arr.shape[0] != len(stimuli):
            raise InputError(
                path, f"layer {name!r} has shape {arr.shape}, expected ({len(stimuli)}, dim)"
            )
    return Activations(model=meta["model"], layers=layers, stimuli=stimuli, meta=meta)
