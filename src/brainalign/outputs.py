"""Which pipeline stage writes each build output, and the one error for a damaged one.

A truncated, corrupted or empty intermediate file (an interrupted copy, a full disk, a bad
restore) must not surface as a library traceback: the reader names the file and the stage that
rebuilds it, and the CLI exits with code 2 like for every other bad input.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from brainalign.errors import InputError

_PER_MODEL = {"activations": "extract", "regression": "regress", "rsa": "rsa",
              "downstream": "downstream", "brainmaps": "brainmaps"}
_METRICS_PER_MODEL = {"extract": "extract", "regression": "regress", "rsa": "rsa",
                      "downstream": "downstream"}
_SINGLE = {"topline": "topline", "tasks": "build-tasks", "overall": "overall",
           "paper": "paper", "verify": None}
_REPORT = {"models.csv": "aggregate", "models.parquet": "aggregate", "topline.json": "aggregate",
           "reproduced_vs_published.csv": "compare", "reproduced_vs_published.tex": "compare"}
_METRICS_FILES = {"report.json": "aggregate", "correlations.json": "correlate",
                  "overall.json": "overall", "topline.json": "topline",
                  "pretraining.json": "dynamics"}


def stage_of(path: str | Path) -> str | None:
    """The dvc.yaml stage that writes ``path`` (a path under ``build/``), or None."""
    parts = PurePosixPath(Path(path).as_posix()).parts
    if "build" not in parts:
        return None
    rest = parts[parts.index("build") + 1:]
    if len(rest) < 2:
        return _SINGLE.get(rest[0]) if rest else None
    folder, name = rest[0], PurePosixPath(rest[-1])
    if folder in _PER_MODEL:
        model = name.stem if folder == "activations" else rest[1]
        return f"{_PER_MODEL[folder]}@{model}"
    if folder == "metrics":
        if name.name in _METRICS_FILES:
            return _METRICS_FILES[name.name]
        kind = rest[1]
        return f"{_METRICS_PER_MODEL[kind]}@{name.stem}" if kind in _METRICS_PER_MODEL else None
    if folder == "pretraining":
        return "pretrain-mini" if rest[1] == "miniature" else "dynamics"
    if folder == "report":
        if len(rest) == 3 and rest[1] == "brainmaps":
            return f"brainmaps@{name.stem}"
        if name.name == "brainmaps.tex":
            return "brainmaps-report"
        if name.name in _REPORT:
            return _REPORT[name.name]
        if name.name.startswith("fig5"):
            return "figure5"
        return "figures" if name.name.startswith(("fig2", "fig4")) else "correlate"
    return _SINGLE.get(folder)


def damaged(path: str | Path, exc: BaseException, what: str = "file") -> InputError:
    """One clear error for an unreadable output: the file, the problem, how to rebuild it."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        problem = "is empty (0 bytes)"
    else:
        detail = str(exc).splitlines()[0] if str(exc) else ""
        problem = f"is damaged or truncated ({type(exc).__name__}: {detail})"
    stage = stage_of(path)
    fix = (f"rebuild it with `dvc repro -f {stage}`" if stage
           else "delete it and run the command that writes it again")
    return InputError(path, f"this {what} {problem}; {fix}")
