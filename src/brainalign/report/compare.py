"""Reproduced vs published: every published number with a counterpart in this run, side by side.

A number is compared only when the run computes the same measure on the same thing: a per-model
number needs a model of the run with the paper's label; a correlation over models (Table 1,
Figs. 3 and 6) needs the paper's model set (all 36 labels) and, for task columns, the six HEAR
tasks. Otherwise the row says why there is no counterpart instead of comparing different things.

Each compared row carries a ``tolerance`` (the published precision widened to the verify
tolerance of its kind) and ``checked``: whether ``brainalign verify`` may fail on it. Rows on
simulated voxels, and component rows computed from other sound files than the authors' (the lab
release's 20 kHz copies), are compared for information only.
"""

from __future__ import annotations

import math

import pandas as pd

from brainalign.report import published as pub
from brainalign.report.correlations import pearson, subset_rows

HEAR_TASK_ABBREV = {
    "nsynth_pitch-v2.2.3-50h": "NS",
    "tfds_gtzan-1.0.0-full": "GC",
    "speech_commands-v0.0.2-full": "SC",
    "tfds_crema_d-1.0.0-full": "ER",
    "fsd50k-v1.0-full": "FSD",
    "esc50-v2.0.0-full": "ESC",
}
PAPER_LABELS = frozenset(pub.MUSIC_R2) | {"SpectroTemporal"}


def _row(
    what: str,
    model: str | None,
    measure: str,
    published: float,
    reproduced: float | None,
    exact: bool,
    note: str,
    tolerance: float | None = None,
    checked: bool = False,
) -> dict:
    diff = None if reproduced is None or not math.isfinite(reproduced) else reproduced - published
    return {
        "what": what,
        "model": model,
        "measure": measure,
        "published": published,
        "reproduced": reproduced,
        "difference": diff,
        "published_exact": exact,
        "tolerance": tolerance if reproduced is not None else None,
        "checked": bool(checked and reproduced is not None),
        "note": note,
    }


def compare(
    table: pd.DataFrame,
    tasks: list[str],
    simulated: bool,
    top: dict[str, dict[str, float]] | None = None,
    authors_stimuli: bool = False,
    tolerances: dict[str, float] | None = None,
) -> pd.DataFrame:
    """Long table: what, model, measure, published, reproduced, difference, note.

    ``top`` is the run's RSA topline ({nh2015|b2021: {mean, ...}}), a property of the fMRI data
    alone, so it has a counterpart whenever the datasets do. ``authors_stimuli``: the models
    heard the lab release's files, as the authors' models did. ``tolerances``: the verify
    tolerance per kind (``alignment``, ``correlation``).
    """
    labels = dict(zip(table["label"], table.index, strict=True))
    full_set = set(labels) >= PAPER_LABELS
    hear = set(tasks) == set(HEAR_TASK_ABBREV)
    sim_note = "reproduced on SIMULATED voxels; not comparable in substance" if simulated else ""
    tolerances = tolerances or {}
    rows = []

    def tol(value: float, exact: bool, kind: str, read_off: float = pub.READ_OFF["fig2"]) -> float:
        return max(pub.precision(value, exact, read_off), tolerances.get(kind, 0.0))

    def per_model(what: str, values: dict[str, float], column: str, exact: bool) -> None:
        for label, value in values.items():
            if label in labels:
                got = float(table.loc[labels[label], column])
                rows.append(_row(what, label, column, value, got, exact, sim_note,
                                 tol(value, exact, "alignment"), not simulated))
            else:
                rows.append(
                    _row(
                        what,
                        label,
                        column,
                        value,
                        None,
                        exact,
                        "no counterpart: model not in this run",
                    )
                )

    for key, value in pub.TOPLINE.items():
        got = None if top is None else float(top[key]["mean"])
        rows.append(
            _row(
                f"Fig. 2 RSA topline {key.upper()} (read off the figure)",
                None,
                f"topline_{key}",
                value,
                got,
                False,
                sim_note,
                tol(value, False, "alignment"),
                not simulated,
            )
        )
    base = table[table["label"] == "SpectroTemporal"]
    input_note = ("" if authors_stimuli else "the authors fed the lab release's 20 kHz files; "
                  "this run feeds other copies of the sounds (the GitHub 44.1 kHz files), so "
                  "the difference is informative only")
    for column, (value, exact) in pub.SPECTEMP_COMPONENTS.items():
        what = ("Fig. 4 SpectroTemporal component R^2" + ("" if exact else
                " (read off the figure)"))
        got = float(base[column].iloc[0]) if len(base) else None
        note = input_note if len(base) else "no counterpart: SpectroTemporal not in this run"
        rows.append(_row(what, "SpectroTemporal", column, value, got, exact, note,
                         tol(value, exact, "alignment", pub.READ_OFF["fig4"]), authors_stimuli))
    per_model("Fig. 4 Music component R^2", pub.MUSIC_R2, "comp_music", True)
    per_model(
        "Fig. 2 regression NH2015 R^2 (read off the figure)",
        pub.FIG2_REG_NH2015,
        "reg_nh2015",
        False,
    )

    why_models = "" if full_set else "no counterpart: needs the paper's 36 models"
    abbrev = {t: HEAR_TASK_ABBREV.get(t) for t in tasks}
    for subset, measures in pub.TABLE1.items():
        part = subset_rows(table, subset) if "overall" in table else table
        for measure, by_task in measures.items():
            for task_label, value in by_task.items():
                what = f"Table 1 ({subset}) r, {pub.MEASURE_LABELS[measure]} vs {task_label}"
                if why_models:
                    rows.append(_row(what, None, measure, value, None, True, why_models))
                    continue
                if task_label == "Overall":
                    column = "overall"
                elif hear and task_label in abbrev.values():
                    column = "dsz_" + next(t for t, a in abbrev.items() if a == task_label)
                else:
                    rows.append(
                        _row(
                            what,
                            None,
                            measure,
                            value,
                            None,
                            True,
                            "no counterpart: needs the six HEAR tasks",
                        )
                    )
                    continue
                r, _, _ = pearson(part[measure].to_numpy(), part[column].to_numpy())
                rows.append(_row(what, None, measure, value, r, True, sim_note,
                                 tol(value, True, "correlation"), not simulated))
    for measure, (r_pub, _p) in pub.FIG6.items():
        what = f"Fig. 6 r, Overall vs {measure}"
        if why_models:
            rows.append(_row(what, None, measure, r_pub, None, True, why_models))
        else:
            r, _, _ = pearson(table["overall"].to_numpy(), table[measure].to_numpy())
            rows.append(_row(what, None, measure, r_pub, r, True, sim_note,
                             tol(r_pub, True, "correlation"), not simulated))
    for (x, y), r_pub in pub.FIG3.items():
        what = f"Fig. 3 r, {x} vs {y}"
        if why_models:
            rows.append(_row(what, None, f"{x}~{y}", r_pub, None, True, why_models))
        else:
            r, _, _ = pearson(table[x].to_numpy(), table[y].to_numpy())
            rows.append(_row(what, None, f"{x}~{y}", r_pub, r, True, sim_note,
                             tol(r_pub, True, "alignment"), not simulated))
    return pd.DataFrame(rows)


