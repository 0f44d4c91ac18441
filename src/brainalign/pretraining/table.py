"""The Fig. 5 outputs: one tidy table, its DVC metric, and the reproduced-vs-published rows.

Table (``build/pretraining/dynamics.{csv,parquet}``), one row per checkpoint step x layer x
target: ``step, checkpoint, sha256, layer, layer_label`` (key + 1, as the figure labels it),
``target, dataset, roi, mean_rho, sd_rho, n_subjects, source, miniature, simulated_voxels``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

COLUMNS = ("step", "checkpoint", "sha256", "layer", "layer_label", "target", "dataset", "roi",
           "mean_rho", "sd_rho", "n_subjects", "source", "miniature", "simulated_voxels")

FIG5A_PUBLISHED: dict[str, tuple[str, int, str, float, float]] = {
    **{f"step0_layer{k + 1}": ("Fig. 5a rho at step 0, NH2015", 0, str(k), 0.21, 0.02)
       for k in (1, 3, 5, 7, 9)},
    **{f"final_layer{k + 1}": ("Fig. 5a rho at step 99k, NH2015", 99_000, str(k), 0.475, 0.025)
       for k in (5, 7, 9)},
    "final_layer2": ("Fig. 5a rho at step 99k, NH2015", 99_000, "1", 0.35, 0.02),
}
"""paper-spec section 6, read off Fig. 5a: (what, step, layer key, value, read-off precision).
All layers start near 0.21; layers 6-10 reach about 0.45-0.50 (NH2015) by 99k; layer 2 about
0.35. Which dataset the step-0 statement reads is not stated: NH2015 is compared."""


def tidy(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The table in step, target, layer order (targets and layers in first-seen order)."""
    df = pd.DataFrame(list(rows))
    for col in COLUMNS:
        if col not in df:
            df[col] = pd.Series(dtype="object")
    df = df[list(COLUMNS)]
    targets = list(dict.fromkeys(df["target"]))
    df["_t"] = df["target"].map({t: i for i, t in enumerate(targets)})
    df["_l"] = df["layer"].astype(int)
    df = df.sort_values(["step", "_t", "_l"], kind="stable").drop(columns=["_t", "_l"])
    df["step"] = df["step"].astype("int64")
    df["n_subjects"] = df["n_subjects"].astype("int64")
    for col in ("mean_rho", "sd_rho"):
        df[col] = df[col].astype("float64")
    return df.reset_index(drop=True)


def _value(x: Any) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def metrics(table: pd.DataFrame, info: Mapping[str, Any]) -> dict[str, Any]:
    """The DVC metric: the final checkpoint's values (and the first's) per target and layer."""

    def at(step: int) -> dict[str, Any]:
        part = table[table["step"] == step]
        out: dict[str, Any] = {"step": int(step), "rho": {}, "sd": {}, "n_subjects": {},
                               "max_layer": {}}
        for target, rows in part.groupby("target", sort=False):
            out["rho"][target] = {r.layer: _value(r.mean_rho) for r in rows.itertuples()}
            out["sd"][target] = {r.layer: _value(r.sd_rho) for r in rows.itertuples()}
            out["n_subjects"][target] = {r.layer: int(r.n_subjects) for r in rows.itertuples()}
            finite = rows.dropna(subset=["mean_rho"])
            if len(finite):
                best = finite.loc[finite["mean_rho"].idxmax()]
                out["max_layer"][target] = {"layer": best["layer"],
                                            "rho": _value(best["mean_rho"])}
        return out

    steps = sorted(table["step"].unique())
    return {**dict(info), "n_checkpoints": len(steps), "first": at(steps[0]),
            "final": at(steps[-1])}


def compare_rows(summary: Mapping[str, Any], atol: float = 0.0,
                 published: Mapping[str, tuple[str, int, str, float, float]] = FIG5A_PUBLISHED,
                 ) -> list[dict[str, Any]]:
    """Fig. 5a read-offs vs this run's metric, in ``report.compare``'s row layout.

    A number has a counterpart only for the published checkpoints (the miniature is another
    model) whose step exists in the run; rows on simulated voxels are for information only.
    """
    miniature = bool(summary.get("miniature"))
    simulated = bool(summary.get("simulated_voxels"))
    by_step = {int(summary[k]["step"]): summary[k] for k in ("first", "final") if k in summary}
    rows = []
    for key, (what, step, layer, value, precision) in published.items():
        got, note = None, ""
        if miniature:
            note = ("no counterpart: miniature pretraining, simulated voxels (the published "
                    "checkpoints are not in this run)")
        elif step not in by_step:
            note = f"no counterpart: step {step} is not the run's first or final checkpoint"
        else:
            got = (by_step[step]["rho"].get("NH2015") or {}).get(layer)
            note = ("reproduced on SIMULATED voxels; not comparable in substance" if simulated
                    else "" if got is not None else "no counterpart: NH2015 not scored")
        rows.append({
            "what": f"{what} (read off the figure)", "model": f"ECMAE (B) layer {int(layer) + 1}",
            "measure": f"fig5a_{key}", "published": value, "reproduced": got,
            "difference": None if got is None else got - value, "published_exact": False,
            "tolerance": max(precision, atol) if got is not None else None,
            "checked": bool(got is not None and not simulated), "note": note,
        })
    return rows
