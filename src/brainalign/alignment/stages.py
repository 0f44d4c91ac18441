"""Pipeline stages of the alignment engine: plain paths and a params section in, files out.

- :func:`run_regression` (DVC ``regress@<model>``): nested-CV ridge on a voxel dataset
  (per-voxel scores, per-subject medians, mean and SEM) or on the six NH2015 components;
- :func:`run_rsa` (DVC ``rsa@<model>``): layer-wise and cross-validated RSA per subject,
  optionally per ROI, with the selected-layer matrices;
- :func:`run_topline`: the RSA noise ceiling of a dataset (no model).

Every stage validates its inputs (raising :class:`InputError` before writing anything),
computes everything, then writes each file atomically with ``metrics.json`` last, so an
interrupted stage never leaves a partial set that looks complete.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainalign.alignment.aggregate import mean_sem, subject_medians
from brainalign.alignment.ridge_cv import RegressionConfig, nested_cv_ridge
from brainalign.alignment.rsa import (
    RSAConfig,
    cv_rsa,
    layer_rdms,
    layerwise_rsa,
    summarize_layerwise,
    topline,
)
from brainalign.atomic import write_bytes, write_json
from brainalign.data.components import Components
from brainalign.data.fmri import ROI_LABELS, VoxelDataset
from brainalign.data.folds import load_folds
from brainalign.errors import InputError
from brainalign.models.activations import Activations, load_activations
from brainalign.npz import npz_bytes
from brainalign.params import section

log = logging.getLogger(__name__)

ALL_VOXELS = "all"


# ------------------------------------------------------------------------------ parameters


def parse_regression_params(params: Mapping[str, Any] | None) -> RegressionConfig:
    """Validate a ``regression`` params section into a :class:`RegressionConfig`."""
    return section(RegressionConfig, params, "regression")


def parse_rsa_params(params: Mapping[str, Any] | None) -> tuple[RSAConfig, tuple[str, ...]]:
    """Validate an ``rsa`` params section -> (config, ROIs to run: 'all' and/or ROI labels)."""
    config = section(RSAConfig, params, "rsa", also=("rois",))
    rois = (params or {}).get("rois", [ALL_VOXELS])
    allowed = (ALL_VOXELS, *ROI_LABELS)
    if (
        not isinstance(rois, list | tuple)
        or not rois
        or any(not isinstance(r, str) or r not in allowed for r in rois)
    ):
        raise InputError(
            "params.yaml: rsa.rois", f"expected a non-empty list from {allowed}, got {rois!r}"
        )
    return config, tuple(rois)


# ---------------------------------------------------------------------------------- inputs


def _load_folds(folds: np.ndarray | str | Path, n: int) -> np.ndarray:
    if isinstance(folds, str | Path):
        return load_folds(folds)
    arr = np.asarray(folds)
    if arr.shape != (n,) or arr.dtype.kind not in "iuf" or not np.all(arr == np.round(arr)):
        raise InputError(
            "folds", f"expected {n} whole-number fold ids, got {arr.dtype} {arr.shape}"
        )
    return arr.astype(np.int64)


def _load_acts(activations_path: str | Path, stimuli: tuple[str, ...]) -> Activations:
    acts = load_activations(activations_path)
    if len(acts.stimuli) != len(stimuli):
        raise InputError(
            activations_path, f"{len(acts.stimuli)} sounds, the targets have {len(stimuli)}"
        )
    if tuple(acts.stimuli) != tuple(stimuli):
        first = next(
            i for i, (a, b) in enumerate(zip(acts.stimuli, stimuli, strict=True)) if a != b
        )
        raise InputError(
            activations_path,
            f"sound order differs from the targets' at row {first}: "
            f"{acts.stimuli[first]!r} vs {stimuli[first]!r}",
        )
    if not acts.layers:
        raise InputError(activations_path, "no layers")
    for name, x in acts.layers.items():
        if not np.all(np.isfinite(x)):
            raise InputError(activations_path, f"layer {name!r} holds NaN or inf")
        if np.all(x == x[:1]):
            log.warning(
                "%s: layer %r is constant across sounds; it predicts the training mean "
                "(regression) and has a NaN RDM (RSA), as in the authors' protocol",
                activations_path,
                name,
            )
    return acts


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def _config_dict(config: Any) -> dict[str, Any]:
    return {
        k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()
    }


def _finite(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _write_all(out_dir: Path, files: dict[str, bytes], metrics: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        write_bytes(out_dir / name, data)
    write_json(out_dir / "metrics.json", metrics)


# ------------------------------------------------------------------------------ regression


def run_regression(
    activations_path: str | Path,
    dataset: VoxelDataset | Components,
    folds: np.ndarray | str | Path,
    params: Mapping[str, Any] | None,
    out_dir: str | Path,
    progress: bool = True,
) -> dict[str, Any]:
    """Nested-CV ridge of one model on a voxel dataset or the components; returns metrics.

    Voxel datasets write ``voxels.parquet`` (per voxel: subject, ROI, whether it was regressed,
    r2, and per outer fold the chosen alpha and layer, its inner score and the number of
    edge-rule evaluations), ``subjects.parquet`` (per-subject median) and ``metrics.json``
    (mean and SEM over subjects). Voxels with any NaN are skipped (protocol); a subject without
    complete voxels has a NaN median and drops out of the mean (a warning says so).
    Components write ``components.parquet`` and ``metrics.json`` (one r2 per component).
    """
    config = parse_regression_params(params)
    out_dir = Path(out_dir)
    if isinstance(dataset, VoxelDataset):
        targets_all = dataset.target()
        keep = dataset.complete_voxels()
        if not keep.any():
            raise InputError(dataset.source, "no voxel without NaN: nothing to regress")
        targets = targets_all[:, keep]
        kind = dataset.name
    elif isinstance(dataset, Components):
        targets = np.asarray(dataset.responses, dtype=np.float64)
        keep = None
        if not np.all(np.isfinite(targets)):
            raise InputError(dataset.source, "component responses hold NaN or inf")
        kind = "NH2015comp"
    else:
        raise InputError(
            "dataset", f"expected a VoxelDataset or Components, got {type(dataset).__name__}"
        )
    fold_arr = _load_folds(folds, targets.shape[0])
    acts = _load_acts(activations_path, tuple(dataset.stimuli))
    names = acts.layer_names
    t0 = time.perf_counter()
    res = nested_cv_ridge(
        [acts.layers[k] for k in names], targets, fold_arr, config, names, progress=progress
    )
    log.info("%s on %s: %d targets, %d layers in %.1f s (%s)", acts.model, kind,
             targets.shape[1], len(names), time.perf_counter() - t0, res.backend)
    per_fold: dict[str, Any] = {}
    for fi, k in enumerate(res.fold_ids):
        per_fold[f"alpha_f{k}"] = res.alpha[fi]
        per_fold[f"layer_f{k}"] = np.asarray(names, dtype=object)[res.layer[fi]]
        per_fold[f"inner_r2_f{k}"] = res.inner_score[fi]
        per_fold[f"n_ext_f{k}"] = res.n_extensions[fi]
    common = {
        "model": acts.model,
        "dataset": kind,
        "backend": res.backend,
        "protocol": _config_dict(config),
        "layers": list(names),
    }

    if keep is None:
        comp = pd.DataFrame({"component": list(dataset.names), "r2": res.score, **per_fold})
        metrics = {
            **common,
            "r2": {c: _finite(v) for c, v in zip(dataset.names, res.score, strict=True)},
        }
        _write_all(out_dir, {"components.parquet": _parquet_bytes(comp)}, metrics)
        return metrics

    n_vox = dataset.n_voxels
    r2_all = np.full(n_vox, np.nan)
    r2_all[keep] = res.score
    vox = pd.DataFrame(
        {
            "voxel": np.arange(n_vox),
            "subject": dataset.subject,
            "roi": dataset.roi.astype(str),
            "regressed": keep,
            "r2": r2_all,
        }
    )
    fold_df = pd.DataFrame(per_fold)
    fold_df.insert(0, "voxel", np.flatnonzero(keep))
    vox = vox.merge(fold_df, on="voxel", how="left")
    ids, med, counts = subject_medians(res.score, dataset.subject[keep], config.nan_policy)
    missing = sorted(set(dataset.subjects.tolist()) - set(ids.tolist()))
    if missing:
        log.warning("%s: subjects %s have no complete voxel; excluded from the mean", kind, missing)
    subj = pd.DataFrame(
        {
            "subject": np.r_[ids, missing].astype(np.int64),
            "median_r2": np.r_[med, [np.nan] * len(missing)],
            "n_voxels": np.r_[counts, [0] * len(missing)].astype(np.int64),
        }
    )
    mean, sem, n_subj = mean_sem(med)
    metrics = {
        **common,
        "mean_r2": _finite(mean),
        "sem_r2": _finite(sem),
        "n_subjects": n_subj,
        "n_voxels": int(keep.sum()),
        "n_skipped_voxels": int((~keep).sum()),
    }
    _write_all(
        out_dir,
        {"voxels.parquet": _parquet_bytes(vox), "subjects.parquet": _parquet_bytes(subj)},
        metrics,
    )
    return metrics


# ------------------------------------------------------------------------------------- RSA


def _roi_mask(dataset: VoxelDataset, roi: str) -> np.ndarray:
    return np.ones(dataset.n_voxels, dtype=bool) if roi == ALL_VOXELS else dataset.roi == roi


def run_rsa(
    activations_path: str | Path,
    dataset: VoxelDataset,
    folds: np.ndarray | str | Path,
    params: Mapping[str, Any] | None,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Layer-wise and cross-validated RSA of one model on a voxel dataset; returns metrics.

    Writes ``rsa_layerwise.parquet`` (roi, subject, layer, rho), ``rsa_cv.parquet`` (roi,
    subject, rho), ``selected_layers.npz`` (``<roi>/subject<id>``: the (n, n) int matrix of the
    layer index that filled each cell of the assembled RDM; ``layers``: JSON list of names) and
    ``metrics.json`` (per ROI: max-layer rho and SD, best layer, per-layer means; CV mean, SEM).
    A subject with no voxel in an ROI is left out of that ROI (logged).
    """
    config, rois = parse_rsa_params(params)
    if not isinstance(dataset, VoxelDataset):
        raise InputError("dataset", f"RSA needs a VoxelDataset, got {type(dataset).__name__}")
    fold_arr = _load_folds(folds, len(dataset.stimuli))
    if len(np.unique(fold_arr)) < 2:
        raise InputError("folds", "cross-validated RSA needs at least 2 folds")
    acts = _load_acts(activations_path, tuple(dataset.stimuli))
    names = acts.layer_names
    models = layer_rdms([acts.layers[k] for k in names], config)
    target = dataset.target()
    lw_rows, cv_rows, selected = [], [], {}
    metrics: dict[str, Any] = {
        "model": acts.model,
        "dataset": dataset.name,
        "layers": list(names),
        "protocol": _config_dict(config),
        "rois": {},
    }
    for roi in rois:
        in_roi = _roi_mask(dataset, roi)
        rho_subj, subj_ids = [], []
        for s in dataset.subjects:
            cols = in_roi & (dataset.subject == s)
            if not cols.any():
                log.warning("%s: subject %s has no voxel in ROI %s; left out", dataset.name, s, roi)
                continue
            x = target[:, cols]
            rho = layerwise_rsa(x, models, config)
            rho_subj.append(rho)
            subj_ids.append(int(s))
            lw_rows += [
                {"roi": roi, "subject": int(s), "layer": n, "rho": float(r)}
                for n, r in zip(names, rho, strict=True)
            ]
            if np.isnan(x).any(axis=0).all():
                cv_rows.append({"roi": roi, "subject": int(s), "rho": float("nan")})
                continue
            cv = cv_rsa(x, models, fold_arr, config)
            cv_rows.append({"roi": roi, "subject": int(s), "rho": cv.rho})
            selected[f"{roi}/subject{int(s)}"] = cv.selected
        if not subj_ids:
            raise InputError(dataset.source, f"no voxel in ROI {roi!r}")
        summ = summarize_layerwise(np.stack(rho_subj), config.nan_policy)
        cv_vals = [r["rho"] for r in cv_rows if r["roi"] == roi]
        cv_mean, cv_sem, cv_n = mean_sem(np.asarray(cv_vals))
        metrics["rois"][roi] = {
            "layerwise": {
                "max_rho": _finite(summ.max_rho),
                "sd": _finite(summ.max_sd),
                "best_layer": names[summ.best_layer],
                "mean_by_layer": [_finite(v) for v in summ.mean],
                "n_subjects_by_layer": summ.n_subjects.tolist(),
            },
            "cv": {"mean_rho": _finite(cv_mean), "sem_rho": _finite(cv_sem), "n_subjects": cv_n},
        }
    head = metrics["rois"][rois[0]]
    metrics["max_layer_rho"] = head["layerwise"]["max_rho"]
    metrics["cv_rho"] = head["cv"]["mean_rho"]
    rdms = npz_bytes({"layers": np.array(json.dumps(list(names))), **selected}, compress=True)
    _write_all(
        Path(out_dir),
        {
            "rsa_layerwise.parquet": _parquet_bytes(
                pd.DataFrame(lw_rows, columns=["roi", "subject", "layer", "rho"])
            ),
            "rsa_cv.parquet": _parquet_bytes(
                pd.DataFrame(cv_rows, columns=["roi", "subject", "rho"])
            ),
            "selected_layers.npz": rdms,
        },
        metrics,
    )
    return metrics


