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


def provenance_tex(table: pd.DataFrame, tasks: list[str], source: str, lock: str) -> str:
    """``\\newcommand`` definitions used by paper/brainalign.tex.

    The code is named by content (``source``: sha256 of the package's files, ``lock``: of
    uv.lock; see :mod:`brainalign.provenance`), not by git commit, so a rebuild of the same code
    gives the same PDF.
    """
    simulated = bool(table["simulated_voxels"].any())
    lines = [
        rf"\newcommand{{\dataprovenance}}{{{SIMULATED if simulated else REAL}}}",
        rf"\newcommand{{\nmodels}}{{{len(table)}}}",
        rf"\newcommand{{\ntasks}}{{{len(tasks)}}}",
        rf"\newcommand{{\tasklist}}{{{_escape(', '.join(tasks))}}}",
        rf"\newcommand{{\sourcedigest}}{{{_escape(source[:12])}}}",
        rf"\newcommand{{\lockdigest}}{{{_escape(lock[:12])}}}",
    ]
    return "\n".join(lines) + "\n"
