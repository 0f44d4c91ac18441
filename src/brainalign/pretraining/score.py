"""Scoring one checkpoint: activations of the 165 sounds, then layer-wise RSA per target.

- **Activations** come from :func:`~brainalign.models.extract.extract_activations` on a runner
  that :func:`~brainalign.models.encodecmae.load_pretraining_checkpoint` builds (strict load,
  sha256 checked first). The sounds are read once, at the model's rate with the configured
  resampler (the same :func:`~brainalign.data.stimuli.resample` call the ``extract`` stage
  makes per sound), and the mel front end, which has no weights, is computed once and reused
  for every checkpoint (:class:`SharedFrontEnd`).
- **RSA** is the layer-wise part of the max-layer protocol (``rsa@<model>``), per layer instead
  of the maximum: per subject with voxels in the target's ROI, the Spearman rho of that
  subject's RDM (voxels averaged over repetitions) with every layer's RDM, as
  :func:`~brainalign.alignment.rsa.layerwise_rsa` computes it, then
  :func:`~brainalign.alignment.rsa.summarize_layerwise` over subjects: the per-layer mean, SD
  and number of subjects (the authors' NaN policy by default: a subject with NaN voxels drops
  out, as in their code). :class:`RankedLayers` ranks the layers' RDM cells once per
  checkpoint instead of once per subject (44 subjects x 10 layers otherwise); the arithmetic
  is ``layerwise_rsa``'s, call for call, and a test checks the two are bit-identical.
- **Cache** (:class:`ResultCache`): one JSON file per checkpoint, named by a key over the
  checkpoint's sha256 and everything else the numbers depend on (model configuration,
  extraction settings and device kind, the sounds' sha256, the voxel files' digest, the RSA
  settings, the targets, the code of the modules that compute them, the numeric libraries'
  versions). Adding checkpoints scores only the new ones; changing anything that matters
  misses the cache. Activations are written only when asked (``keep_activations``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import util
from pathlib import Path
from typing import Any

import numpy as np

from brainalign.alignment.rdm import _pearson_rows, rdm, upper_indices
from brainalign.alignment.rsa import RSAConfig, layer_rdms, summarize_layerwise
from brainalign.atomic import write_json
from brainalign.data.fmri import VoxelDataset
from brainalign.errors import InputError
from brainalign.pretraining.config import ALL_VOXELS, parse_target

log = logging.getLogger(__name__)

CODE_MODULES = (
    "brainalign.pretraining.score", "brainalign.alignment.rsa", "brainalign.alignment.rdm",
    "brainalign.models.encodecmae", "brainalign.models.extract", "brainalign.models.base",
    "brainalign.models.frontends.kaldi", "brainalign.models.weights", "brainalign.data.stimuli",
    "brainalign.data.fmri",
)
"""The modules whose code decides a checkpoint's numbers (their sources key the cache)."""
CACHE_VERSION = 1


@dataclass(frozen=True)
class Target:
    """One Fig. 5 target: a dataset, restricted to an ROI or not."""

    name: str
    dataset: VoxelDataset
    roi: str

    def mask(self) -> np.ndarray:
        if self.roi == ALL_VOXELS:
            return np.ones(self.dataset.n_voxels, dtype=bool)
        return self.dataset.roi == self.roi


def make_targets(names: Sequence[str], datasets: Mapping[str, VoxelDataset]) -> list[Target]:
    """Targets by name (``NH2015``, ``NH2015/Primary``, ...); every ROI must have voxels."""
    out = []
    for name in names:
        dataset, roi = parse_target(name)
        target = Target(name, datasets[dataset], roi)
        if not target.mask().any():
            raise InputError(datasets[dataset].source, f"no voxel in ROI {roi!r} ({name})")
        out.append(target)
    return out


# --------------------------------------------------------------------------- digests
def code_digest(modules: Sequence[str] = CODE_MODULES) -> str:
    """sha256 over the source files of ``modules``."""
    h = hashlib.sha256()
    for name in modules:
        spec = util.find_spec(name)
        if spec is None or spec.origin is None:
            raise InputError(name, "module not found")
        h.update(name.encode() + b"\0" + Path(spec.origin).read_bytes() + b"\0")
    return h.hexdigest()


def folder_digest(folder: str | Path) -> str:
    """sha256 over the relative paths and contents of every file under ``folder``."""
    folder = Path(folder)
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def versions() -> dict[str, str]:
    """The numeric libraries whose arithmetic the numbers depend on."""
    import scipy
    import torch

    return {"numpy": np.__version__, "scipy": scipy.__version__, "torch": torch.__version__}


