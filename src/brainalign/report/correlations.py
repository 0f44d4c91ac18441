"""Correlations between brain alignment and downstream performance (Table 1, Figs. 3 and 6).

Pearson r with a two-sided p from the t distribution with n - 2 degrees of freedom (scipy's
``pearsonr``), over all models of the run and over the models with Overall > -1, with no
correction for multiple comparisons: exactly the paper's statistics. With few models the
numbers are still computed and ``n`` is reported next to them.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

SUBSETS = ("all", "overall_gt_-1")
SUBSET_LABELS = {"all": "All", "overall_gt_-1": "Overall > -1"}


def pearson(x: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
    """(r, two-sided p, n) over the pairs where both are finite; NaN when undefined (n < 3 or a
    constant variable)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    n = int(ok.sum())
    if n < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return math.nan, math.nan, n
    res = stats.pearsonr(x[ok], y[ok])
    return float(res.statistic), float(res.pvalue), n


def subset_rows(table: pd.DataFrame, subset: str) -> pd.DataFrame:
    """Models of one subset: all, or Overall > -1 (the paper drops the four worst models)."""
    if subset == "all":
        return table
    if subset == "overall_gt_-1":
        return table[table["overall"] > -1]
    raise ValueError(f"unknown subset {subset!r}")


def correlation_table(
    table: pd.DataFrame, measures: list[str], task_columns: dict[str, str]
) -> pd.DataFrame:
    """Long table (subset, measure, task, r, p, n): each measure against each task column.

    ``task_columns`` maps a display name (e.g. 'NS', 'Overall') to a column of ``table``
    (e.g. 'dsz_nsynth_pitch', 'overall').
    """
    rows = []
    for subset in SUBSETS:
        part = subset_rows(table, subset)
        for measure in measures:
            for task, column in task_columns.items():
                r, p, n = pearson(part[measure].to_numpy(), part[column].to_numpy())
                rows.append(
                    {"subset": subset, "measure": measure, "task": task, "r": r, "p": p, "n": n}
                )
    return pd.DataFrame(rows)


def pairwise(table: pd.DataFrame, pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """Pearson r, p and n for each (x, y) column pair over all models (Fig. 3 annotations)."""
    rows = []
    for x, y in pairs:
        r, p, n = pearson(table[x].to_numpy(), table[y].to_numpy())
        rows.append({"x": x, "y": y, "r": r, "p": p, "n": n})
    return pd.DataFrame(rows)


def least_squares_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    """Slope and intercept of the least-squares line through the finite pairs, or None."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2 or np.ptp(x[ok]) == 0:
        return None
    slope, intercept = np.polyfit(x[ok], y[ok], 1)
    return float(slope), float(intercept)
