"""Figures 2, 3, 4, 6 and S2 from the aggregate table (vector PDF plus PNG, one style)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from brainalign.atomic import atomic_path  # noqa: E402
from brainalign.data.components import COMPONENT_LABELS, COMPONENT_NAMES  # noqa: E402
from brainalign.report.correlations import least_squares_line, pearson  # noqa: E402

FAMILY_COLORS = {
    "EnCodecMAE": "#4c4c9b",
    "BEATs": "#e69d00",
    "Dasheng": "#009999",
    "Others": "#bc8f8f",
    "CochCNN9": "#f542f5",
    "CochResNet50": "#f542a7",
    "baseline": "#000000",
}
"""The paper's family colours (paper-spec section 3); other families get a fixed palette."""
_EXTRA = ["#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#17becf", "#7f7f7f", "#bcbd22"]
BASELINE = "baseline"
STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 7,
    "axes.titlesize": 8,
    "axes.labelsize": 7,
    "xtick.labelsize": 6,
    "ytick.labelsize": 6,
    "legend.fontsize": 6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "pdf.fonttype": 42,
    "svg.fonttype": "none",
    "savefig.dpi": 200,
    "figure.dpi": 100,
}
SIM_NOTE = "simulated voxels (embedded default)"


def family_colors(families: list[str]) -> dict[str, str]:
    """A colour per family: the paper's where defined, then a fixed palette in order seen."""
    colors, extra = {}, iter(_EXTRA * 4)
    for fam in families:
        if fam not in colors:
            colors[fam] = FAMILY_COLORS.get(fam) or next(extra)
    return colors