def run_topline(
    dataset: VoxelDataset, params: Mapping[str, Any] | None, out_dir: str | Path
) -> dict[str, Any]:
    """RSA noise ceiling: each subject's RDM vs the mean RDM of the others; returns metrics.

    Writes ``topline.parquet`` (roi, subject, rho; excluded subjects have no row) and
    ``metrics.json`` (per ROI: mean, SEM, kept and excluded subjects).
    """
    config, rois = parse_rsa_params(params)
    target = dataset.target()
    rows: list[dict[str, Any]] = []
    metrics: dict[str, Any] = {
        "dataset": dataset.name,
        "protocol": _config_dict(config),
        "rois": {},
    }
    for roi in rois:
        in_roi = _roi_mask(dataset, roi)
        subs = [s for s in dataset.subjects if (in_roi & (dataset.subject == s)).any()]
        if not subs:
            raise InputError(dataset.source, f"no voxel in ROI {roi!r}")
        rho, kept = topline([target[:, in_roi & (dataset.subject == s)] for s in subs], config)
        kept_ids = [int(subs[i]) for i in kept]
        rows += [
            {"roi": roi, "subject": s, "rho": float(r)} for s, r in zip(kept_ids, rho, strict=True)
        ]
        mean, sem, n = mean_sem(rho)
        metrics["rois"][roi] = {
            "mean_rho": _finite(mean),
            "sem_rho": _finite(sem),
            "n_subjects": n,
            "excluded_subjects": sorted(set(map(int, subs)) - set(kept_ids)),
        }
    metrics["topline_rho"] = metrics["rois"][rois[0]]["mean_rho"]
    _write_all(
        Path(out_dir),
        {"topline.parquet": _parquet_bytes(pd.DataFrame(rows, columns=["roi", "subject", "rho"]))},
        metrics,
    )
    return metrics


__all__ = [
    "run_regression",
    "run_rsa",
    "run_topline",
    "parse_regression_params",
    "parse_rsa_params",
]
