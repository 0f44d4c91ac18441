"""Brain-map figures (nilearn plotting) and the commands ``brainmaps`` and ``brainmaps-report``.

- ``brainalign brainmaps --model M`` (DVC ``brainmaps@<model>``): the maps of
  :mod:`brainalign.alignment.brainmaps` under ``build/brainmaps/<model>/`` and the model's figure
  ``build/report/brainmaps/<model>.{pdf,png}``: one row per dataset, the per-voxel R^2 and the
  selected layer. NIfTI datasets: axial slices (``nilearn.plotting.plot_img`` of the brain mask,
  the map added as an overlay) of the first subject, in its own space (no template, so any
  space works); lab
  release datasets: scatter maps of every voxel on its surface coordinates (x_ras, y_ras).
- ``brainalign brainmaps-report`` (DVC ``brainmaps-report``): ``build/report/brainmaps.tex``, one
  LaTeX figure per model of the run, for the manuscript (``\\input`` it).

This module imports only typer at import time (the CLI registers its commands); plotting and
data libraries load inside the functions.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

cli = typer.Typer(add_completion=False)
"""Registered on the main app (``app.add_typer(cli)``): its commands are top-level commands."""

BRAINMAPS = Path("build") / "brainmaps"
FIGURES = Path("build") / "report" / "brainmaps"
TEX = Path("build") / "report" / "brainmaps.tex"
_MAX_CUTS = 3
DATASET_ORDER = ("NH2015", "B2021")



def _model_key(name: str) -> str:
    from brainalign.models.hear import model_key

    return model_key(name)


ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="Model name (see `brainalign models`).",
                      callback=_model_key)
]
ParamsOpt = Annotated[Path, typer.Option("--params", help="Parameter file.")]


# ----------------------------------------------------------------------------- figures


def _padded(img: Any) -> Any:
    """``img`` with NaN as 0 and a 1-voxel border of zeros: nilearn's slicers need every axis at
    least a few voxels wide (a one-voxel-thick grid has no extent to draw)."""
    import numpy as np

    data = np.pad(np.nan_to_num(np.asarray(img.dataobj, dtype=np.float64)), 1)
    shift = np.eye(4)
    shift[:3, 3] = -1.0
    return type(img)(data, img.affine @ shift)


def _cut_coords(img: Any, n: int = _MAX_CUTS) -> list[float]:
    """Up to ``n`` axial (world z) positions through the voxels with a value."""
    import numpy as np
    from nibabel.affines import apply_affine

    ijk = np.argwhere(np.asarray(img.dataobj) != 0)
    if len(ijk) == 0:
        return [0.0]
    z = np.unique(np.round(apply_affine(img.affine, ijk)[:, 2], 3))
    if len(z) <= n:
        return [float(v) for v in z]
    return [float(z[int(round(i))]) for i in np.linspace(0, len(z) - 1, n)]


def _stat_map(ax: Any, fig: Any, img: Any, mask: Any, title: str, cmap: str, vmin: float,
              vmax: float, threshold: float) -> None:
    """Axial slices of ``img`` over its brain mask (light grey), in the image's own space."""
    from nilearn import plotting

    clean, outline = _padded(img), _padded(mask)
    cuts = _cut_coords(outline)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # permuted axes: nilearn reorders them, and says so
        display = plotting.plot_img(
            outline, display_mode="z", cut_coords=cuts, axes=ax, figure=fig, cmap="Greys",
            vmin=0.0, vmax=5.0, threshold=0.5, annotate=False, draw_cross=False,
            black_bg=False, colorbar=False)
        display.add_overlay(clean, cmap=cmap, vmin=vmin, vmax=vmax, threshold=threshold,
                            colorbar=True)
    display.title(f"{title}; z = {', '.join(f'{c:g}' for c in cuts)} mm", size=7,
                  color="black", bgcolor="white", alpha=0.0)


def _scatter(ax: Any, fig: Any, table: Any, column: str, names: Sequence[str], title: str,
             cmap: str, vmin: float, vmax: float) -> None:
    import numpy as np

    ok = np.isfinite(table[column].to_numpy(dtype=np.float64))
    ax.scatter(table.loc[~ok, names[0]], table.loc[~ok, names[1]], s=3, c="#dddddd",
               linewidths=0, label="not regressed")
    points = ax.scatter(table.loc[ok, names[0]], table.loc[ok, names[1]], s=4,
                        c=table.loc[ok, column], cmap=cmap, vmin=vmin, vmax=vmax, linewidths=0)
    fig.colorbar(points, ax=ax, shrink=0.8)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(title)
    ax.set_aspect("equal", adjustable="datalim")