def save(fig: plt.Figure, stem: Path) -> list[Path]:
    """Write ``stem``.pdf and ``stem``.png atomically; close the figure."""
    out = []
    for ext in ("pdf", "png"):
        path = stem.with_suffix(f".{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, bbox_inches="tight", metadata=_metadata(ext))
        out.append(path)
    plt.close(fig)
    return out


def _metadata(ext: str) -> dict[str, str | None]:
    # Fixed metadata keeps the files byte-stable across runs (no creation date).
    return {"CreationDate": None} if ext == "pdf" else {"Software": "brainalign"}


def _mark_simulated(fig: plt.Figure, simulated: bool) -> None:
    if simulated:
        fig.subplots_adjust(top=fig.subplotpars.top - 0.05)  # room above the panel titles
        fig.text(0.995, 0.995, SIM_NOTE, ha="right", va="top", fontsize=6, color="#b00000")


def _split_baseline(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series | None]:
    base = table[table["family"] == BASELINE]
    rest = table[table["family"] != BASELINE]
    return rest, (base.iloc[0] if len(base) else None)


def _hatch_controls(bars, table: pd.DataFrame) -> None:
    """Random-initialisation controls: the family colour, lighter and hatched."""
    for bar, control in zip(bars, _controls(table), strict=True):
        if control:
            bar.set_alpha(0.45)
            bar.set_hatch("////")
            bar.set_edgecolor("#404040")
            bar.set_linewidth(0.3)


def _control_handle(table: pd.DataFrame) -> list:
    if not _controls(table).any():
        return []
    return [Patch(facecolor="#d0d0d0", hatch="////", edgecolor="#404040",
                  label="random initialisation")]


def _hline(ax: plt.Axes, value: float, err: float, style: str, color: str, label: str) -> None:
    """A vertical reference line (bars are horizontal) with an error band."""
    if not np.isfinite(value):
        return
    ax.axvline(value, color=color, linestyle=style, linewidth=0.9, label=label)
    if np.isfinite(err):
        ax.axvspan(value - err, value + err, color=color, alpha=0.15, linewidth=0)


def figure2(table: pd.DataFrame, top: dict, stem: Path, simulated: bool) -> list[Path]:
    """Fig. 2: regression R^2 (SEM) and max-layer RSA rho (SD), both datasets, sorted by
    NH2015 regression; SpectroTemporal as a grey dashed line, topline dotted (RSA panels)."""
    colors = family_colors(list(table["family"]))  # same colours in every figure
    rest, base = _split_baseline(table)
    rest = rest.sort_values("reg_nh2015", ascending=True)
    panels = [
        ("reg_nh2015", "reg_nh2015_sem", "Regression NH2015", r"$R^2$", None),
        ("reg_b2021", "reg_b2021_sem", "Regression B2021", r"$R^2$", None),
        ("rsa_nh2015", "rsa_nh2015_sd", "RSA NH2015", r"Spearman $\rho$", "nh2015"),
        ("rsa_b2021", "rsa_b2021_sd", "RSA B2021", r"Spearman $\rho$", "b2021"),
    ]
    with plt.rc_context(STYLE):
        height = max(2.5, 0.16 * len(rest) + 1.0)
        fig, axes = plt.subplots(1, 4, figsize=(7.2, height), sharey=True)
        y = np.arange(len(rest))
        for ax, (col, err, title, xlabel, topkey) in zip(axes, panels, strict=True):
            bars = ax.barh(
                y,
                rest[col],
                xerr=rest[err],
                color=[colors[f] for f in rest["family"]],
                error_kw={"elinewidth": 0.6, "capsize": 1.5},
                height=0.75,
            )
            _hatch_controls(bars, rest)
            if base is not None:
                _hline(ax, base[col], base[err], "--", "#808080", "SpectroTemporal")
            if topkey is not None and topkey in top:
                _hline(ax, top[topkey]["mean"], top[topkey]["sem"], ":", "#303030", "Topline")
            ax.set_title(title)
            ax.set_xlabel(xlabel)
        axes[0].set_yticks(y, rest["label"])
        handles = [Patch(color=colors[f], label=f) for f in dict.fromkeys(rest["family"])]
        handles += _control_handle(rest)
        handles += [
            plt.Line2D([], [], color="#808080", linestyle="--", label="SpectroTemporal"),
            plt.Line2D([], [], color="#303030", linestyle=":", label="Topline"),
        ]
        fig.legend(
            handles=handles,
            loc="lower center",
            ncol=min(len(handles), 6),
            bbox_to_anchor=(0.5, -0.02 - 0.03 * (len(handles) > 6)),
            frameon=False,
        )
        fig.tight_layout(rect=(0, 0.06, 1, 1))
        _mark_simulated(fig, simulated)
        return save(fig, stem)


def figure4(table: pd.DataFrame, stem: Path, simulated: bool) -> list[Path]:
    """Fig. 4: R^2 per NH2015 component (2 x 3 panels), bars sorted, SpectroTemporal grey line."""
    colors = family_colors(list(table["family"]))
    rest, base = _split_baseline(table)
    with plt.rc_context(STYLE):
        height = max(3.0, 0.11 * len(rest) * 2 + 1.5)
        fig, axes = plt.subplots(2, 3, figsize=(7.2, height))
        for ax, comp in zip(axes.ravel(), COMPONENT_NAMES, strict=True):
            col = f"comp_{comp}"
            part = rest.sort_values(col, ascending=True)
            y = np.arange(len(part))
            bars = ax.barh(y, part[col], color=[colors[f] for f in part["family"]], height=0.75)
            _hatch_controls(bars, part)
            ax.set_yticks(y, part["label"], fontsize=5)
            if base is not None:
                _hline(ax, base[col], float("nan"), "--", "#808080", "SpectroTemporal")
            ax.set_title(COMPONENT_LABELS[comp])
            ax.set_xlabel(r"$R^2$")
        handles = [Patch(color=colors[f], label=f) for f in dict.fromkeys(rest["family"])]
        handles += _control_handle(rest)
        handles.append(plt.Line2D([], [], color="#808080", linestyle="--", label="SpectroTemporal"))
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), frameon=False)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        _mark_simulated(fig, simulated)
        return save(fig, stem)


