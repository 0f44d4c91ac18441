"""One tidy table of every model of the run, from the per-model metrics of each stage.

Columns (one row per model): ``model, label, family, training, random_init, simulated_voxels``;
``reg_nh2015, reg_nh2015_sem, reg_b2021, reg_b2021_sem`` (median over voxels per subject, mean
and SEM over subjects); ``comp_<component>`` (r^2 of each NH2015 component); ``rsa_<ds>`` and
``rsa_<ds>_sd`` (max-layer rho, SD over subjects at that layer), ``rsa_<ds>_layer``;
``rsacv_<ds>, rsacv_<ds>_sem`` (cross-validated layer selection); ``rsa_<roi>_nh2015`` (max-layer
rho in each NH2015 ROI); ``ds_<task>`` (task score), ``dsz_<task>`` (z-scored across the run's
models) and ``overall``. The topline (noise ceiling) is per dataset, not per model, and is
returned separately.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainalign.data.components import COMPONENT_NAMES
from brainalign.data.fmri import ROI_LABELS
from brainalign.errors import InputError
from brainalign.outputs import damaged

DATASETS = {"NH2015": "nh2015", "B2021": "b2021"}


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(path, "metrics file not found (run the stage that writes it)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise damaged(path, exc, "metrics file") from None


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


def model_row(model: str, metrics_dir: Path) -> dict[str, Any]:
    """Alignment columns of one model from build/metrics/{regression,rsa}/<model>.json."""
    from brainalign.models.registry import get_spec

    spec = get_spec(model)
    reg = _read(metrics_dir / "regression" / f"{model}.json")
    rsa = _read(metrics_dir / "rsa" / f"{model}.json")
    row: dict[str, Any] = {
        "model": model,
        "label": spec.label,
        "family": spec.family,
        "training": spec.training,
        "random_init": bool(spec.random_init),
        "simulated_voxels": bool(reg.get("simulated_voxels")),
    }
    # A NIfTI description may define one of the two datasets, and own stimuli have no
    # components: the missing measures are NaN.
    for ds, key in DATASETS.items():
        row[f"reg_{key}"] = _num(reg.get(ds, {}).get("mean_r2"))
        row[f"reg_{key}_sem"] = _num(reg.get(ds, {}).get("sem_r2"))
    for comp in COMPONENT_NAMES:
        row[f"comp_{comp}"] = _num(reg.get("NH2015comp", {}).get(comp))
    for ds, key in DATASETS.items():
        rois = rsa.get(ds, {}).get("rois", {})
        lw = rois.get("all", {}).get("layerwise", {})
        cv = rois.get("all", {}).get("cv", {})
        row[f"rsa_{key}"] = _num(lw.get("max_rho"))
        row[f"rsa_{key}_sd"] = _num(lw.get("sd"))
        row[f"rsa_{key}_layer"] = lw.get("best_layer")
        row[f"rsacv_{key}"] = _num(cv.get("mean_rho"))
        row[f"rsacv_{key}_sem"] = _num(cv.get("sem_rho"))
        if ds == "NH2015":
            for roi in ROI_LABELS:
                if roi in rois:
                    row[f"rsa_{roi.lower()}_{key}"] = _num(rois[roi]["layerwise"].get("max_rho"))
    return row


def aggregate(models: list[str], metrics_dir: str | Path, overall_path: str | Path) -> pd.DataFrame:
    """The tidy table of ``models`` (in the run's order)."""
    metrics_dir = Path(metrics_dir)
    table = pd.DataFrame([model_row(m, metrics_dir) for m in models])
    overall = _read(Path(overall_path))
    tasks = list(overall["tasks"])
    per_model = overall["models"]
    missing = [m for m in models if m not in per_model]
    if missing:
        raise InputError(overall_path, f"no downstream scores for {missing}")
    for task in tasks:
        table[f"ds_{task}"] = [_num(per_model[m]["scores"][task]) for m in models]
        table[f"dsz_{task}"] = [_num(per_model[m]["z"][task]) for m in models]
    table["overall"] = [_num(per_model[m]["overall"]) for m in models]
    table.attrs["tasks"] = tasks
    return table


def topline(metrics_dir: str | Path) -> dict[str, dict[str, float]]:
    """{nh2015|b2021: {mean, sem, n}} of the RSA noise ceiling (all voxels)."""
    data = _read(Path(metrics_dir) / "topline" / "topline.json")
    out = {}
    for ds, key in DATASETS.items():
        allv = data.get(ds, {}).get("rois", {}).get("all", {})
        out[key] = {
            "mean": _num(allv.get("mean_rho")),
            "sem": _num(allv.get("sem_rho")),
            "n": int(allv.get("n_subjects", 0)),
        }
    return out


def headline(table: pd.DataFrame, top: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Headline numbers for `dvc metrics`: per model the main measures, plus the topline."""
    cols = [
        "reg_nh2015",
        "reg_b2021",
        "rsa_nh2015",
        "rsa_b2021",
        "rsacv_nh2015",
        "rsacv_b2021",
        "overall",
    ]
    models = {
        r["model"]: {c: (None if not np.isfinite(r[c]) else round(float(r[c]), 6)) for c in cols}
        for _, r in table.iterrows()
    }
    return {
        "simulated_voxels": bool(table["simulated_voxels"].any()),
        "n_models": len(table),
        "topline": {k: round(v["mean"], 6) for k, v in top.items()},
        "models": models,
    }
