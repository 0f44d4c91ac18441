"""LaTeX macros that tell the manuscript what this run is made of (data provenance, models)."""

from __future__ import annotations

import pandas as pd

SIMULATED = (
    "In this run the voxel responses are SIMULATED (the embedded default): stand-ins in the "
    "lab-release format generated from the real NH2015 components, because the lab's data cannot "
    "be downloaded offline; the sounds, categories, components and fold file are real, the "
    "models are offline PyPI-shipped models and the downstream tasks are offline mini tasks. "
    "No number here is a finding about the human brain."
)
REAL = "Voxel responses are the lab release of Tuckute et al.\\ (2023)."


def _escape(text: str) -> str:
    return text.replace("\\", "/").replace("_", "\\_").replace("&", "\\&").replace("%", "\\%")


def _num(x: float, digits: int = 3) -> str:
    return "--" if x != x else f"{x:.{digits}f}"


def _p(p: float) -> str:
    if p != p:
        return "--"
    mant, exp = f"{p:.1e}".split("e")
    return f"{mant}\\times 10^{{{int(exp)}}}" if abs(int(exp)) > 2 else f"{p:.3f}"


def results_tex(table: pd.DataFrame, top: dict) -> str:
    """``\\newcommand`` definitions of the run's headline numbers for the Results text (the
    values are computed here, so the text can never disagree with the tables and figures)."""
    from brainalign.report.correlations import pearson

    lines = []
    for key, name in (("nh2015", "NH"), ("b2021", "B")):
        t = top.get(key, {})
        lines.append(rf"\newcommand{{\topline{name}}}{{{_num(t.get('mean', float('nan')))} "
                     rf"$\pm$ {_num(t.get('sem', float('nan')))} (n = {t.get('n', 0)})}}")
    rest = table[table["family"] != "baseline"]
    for col, name in (("reg_nh2015", "RegNH"), ("rsa_nh2015", "RsaNH")):
        if len(rest) and rest[col].notna().any():
            best = rest.loc[rest[col].idxmax()]
            value = f"{_escape(str(best['label']))} ({_num(float(best[col]))})"
        else:
            value = "--"
        lines.append(rf"\newcommand{{\best{name}}}{{{value}}}")
    base = table[table["family"] == "baseline"]
    lines.append(rf"\newcommand{{\baselineRegNH}}{{"
                 rf"{_num(float(base['reg_nh2015'].iloc[0])) if len(base) else '--'}}}")
    for col, name in (("reg_nh2015", "RegNH"), ("reg_b2021", "RegB"),
                      ("rsacv_nh2015", "RsacvNH"), ("rsacv_b2021", "RsacvB")):
        r, p, n = pearson(table["overall"].to_numpy(), table[col].to_numpy())
        lines.append(rf"\newcommand{{\corr{name}}}{{$r = {_num(r, 2)}$, $p = {_p(p)}$, "
                     rf"$n = {n}$}}")
    r, p, n = pearson(table["reg_nh2015"].to_numpy(), table["rsa_nh2015"].to_numpy())
    lines.append(rf"\newcommand{{\corrRegRsaNH}}{{$r = {_num(r, 2)}$, $p = {_p(p)}$, "
                 rf"$n = {n}$}}")
    return "\n".join(lines) + "\n"


def provenance_tex(table: pd.DataFrame, tasks: list[str], source: str, lock: str) -> str:
    """``\\newcommand`` definitions used by paper/brainalign.tex.

    The code is named by content (``source``: sha256 of the package's files, ``lock``: of
    uv.lock; see :mod:`brainalign.provenance`), not by git commit, so a rebuild of the same code
    gives the same PDF.
    """
    simulated = bool(table["simulated_voxels"].any())
    tag = r"\textit{(Simulated voxels: see Section~1.)}" if simulated else ""
    lines = [
        rf"\newcommand{{\dataprovenance}}{{{SIMULATED if simulated else REAL}}}",
        rf"\newcommand{{\simtag}}{{{tag}}}",
        rf"\newcommand{{\nmodels}}{{{len(table)}}}",
        rf"\newcommand{{\ntasks}}{{{len(tasks)}}}",
        rf"\newcommand{{\tasklist}}{{{_escape(', '.join(tasks))}}}",
        rf"\newcommand{{\sourcedigest}}{{{_escape(source[:12])}}}",
        rf"\newcommand{{\lockdigest}}{{{_escape(lock[:12])}}}",
    ]
    return "\n".join(lines) + "\n"
