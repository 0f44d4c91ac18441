"""NH2015 voxel-decomposition components (components.mat: R, W, stim_names, component_names)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io

from brainalign.data.stimuli import N_SOUNDS, canonical_names, check_canonical, stimulus_id
from brainalign.errors import InputError

COMPONENT_NAMES = ("lowfreq", "highfreq", "envsounds", "pitch", "speech", "music")
COMPONENT_LABELS = {
    "lowfreq": "LF",
    "highfreq": "HF",
    "envsounds": "Broadband",
    "pitch": "Pitch",
    "speech": "Speech",
    "music": "Music",
}
"""Short labels as in the paper's Table 1 and Fig. 4."""


@dataclass(frozen=True)
class Components:
    """Component response profiles R (165 x 6) in canonical order, and voxel weights W (6 x V)."""

    names: tuple[str, ...]
    responses: np.ndarray = field(repr=False)
    weights: np.ndarray = field(repr=False)
    stimuli: tuple[str, ...]
    source: str


def _cellstr(value: np.ndarray, where: Path, key: str) -> list[str]:
    flat = np.asarray(value, dtype=object).ravel()
    out = []
    for item in flat:
        item = np.asarray(item).ravel()
        if item.size != 1 or not isinstance(item[0], str):
            raise InputError(where, f"variable {key!r}: expected a cell array of strings")
        out.append(str(item[0]))
    return out


def load_components(path: str | Path) -> Components:
    """Load components.mat; rows of R are reordered by ``stim_names`` into canonical order."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found (run `brainalign fetch`)")
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:
        raise InputError(path, f"not a readable MATLAB file ({exc})") from None
    for key in ("R", "W", "stim_names", "component_names"):
        if key not in mat:
            raise InputError(path, f"missing variable {key!r}")
    resp = np.asarray(mat["R"], dtype=np.float64)
    weights = np.asarray(mat["W"], dtype=np.float64)
    names = _cellstr(mat["component_names"], path, "component_names")
    stim = [s.removesuffix(".wav") for s in _cellstr(mat["stim_names"], path, "stim_names")]
    if resp.shape != (N_SOUNDS, len(COMPONENT_NAMES)):
        raise InputError(path, f"R: expected shape ({N_SOUNDS}, 6), got {resp.shape}")
    if weights.ndim != 2 or weights.shape[0] != len(COMPONENT_NAMES):
        raise InputError(path, f"W: expected shape (6, n_voxels), got {weights.shape}")
    if tuple(names) != COMPONENT_NAMES:
        raise InputError(path, f"component_names: expected {COMPONENT_NAMES}, got {tuple(names)}")
    if len(stim) != N_SOUNDS:
        raise InputError(path, f"stim_names: expected {N_SOUNDS} names, got {len(stim)}")
    order = np.argsort([stimulus_id(s) for s in stim], kind="stable")
    stim_sorted = [stim[i] for i in order]
    check_canonical(stim_sorted, f"{path} (stim_names)")
    return Components(
        names=COMPONENT_NAMES,
        responses=resp[order],
        weights=weights,
        stimuli=canonical_names(),
        source=str(path),
    )
