"""Table 1 as LaTeX and CSV: r per (measure, task), cells coloured by p, row maximum in bold."""

from __future__ import annotations

import math

import pandas as pd

from brainalign.report.correlations import SUBSET_LABELS

P_STRONG, P_WEAK = 0.01, 0.05
COLOR_STRONG, COLOR_WEAK = "sigstrong", "sigweak"


def _cell(r: float, p: float, bold: bool) -> str:
    if not math.isfinite(r):
        return "--"
    text = f"{r:.3f}"
    if bold:
        text = rf"\textbf{{{text}}}"
    if math.isfinite(p) and p < P_STRONG:
        return rf"\cellcolor{{{COLOR_STRONG}}}{text}"
    if math.isfinite(p) and p < P_WEAK:
        return rf"\cellcolor{{{COLOR_WEAK}}}{text}"
    return text


def table1_latex(
    corr: pd.DataFrame,
    measure_labels: dict[str, str],
    tasks: list[str],
    caption: str,
    label: str = "tab:table1",
    produced_by: str = "",
) -> str:
    """A complete ``table`` environment (needs ``\\usepackage[table]{xcolor}`` and the two
    colours ``sigstrong``/``sigweak`` defined in the preamble). ``produced_by``: LaTeX placed
    inside the float under the caption (the stage that made the table), so it stays with it."""
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\begin{tabular}{l" + "r" * len(tasks) + "}",
        r"\toprule",
    ]
    for subset in corr["subset"].unique():
        part = corr[corr["subset"] == subset]
        n = int(part["n"].max()) if len(part) else 0
        lines.append(
            rf"\multicolumn{{{len(tasks) + 1}}}{{l}}{{\textit{{{SUBSET_LABELS[subset]} "
            rf"(n = {n})}}}} \\"
        )
        lines.append(" & ".join(["Measure", *tasks]) + r" \\ \midrule")
        for measure, label_text in measure_labels.items():
            row = part[part["measure"] == measure].set_index("task")
            if row.empty:
                continue
            values = [row.loc[t, "r"] if t in row.index else math.nan for t in tasks]
            finite = [v for v in values if math.isfinite(v)]
            best = max(finite) if finite else math.nan
            cells = [
                _cell(v, row.loc[t, "p"] if t in row.index else math.nan, v == best)
                for t, v in zip(tasks, values, strict=True)
            ]
            lines.append(" & ".join([label_text, *cells]) + r" \\")
        lines.append(r"\midrule")
    lines[-1] = r"\bottomrule"
    lines += [r"\end{tabular}", rf"\caption{{{caption}}}", rf"\label{{{label}}}"]
    if produced_by:
        lines.append(produced_by)
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def table1_wide(
    corr: pd.DataFrame, measure_labels: dict[str, str], tasks: list[str]
) -> pd.DataFrame:
    """CSV form: one row per (subset, measure), r and p per task, n."""
    rows = []
    for subset in corr["subset"].unique():
        part = corr[corr["subset"] == subset]
        for measure, label_text in measure_labels.items():
            sub = part[part["measure"] == measure].set_index("task")
            if sub.empty:
                continue
            row = {
                "subset": subset,
                "measure": measure,
                "label": label_text,
                "n": int(sub["n"].max()),
            }
            for t in tasks:
                row[f"r_{t}"] = sub.loc[t, "r"] if t in sub.index else math.nan
                row[f"p_{t}"] = sub.loc[t, "p"] if t in sub.index else math.nan
            rows.append(row)
    return pd.DataFrame(rows)