def _scatter(
    ax: plt.Axes, table: pd.DataFrame, x: str, y: str, xlabel: str, ylabel: str, annotate_p: bool
) -> None:
    """Models as points (random-initialisation controls hollow), a least-squares line, and
    "r = .., p = .." as the panel title, where it cannot cover a point."""
    colors = family_colors(list(table["family"]))
    control = _controls(table)
    for hollow in (False, True):
        part = table[control == hollow]
        if part.empty:
            continue
        fam = [colors[f] for f in part["family"]]
        ax.scatter(part[x], part[y], s=14, zorder=3, linewidths=0.8 if hollow else 0.4,
                   facecolors="white" if hollow else fam,
                   edgecolors=fam if hollow else "white")
    line = least_squares_line(table[x].to_numpy(), table[y].to_numpy())
    if line is not None:
        xs = np.linspace(np.nanmin(table[x]), np.nanmax(table[x]), 20)
        ax.plot(xs, line[0] * xs + line[1], color="#404040", linewidth=0.8, zorder=2)
    r, p, n = pearson(table[x].to_numpy(), table[y].to_numpy())
    text = f"r = {r:.2f}" + (f", p = {p:.1e}" if annotate_p else "") + f" (n = {n})"
    ax.set_title(text, fontsize=6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def _controls(table: pd.DataFrame) -> pd.Series:
    """True for the random-initialisation controls (drawn hollow / hatched)."""
    if "random_init" in table:
        return table["random_init"].fillna(False).astype(bool)
    return pd.Series(False, index=table.index)


def _panel_letter(ax: plt.Axes, letter: str) -> None:
    ax.text(-0.28, 1.12, f"({letter})", transform=ax.transAxes, fontsize=8,
            fontweight="bold", va="bottom", ha="left")


def _family_legend(fig: plt.Figure, table: pd.DataFrame) -> None:
    colors = family_colors(list(table["family"]))
    handles = [Patch(color=colors[f], label=f) for f in dict.fromkeys(table["family"])]
    if _controls(table).any():
        handles.append(plt.Line2D([], [], marker="o", linestyle="", markerfacecolor="white",
                                  markeredgecolor="#404040", markersize=4,
                                  label="random initialisation"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), frameon=False)


def figure3(table: pd.DataFrame, stem: Path, simulated: bool) -> list[Path]:
    """Fig. 3: regression R^2 vs max-layer rho, (a) NH2015 and (b) B2021 (the paper's panel a);
    (c) rho B2021 vs NH2015; (d) R^2 B2021 vs NH2015; Pearson r and a least-squares line."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 4, figsize=(7.2, 2.3))
        _scatter(
            axes[0],
            table,
            "reg_nh2015",
            "rsa_nh2015",
            r"Regression $R^2$ NH2015",
            r"RSA $\rho$ NH2015",
            False,
        )
        _scatter(
            axes[1],
            table,
            "reg_b2021",
            "rsa_b2021",
            r"Regression $R^2$ B2021",
            r"RSA $\rho$ B2021",
            False,
        )
        _scatter(
            axes[2],
            table,
            "rsa_nh2015",
            "rsa_b2021",
            r"RSA $\rho$ NH2015",
            r"RSA $\rho$ B2021",
            False,
        )
        _scatter(
            axes[3],
            table,
            "reg_nh2015",
            "reg_b2021",
            r"Regression $R^2$ NH2015",
            r"Regression $R^2$ B2021",
            False,
        )
        for ax, letter in zip(axes, "abcd", strict=True):
            _panel_letter(ax, letter)
        _family_legend(fig, table)
        fig.tight_layout(rect=(0, 0.1, 1, 1))
        _mark_simulated(fig, simulated)
        return save(fig, stem)


def figure6(table: pd.DataFrame, stem: Path, simulated: bool) -> list[Path]:
    """Fig. 6: Overall downstream score vs cross-validated RSA and regression, both datasets."""
    panels = [
        ("rsacv_nh2015", r"CV RSA $\rho$ NH2015"),
        ("rsacv_b2021", r"CV RSA $\rho$ B2021"),
        ("reg_nh2015", r"Regression $R^2$ NH2015"),
        ("reg_b2021", r"Regression $R^2$ B2021"),
    ]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 4, figsize=(7.2, 2.3))
        for ax, (col, label) in zip(axes, panels, strict=True):
            _scatter(ax, table, "overall", col, "Overall downstream (z)", label, True)
        _family_legend(fig, table)
        fig.tight_layout(rect=(0, 0.1, 1, 1))
        _mark_simulated(fig, simulated)
        return save(fig, stem)


def figure_s2(table: pd.DataFrame, stem: Path, simulated: bool) -> list[Path]:
    """Fig. S2: max-layer rho (x) vs cross-validated rho (y), both datasets, identity line."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(4.8, 2.4))
        for ax, key, name in zip(axes, ("nh2015", "b2021"), ("NH2015", "B2021"), strict=True):
            _scatter(
                ax,
                table,
                f"rsa_{key}",
                f"rsacv_{key}",
                rf"Max-layer $\rho$ {name}",
                rf"Cross-validated $\rho$ {name}",
                False,
            )
            lo = np.nanmin(table[[f"rsa_{key}", f"rsacv_{key}"]].to_numpy())
            hi = np.nanmax(table[[f"rsa_{key}", f"rsacv_{key}"]].to_numpy())
            if np.isfinite(lo) and np.isfinite(hi):
                ax.plot([lo, hi], [lo, hi], color="#a0a0a0", linestyle="--", linewidth=0.7)
        _family_legend(fig, table)
        fig.tight_layout(rect=(0, 0.12, 1, 1))
        _mark_simulated(fig, simulated)
        return save(fig, stem)
