"""Report: correlations (Table 1 statistics), LaTeX table, figures, reproduced-vs-published."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from brainalign.report import published
from brainalign.report.compare import HEAR_TASK_ABBREV, compare, compare_latex
from brainalign.report.correlations import correlation_table, least_squares_line, pearson
from brainalign.report.figures import figure2, figure3, figure4, figure6, figure_s2
from brainalign.report.paper import provenance_tex
from brainalign.report.tables import table1_latex, table1_wide


def _table(n: int, seed: int = 0, labels: list[str] | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    overall = np.linspace(-2, 1, n)
    t = pd.DataFrame(
        {
            "model": [f"m{i}" for i in range(n)],
            "label": labels or [f"M{i}" for i in range(n)],
            "family": ["baseline"] + ["A", "B"] * ((n - 1) // 2) + ["A"] * ((n - 1) % 2),
            "training": "untrained",
            "simulated_voxels": True,
            "overall": overall,
        }
    )
    for m in published.MEASURES:
        t[m] = 0.3 + 0.1 * overall + rng.normal(0, 0.05, n)
    for m in ("reg_nh2015", "reg_b2021", "rsa_nh2015", "rsa_b2021", "rsacv_nh2015", "rsacv_b2021"):
        t[m] = 0.3 + 0.1 * overall + rng.normal(0, 0.05, n)
        t[f"{m}_sem"] = 0.01
        t[f"{m}_sd"] = 0.02
    for task in ("t1", "t2"):
        t[f"dsz_{task}"] = overall + rng.normal(0, 0.3, n)
    return t


def test_pearson_is_scipys_two_sided_test():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=12), rng.normal(size=12)
    r, p, n = pearson(x, y)
    ref = stats.pearsonr(x, y)
    assert (r, p, n) == (pytest.approx(ref.statistic, abs=1e-15), pytest.approx(ref.pvalue), 12)
    # p from the t distribution with n - 2 degrees of freedom, as in the paper
    tval = r * math.sqrt(10 / (1 - r * r))
    assert p == pytest.approx(2 * stats.t.sf(abs(tval), 10), rel=1e-10)


def test_pearson_undefined_cases_are_nan():
    assert math.isnan(pearson(np.ones(5), np.arange(5))[0])
    assert math.isnan(pearson(np.arange(2), np.arange(2))[0])
    r, _, n = pearson(np.array([1, 2, np.nan, 4]), np.array([1, 2, 3, 5]))
    assert n == 3 and r > 0.99


def test_subsets_drop_overall_below_minus_one():
    t = _table(9)
    corr = correlation_table(t, ["reg_nh2015"], {"Overall": "overall"})
    n_all = corr[(corr.subset == "all")]["n"].item()
    n_sub = corr[(corr.subset == "overall_gt_-1")]["n"].item()
    assert n_all == 9 and n_sub == int((t["overall"] > -1).sum()) < 9


def test_table1_latex_bold_row_max_and_colours():
    corr = pd.DataFrame(
        [
            {"subset": "all", "measure": "reg_nh2015", "task": "A", "r": 0.9, "p": 0.001, "n": 30},
            {"subset": "all", "measure": "reg_nh2015", "task": "B", "r": 0.5, "p": 0.03, "n": 30},
            {"subset": "all", "measure": "reg_nh2015", "task": "C", "r": 0.1, "p": 0.6, "n": 30},
        ]
    )
    tex = table1_latex(corr, {"reg_nh2015": "Regression NH2015"}, ["A", "B", "C"], "cap")
    row = next(line for line in tex.splitlines() if line.startswith("Regression NH2015"))
    assert r"\cellcolor{sigstrong}\textbf{0.900}" in row
    assert r"\cellcolor{sigweak}0.500" in row and row.rstrip(" \\").endswith("0.100")
    assert "(n = 30)" in tex
    wide = table1_wide(corr, {"reg_nh2015": "Regression NH2015"}, ["A", "B", "C"])
    assert wide.loc[0, "r_A"] == 0.9 and wide.loc[0, "p_C"] == 0.6


def test_least_squares_line():
    slope, intercept = least_squares_line(np.array([0, 1, 2.0]), np.array([1, 3, 5.0]))
    assert slope == pytest.approx(2) and intercept == pytest.approx(1)


def test_compare_says_no_counterpart_for_other_models():
    t = _table(5)
    top = {"nh2015": {"mean": 0.9}, "b2021": {"mean": 0.8}}
    rows = compare(t, ["t1", "t2"], True, top)
    model_rows = rows[rows["what"].str.startswith("Fig. 4 Music")]
    assert len(model_rows) == len(published.MUSIC_R2)
    base_rows = rows[rows["what"].str.startswith("Fig. 4 SpectroTemporal")]
    assert len(base_rows) == 6 and base_rows["reproduced"].isna().all()
    assert model_rows["reproduced"].isna().all()
    assert (model_rows["note"] == "no counterpart: model not in this run").all()
    table_rows = rows[rows["what"].str.startswith("Table 1")]
    assert table_rows["reproduced"].isna().all()
    topline = rows[rows["measure"] == "topline_nh2015"].iloc[0]
    assert topline["difference"] == pytest.approx(0.9 - 0.759)
    tex = compare_latex(rows, True)
    assert "SIMULATED" in tex and "needs the paper's 36 models" in tex


def test_compare_with_the_paper_model_set_computes_table1():
    labels = ["SpectroTemporal", *published.MUSIC_R2]
    t = _table(len(labels), labels=labels)
    for task in HEAR_TASK_ABBREV:
        t[f"dsz_{task}"] = t["overall"] + np.random.default_rng(3).normal(0, 0.2, len(t))
    rows = compare(t, list(HEAR_TASK_ABBREV), False)
    t1 = rows[rows["what"].str.startswith("Table 1")]
    assert t1["reproduced"].notna().all() and len(t1) == 2 * 10 * 7
    music = rows[(rows["what"].str.startswith("Fig. 4")) & (rows["model"] == "AST")].iloc[0]
    assert music["published"] == 0.8076 and music["reproduced"] == pytest.approx(
        t.loc[t.label == "AST", "comp_music"].item()
    )


def test_figures_are_written_as_pdf_and_png(tmp_path):
    t = _table(7)
    for comp in ("lowfreq", "highfreq", "envsounds", "pitch", "speech", "music"):
        t[f"comp_{comp}"] = np.linspace(0.1, 0.5, 7)
    top = {"nh2015": {"mean": 0.7, "sem": 0.02}, "b2021": {"mean": 0.6, "sem": 0.02}}
    paths = (
        figure2(t, top, tmp_path / "fig2", True)
        + figure3(t, tmp_path / "fig3", True)
        + figure4(t, tmp_path / "fig4", True)
        + figure6(t, tmp_path / "fig6", True)
        + figure_s2(t, tmp_path / "figS2", True)
    )
    assert len(paths) == 10
    for path in paths:
        head = path.read_bytes()[:8]
        assert head.startswith(b"%PDF") if path.suffix == ".pdf" else head.startswith(b"\x89PNG")


def test_provenance_macros_say_simulated():
    tex = provenance_tex(_table(3), ["nat165-category"], "a" * 64, "b" * 64)
    assert "SIMULATED" in tex and r"\newcommand{\nmodels}{3}" in tex
    assert r"\newcommand{\sourcedigest}{aaaaaaaaaaaa}" in tex
    assert r"\newcommand{\lockdigest}{bbbbbbbbbbbb}" in tex
    assert r"nat165-category" in tex


def test_spectemp_components_are_compared_and_checked_only_on_the_authors_inputs():
    t = _table(3, labels=["SpectroTemporal", "m1", "m2"])
    t["family"] = ["baseline", "x", "y"]
    for comp in ("lowfreq", "highfreq", "envsounds", "pitch", "speech", "music"):
        t[f"comp_{comp}"] = [0.5, 0.6, 0.7]
    top = {"nh2015": {"mean": 0.9}, "b2021": {"mean": 0.8}}
    rows = compare(t, ["t1"], False, top)
    base = rows[rows["what"].str.startswith("Fig. 4 SpectroTemporal")]
    assert len(base) == 6 and (base["reproduced"] == 0.5).all()
    assert not base["checked"].any() and base["note"].str.contains("20 kHz").all()
    music = base[base["measure"] == "comp_music"].iloc[0]
    assert music["published"] == 0.335676 and music["tolerance"] == pytest.approx(5e-7)
    lf = base[base["measure"] == "comp_lowfreq"].iloc[0]
    assert lf["tolerance"] == pytest.approx(0.005)  # read off Fig. 4
    rows = compare(t, ["t1"], False, top, authors_stimuli=True,
                   tolerances={"alignment": 1e-3})
    base = rows[rows["what"].str.startswith("Fig. 4 SpectroTemporal")]
    assert base["checked"].all()
    assert base[base["measure"] == "comp_music"]["tolerance"].iloc[0] == pytest.approx(1e-3)
