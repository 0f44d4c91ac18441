"""Fig. 5: brain similarity across EnCodecMAE pretraining (vector PDF plus PNG, and its float).

Drawn as the authors' notebook draws it (mrpep/braindnn @1222378 ``notebooks/results.ipynb``,
the two pretraining cells), in this project's style (:mod:`brainalign.report.figures`: fonts,
the EnCodecMAE family colour, the simulated-data mark):

- **(a)** one row per layer of ``layers_a`` (0-based keys 1, 3, 5, 7, 9, labelled "Layer 2" ...
  "Layer 10" as ``f'Layer {l+1}'``; the deepest on top): layer-wise RSA rho (mean over
  subjects) against the pretraining step, NH2015 and B2021 with all voxels, unsmoothed, y ticks
  at each row's minimum and maximum.
- **(b)** NH2015's Primary and Posterior ROIs side by side, one line per layer of ``layers_b``
  (the notebook's cell takes ``layer_map[...][[0, 2, 4, 6, 8]]``, labelled "Layer 1" ...
  "Layer 9"), each curve smoothed by ``scipy.signal.savgol_filter(window_length=10,
  polyorder=3)``, the authors' call.

**The even window.** SciPy accepts even windows since 1.8.0 (scipy PR #14342; the authors pin
1.16.1, this project's lock 1.17.1): the least-squares cubic of each window is evaluated at
the window's centre, half a sample off the output sample. In the default ``mode='interp'`` the
output at index i >= 5 (away from the edges) is the cubic fitted to samples i-4 .. i+5
evaluated at i + 0.5, i.e. the curve leads by half a checkpoint interval (500 steps for the
published run); the first and last five outputs are the cubics fitted to the first and last
ten samples evaluated at the samples themselves. We call SciPy exactly as the authors did and
plot at the checkpoints' steps as they did; tests check this against a direct polynomial fit.
Fewer checkpoints than the window: the window shrinks to the number of points (at least
order + 1; else no smoothing), noted in the caption.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from brainalign.report.figures import FAMILY_COLORS, SIM_NOTE, STYLE, save  # noqa: E402

FAMILY = "EnCodecMAE"
DATASETS = ("NH2015", "B2021")
ROIS = ("Primary", "Posterior")
MINIATURE_NOTE = "miniature pretraining, simulated voxels"


def smooth(values: Sequence[float], window: int = 10, order: int = 3) -> tuple[np.ndarray, int]:
    """(Savitzky-Golay smoothed values, window used): the authors' ``savgol_filter`` call.

    ``window`` 1 (or fewer points than ``order + 1``) returns the values unchanged (window 1).
    """
    from scipy.signal import savgol_filter

    y = np.asarray(values, dtype=np.float64)
    window = min(int(window), len(y))
    if window <= max(order, 1) or not np.isfinite(y).all():
        return y.copy(), 1
    return savgol_filter(y, window_length=window, polyorder=order), window


def _shade(color: str, t: float) -> tuple[float, float, float]:
    """``color`` mixed with white: t = 0 white, t = 1 the colour itself."""
    r, g, b = to_rgb(color)
    return (1 - t + t * r, 1 - t + t * g, 1 - t + t * b)


def _ramp(n: int, color: str) -> list[tuple[float, float, float]]:
    """Light to dark shades of the family colour (shallow to deep layers)."""
    if n == 1:
        return [to_rgb(color)]
    out = []
    for t in np.linspace(0.35, 1.0, n):
        out.append(_shade(color, float(t)) if t < 1 else to_rgb(color))
    return out


def _steps_formatter(max_step: float) -> FuncFormatter:
    if max_step >= 10_000:
        return FuncFormatter(lambda v, _: f"{v / 1000:g}k" if v else "0")
    return FuncFormatter(lambda v, _: f"{v:g}")


def _curve(table: pd.DataFrame, target: str, layer: str) -> tuple[np.ndarray, np.ndarray]:
    part = table[(table["target"] == target) & (table["layer"] == layer)].sort_values("step")
    return part["step"].to_numpy(dtype=np.float64), part["mean_rho"].to_numpy(dtype=np.float64)


def _letter(ax: plt.Axes, letter: str, x: float = -0.2) -> None:
    ax.text(x, 1.02, f"({letter})", transform=ax.transAxes, fontsize=8, fontweight="bold",
            va="bottom", ha="left")


def figure5(table: pd.DataFrame, stem: Path, layers_a: Sequence[str], layers_b: Sequence[str],
            window: int = 10, order: int = 3, *, miniature: bool = False,
            simulated: bool = False) -> tuple[list[Path], int]:
    """Draw Fig. 5 from the tidy table; returns (files written, smoothing window used)."""
    color = FAMILY_COLORS[FAMILY]
    dataset_style = {"NH2015": {"color": color, "linestyle": "-"},
                     "B2021": {"color": _shade(color, 0.5), "linestyle": "--"}}
    steps = np.sort(table["step"].unique())
    fmt = _steps_formatter(float(steps.max()) if len(steps) else 0.0)
    used = 1
    with plt.rc_context(STYLE):
        fig = plt.figure(figsize=(7.2, 3.9))
        grid = fig.add_gridspec(len(layers_a), 3, width_ratios=(1.25, 1.0, 1.0), wspace=0.35,
                                hspace=0.25)
        rows = [fig.add_subplot(grid[i, 0]) for i in range(len(layers_a))]
        for i, layer in enumerate(layers_a):
            ax = rows[-i - 1]
            lo, hi = np.inf, -np.inf
            for dataset in DATASETS:
                if dataset not in set(table["target"]):
                    continue
                x, y = _curve(table, dataset, layer)
                ax.plot(x, y, linewidth=0.9, label=dataset, **dataset_style[dataset])
                if np.isfinite(y).any():
                    lo, hi = min(lo, np.nanmin(y)), max(hi, np.nanmax(y))
            if np.isfinite(lo) and np.isfinite(hi):
                ax.set_yticks([lo, hi], [f"{lo:.2f}", f"{hi:.2f}"])
            ax.set_ylabel(f"Layer {int(layer) + 1}" + r" - $\rho$", fontsize=6)
            ax.xaxis.set_major_formatter(fmt)
            if i:
                ax.tick_params(labelbottom=False)
        rows[-1].set_xlabel("Pretraining steps")
        rows[0].legend(loc="lower right", bbox_to_anchor=(1.0, 0.98), frameon=False, ncol=2,
                       fontsize=5, borderaxespad=0.0)
        for ax in rows[:-1]:
            ax.sharex(rows[-1])
        _letter(rows[0], "a", -0.3)
        shades = _ramp(len(layers_b), color)
        panels = [fig.add_subplot(grid[:, 1 + j]) for j in range(len(ROIS))]
        for ax, roi in zip(panels, ROIS, strict=True):
            target = f"NH2015/{roi}"
            for layer, shade in zip(layers_b, shades, strict=True):
                x, y = _curve(table, target, layer)
                if not len(y):
                    continue
                ys, used = smooth(y, window, order)
                ax.plot(x, ys, color=shade, linewidth=1.0, label=f"Layer {int(layer) + 1}")
            ax.set_title(f"ROI: {roi}")
            ax.grid(True, linewidth=0.3, color="#d0d0d0")
            ax.set_xlabel("Pretraining steps")
            ax.xaxis.set_major_formatter(fmt)
        panels[0].set_ylabel(r"Spearman $\rho$ (smoothed)")
        panels[-1].legend(loc="best", frameon=False)
        _letter(panels[0], "b", -0.22)
        note = MINIATURE_NOTE if miniature else (SIM_NOTE if simulated else "")
        if note:
            fig.text(0.995, 0.995, note, ha="right", va="top", fontsize=6, color="#b00000")
        fig.subplots_adjust(left=0.09, right=0.99, bottom=0.12, top=0.9)
        return save(fig, stem), used


def caption(n_checkpoints: int, first: int, last: int, layers_a: Sequence[str],
            layers_b: Sequence[str], window: int, order: int, used: int, *, miniature: bool,
            simulated: bool, source: str) -> str:
    """The LaTeX caption of the figure, saying what this run is made of."""
    a = ", ".join(str(int(k) + 1) for k in layers_a)
    b = ", ".join(str(int(k) + 1) for k in layers_b)
    text = (
        "Reproduces Fig.~5 of the paper. Brain similarity across EnCodecMAE pretraining: "
        f"(a) layer-wise RSA $\\rho$ (mean over subjects) of layers {a} against the pretraining "
        "step, NH2015 (solid) and B2021 (dashed), all voxels; (b) NH2015's Primary and "
        f"Posterior ROIs, layers {b}, Savitzky--Golay smoothed (SciPy, window {window}, order "
        f"{order}, as the authors; with an even window SciPy evaluates each fit half a "
        f"checkpoint interval ahead). {n_checkpoints} checkpoints, steps {first}--{last}. "
    )
    if used != window:
        text += (f"Only {n_checkpoints} checkpoints: smoothing window {used}"
                 + (" (none)" if used == 1 else "") + ". ")
    if miniature:
        text += (r"\textbf{Miniature pretraining, simulated voxels:} a small EnCodecMAE "
                 "(mel input, reduced width) trained here on synthetic audio, reconstructing "
                 "masked mel frames because the EnCodec targets are unavailable offline; not the "
                 "paper's 100 checkpoints, and the voxels are simulated.")
    elif simulated:
        text += f"{source.capitalize()}; \\textbf{{simulated voxels}}."
    else:
        text += f"{source.capitalize()}."
    return text


def figure_tex(caption_text: str, produced_from: str = "build/pretraining/dynamics.parquet"
               ) -> str:
    """The figure float the paper inputs (``build/report/fig5.tex``)."""
    return "\n".join([
        r"\begin{figure}[t]",
        r"\centering\includegraphics[width=\linewidth]{fig5.pdf}",
        rf"\caption{{{caption_text}}}",
        rf"\producedby{{figure5}}{{{produced_from}}}",
        r"\label{fig:fig5}",
        r"\end{figure}",
        "",
    ])