def figure_model(model: str, label: str, maps_dir: str | Path, datasets: Sequence[str],
                 stem: str | Path, simulated: bool) -> list[Path]:
    """The model's brain-map figure (``stem``.pdf and .png); returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib
    import numpy as np

    from brainalign.alignment.brainmaps import load_maps
    from brainalign.report.figures import SIM_NOTE, STYLE, save

    maps_dir = Path(maps_dir)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(datasets), 2, figsize=(7.0, 2.3 * len(datasets)),
                                 squeeze=False)
        for row, name in zip(axes, datasets, strict=True):
            table, metrics = load_maps(maps_dir, name)
            n_layers = len(metrics["layers"])
            r2_max = float(np.nanmax(table["r2"])) if table["regressed"].any() else 1.0
            r2_max = max(r2_max, 1e-3)
            if metrics["format"] == "nifti":
                sid, entry = next(iter(metrics["subjects"].items()))
                folder = maps_dir / name
                r2, layer, mask = (nib.load(str(folder / entry["files"][k]))
                                   for k in ("r2", "layer", "mask"))
                _stat_map(row[0], fig, r2, mask, f"{name} subject {sid}: R$^2$", "plasma", 0.0,
                          r2_max, 1e-9)
                _stat_map(row[1], fig, layer, mask, f"{name} subject {sid}: selected layer "
                          f"(1-{n_layers})", "viridis", 1.0, max(n_layers, 2), 0.5)
            else:
                names = metrics["coordinates"][:2]
                if len(names) < 2:
                    for ax in row:
                        ax.axis("off")
                        ax.set_title(f"{name}: no voxel coordinates")
                    continue
                _scatter(row[0], fig, table, "r2", names, f"{name}: R$^2$ per voxel", "plasma",
                         0.0, r2_max)
                _scatter(row[1], fig, table, "depth", names,
                         f"{name}: selected layer depth (0 first, 1 last)", "viridis", 0.0, 1.0)
        fig.subplots_adjust(hspace=0.55, wspace=0.35)
        fig.suptitle(f"{label} ({model})", fontsize=8)
        if simulated:
            fig.text(0.995, 0.995, SIM_NOTE, ha="right", va="top", fontsize=6, color="#b00000")
        return save(fig, Path(stem))


# ------------------------------------------------------------------------------- LaTeX

_TEX_ESCAPE = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
               "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
               "^": r"\textasciicircum{}"}


def _tex(text: str) -> str:
    return "".join(_TEX_ESCAPE.get(c, c) for c in text)


def brainmaps_tex(models: Sequence[tuple[str, str]], maps_dir: str | Path) -> str:
    """One LaTeX figure per (model, label), from the maps' metrics (datasets, format, subject)."""
    maps_dir = Path(maps_dir)
    blocks = ["% Brain maps, one figure per model (brainalign brainmaps-report).\n"]
    for model, label in models:
        parts = []
        found = {p.parent.name: p for p in maps_dir.joinpath(model).glob("*/metrics.json")}
        order = {d: i for i, d in enumerate(DATASET_ORDER)}
        for dataset in sorted(found, key=lambda d: (order.get(d, len(order)), d)):
            m = json.loads(found[dataset].read_text())
            if m["format"] == "nifti":
                sid = next(iter(m["subjects"]))
                parts.append(f"{m['dataset']}: slices of subject {sid}'s maps in its own space")
            else:
                parts.append(f"{m['dataset']}: every voxel on its surface coordinates")
        if not parts:
            from brainalign.errors import InputError

            raise InputError(maps_dir / model, "no brain maps (run `dvc repro "
                             f"brainmaps@{model}`)")
        blocks.append(
            "\\begin{figure}[p]\n"
            f"\\centering\\includegraphics[width=\\linewidth]{{{{brainmaps/{model}}}.pdf}}\n"
            f"\\caption{{Brain maps of {_tex(label)} (\\texttt{{{_tex(model)}}}): per-voxel "
            "regression $R^2$ (nested CV; left) and the layer selected in most outer folds "
            f"(right; 1 = the first candidate layer). {_tex('; '.join(parts))}. Voxelwise maps in "
            f"\\texttt{{build/brainmaps/{_tex(model)}/}}. \\simtag}}\n"
            f"\\producedby{{brainmaps@{_tex(model)}}}{{build/regression/{_tex(model)}}}\n"
            f"\\label{{fig:brainmaps-{model}}}\n"
            "\\end{figure}\n"
        )
    return "\n".join(blocks)


# ----------------------------------------------------------------------------- commands


@cli.command("brainmaps")
def brainmaps_cmd(model: ModelOpt, params: ParamsOpt = Path("params.yaml")) -> None:
    """Brain maps of one model: per-voxel R^2 and selected layer (NIfTI per subject) + figure."""
    from brainalign import cli as main
    from brainalign.alignment.brainmaps import run_brainmaps
    from brainalign.models.registry import get_spec

    p = main._params(params)
    main._require_run_model(p, model)
    layout = main._layout(p)
    datasets = layout.voxel_datasets()
    out = BRAINMAPS / model
    metrics = run_brainmaps(model, main.BUILD / "regression" / model, datasets, out)
    simulated = any(m["simulated"] for m in metrics.values())
    figure_model(model, get_spec(model).label, out, list(datasets), FIGURES / model, simulated)
    main.log.info("brain maps of %s: %s", model, {k: v["median_r2"] for k, v in metrics.items()})


@cli.command("brainmaps-report")
def brainmaps_report_cmd(params: ParamsOpt = Path("params.yaml")) -> None:
    """build/report/brainmaps.tex: one figure per model of the run, for the manuscript."""
    from brainalign import cli as main
    from brainalign.atomic import write_text
    from brainalign.models.registry import get_spec

    p = main._params(params)
    models = [(m, get_spec(m).label) for m in main._run_models(p)]
    write_text(TEX, brainmaps_tex(models, BRAINMAPS))