def cache_key(sha256: str, context: Mapping[str, Any]) -> str:
    """The cache file name of a checkpoint under ``context``."""
    blob = json.dumps({"checkpoint": sha256, "context": context, "version": CACHE_VERSION},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResultCache:
    """``<folder>/<key>.json``: one checkpoint's scores (written atomically)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            log.warning("%s is unreadable: scoring again", path)
            return None
        return entry if isinstance(entry, dict) and entry.get("key") == key else None

    def put(self, key: str, entry: Mapping[str, Any]) -> None:
        write_json(self.path(key), {**entry, "key": key})

    def activations_path(self, key: str, step: int) -> Path:
        return self.folder / "activations" / f"step-{step:06d}-{key[:16]}.npz"


# --------------------------------------------------------------------------- extraction
class SharedFrontEnd:
    """Memoises an EnCodecMAE runner's front end by the audio it gets (the mel front end has
    no weights, so every checkpoint computes the same features for the same batch)."""

    def __init__(self) -> None:
        self._store: dict[bytes, Any] = {}

    def attach(self, runner: Any) -> Any:
        compute = runner.features

        def features(chunk: Any) -> Any:
            if getattr(runner.cfg, "frontend", None) != "mel":
                return compute(chunk)
            key = hashlib.sha256(chunk.detach().cpu().numpy().tobytes()).digest()
            key += repr(tuple(chunk.shape)).encode()
            if key not in self._store:
                self._store[key] = compute(chunk)
            return self._store[key]

        runner.features = features
        return runner


class RankedLayers:
    """The layers' RDMs with their upper-triangle cells ranked once.

    :meth:`rho` equals :func:`~brainalign.alignment.rsa.layerwise_rsa` (fMRI RDM, then
    ``spearman_many`` of its upper triangle with each layer's): the same NaN-voxel policy, the
    same NaN/constant checks, the same ranks and Pearson arithmetic, only the layers' ranks are
    not recomputed for every subject.
    """

    def __init__(self, rdms: np.ndarray, config: RSAConfig) -> None:
        from scipy.stats import rankdata

        self.config = config
        self.iu = upper_indices(rdms.shape[1])
        cells = np.atleast_2d(np.asarray(rdms[:, self.iu[0], self.iu[1]], dtype=np.float64))
        self.n_layers = cells.shape[0]
        self.ok = ~np.isnan(cells).any(axis=1) & ~np.all(cells == cells[:, :1], axis=1)
        self.ranks = rankdata(cells[self.ok], axis=1) if self.ok.any() else None

    def rho(self, fmri: np.ndarray) -> np.ndarray:
        """rho of one subject's patterns (n, n_vox) with every layer -> (n_layers,)."""
        from scipy.stats import rankdata

        if self.config.nan_policy == "omit":
            fmri = fmri[:, ~np.isnan(fmri).any(axis=0)]
        a = np.asarray(rdm(fmri, self.config.eps)[self.iu], dtype=np.float64)
        out = np.full(self.n_layers, np.nan)
        if a.size < 2 or np.isnan(a).any() or np.all(a == a[0]) or self.ranks is None:
            return out
        out[self.ok] = _pearson_rows(rankdata(a), self.ranks)
        return out


def layer_scores(layers: Mapping[str, np.ndarray], targets: Sequence[Target],
                 config: RSAConfig) -> list[dict[str, Any]]:
    """Per target and layer: mean rho, SD, n subjects and the subjects' rho (layer-wise RSA)."""
    names = list(layers)
    ranked = RankedLayers(layer_rdms([np.asarray(layers[k]) for k in names], config), config)
    rows: list[dict[str, Any]] = []
    for target in targets:
        ds, in_roi = target.dataset, target.mask()
        data = ds.target()
        rho, subjects = [], []
        for s in ds.subjects:
            cols = in_roi & (ds.subject == s)
            if not cols.any():
                log.debug("%s: subject %s has no voxel in %s; left out", ds.name, s, target.roi)
                continue
            rho.append(ranked.rho(data[:, cols]))
            subjects.append(int(s))
        rho_arr = np.stack(rho)
        summary = summarize_layerwise(rho_arr, config.nan_policy)
        for j, layer in enumerate(names):
            rows.append({
                "target": target.name, "dataset": ds.name, "roi": target.roi, "layer": layer,
                "mean_rho": _num(summary.mean[j]), "sd_rho": _num(summary.sd[j]),
                "n_subjects": int(summary.n_subjects[j]),
                "subjects": subjects, "subject_rho": [_num(v) for v in rho_arr[:, j]],
            })
    return rows


def _num(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def score_checkpoint(ckpt: Any, spec: Any, sounds: Any, targets: Sequence[Target],
                     extract_config: Any, rsa_config: RSAConfig, device: Any,
                     front_end: SharedFrontEnd | None = None) -> tuple[list[dict], Any]:
    """(rows, activations) of one checkpoint: strict load (sha256 first when pinned),
    extraction of the 165 sounds, layer-wise RSA on every target."""
    from brainalign.models.encodecmae import load_pretraining_checkpoint
    from brainalign.models.extract import extract_activations

    t0 = time.perf_counter()
    runner = load_pretraining_checkpoint(spec, ckpt.path, device=device, sha256=ckpt.sha256)
    if front_end is not None:
        front_end.attach(runner)
    acts = extract_activations(runner, sounds.audio, sounds.sample_rate, sounds.names,
                               extract_config, progress=False)
    t1 = time.perf_counter()
    rows = layer_scores(acts.layers, targets, rsa_config)
    log.info("step %d (%s): extracted in %.1f s, RSA in %.1f s", ckpt.step, ckpt.name,
             t1 - t0, time.perf_counter() - t1)
    return rows, acts