def _fmt(v: float | None, digits: int = 3) -> str:
    return "--" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def compare_latex(rows: pd.DataFrame, simulated: bool) -> str:
    """A LaTeX section: compared numbers in a table, the rest summarised with the reason."""
    done = rows[rows["reproduced"].notna()]
    missing = rows[rows["reproduced"].isna()]
    out = [r"\section*{Reproduced vs published}"]
    if simulated:
        out.append(
            r"\textbf{These reproduced numbers come from SIMULATED voxels (the embedded "
            r"default); they test the pipeline, not the paper's claims.}"
        )
    out.append(
        f"{len(done)} published numbers have a counterpart in this run; {len(missing)} do not."
    )
    if len(done):
        out += [
            r"\begin{longtable}{p{0.55\linewidth}rrr}",
            r"\toprule",
            r"What & Published & Reproduced & Difference \\ \midrule",
            r"\endhead",
        ]
        for _, r in done.iterrows():
            what = r["what"] + (f" ({r['model']})" if isinstance(r["model"], str) else "")
            out.append(
                f"{_latex_escape(what)} & {_fmt(r['published'])} & "
                f"{_fmt(r['reproduced'])} & {_fmt(r['difference'])} \\\\"
            )
        out += [r"\bottomrule", r"\end{longtable}"]
    if len(missing):
        out += [r"\paragraph{Without a counterpart in this run.}", r"\begin{itemize}"]
        group = missing["what"].str.split(" r,").str[0]
        groups = missing.assign(group=group).groupby(["group", "note"], sort=False).size()
        for (what, note), n in groups.items():
            out.append(
                rf"\item {_latex_escape(what)}: {n} number{'s' if n > 1 else ''}; "
                f"{_latex_escape(note)}."
            )
        out.append(r"\end{itemize}")
    return "\n".join(out) + "\n"


def _latex_escape(text: str) -> str:
    for a, b in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("_", r"\_"),
        ("#", r"\#"),
        ("^", r"\^{}"),
        (">", r"$>$"),
        ("<", r"$<$"),
        ("~", r"\~{}"),
    ):
        text = text.replace(a, b)
    return text
