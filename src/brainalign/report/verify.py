"""``brainalign verify``: this workspace's results against a reference, measure by measure.

The reference is the committed metrics (``git show HEAD:build/metrics/...``, the default),
another commit, or a results folder. Every number of every DVC metrics file is compared with a
tolerance by kind (params.yaml ``verify``):

- ``alignment`` (regression R^2, RSA rho, toplines): floating point differs across CPUs and GPUs
  in the 7th-9th significant digit; an absolute tolerance far above that and far below any real
  change of the analysis;
- ``downstream`` (probe test scores) and ``overall`` (task scores z-scored across models): set
  from the measured run-to-run spread of the probe across seeds (README, "Verification");
- ``correlation`` (Table 1, Figs. 3 and 6): follow from the downstream scores, likewise measured;
- ``extract`` and every non-number (layer lists, checksums, flags): equal.

Then the reproduced-vs-published rows of ``build/report/reproduced_vs_published.csv`` that are
checkable (the run computes the same measure on the same data and inputs): within the published
precision (half a unit of the last printed digit, or the read-off precision of paper-spec
section 6) widened to the kind's tolerance. Rows on simulated voxels, or on other inputs than the
authors', are listed as ``info``, never as failures.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from brainalign.errors import InputError

METRICS_DIR = "build/metrics"
PUBLISHED_CSV = "build/report/reproduced_vs_published.csv"


@dataclass(frozen=True)
class VerifyConfig:
    """params.yaml ``verify``: the tolerances (absolute) per kind of measure."""

    reference: str = "HEAD"
    alignment_atol: float = 1e-4
    downstream_atol: float = 0.08
    overall_atol: float = 0.35
    correlation_atol: float = 0.11

    def __post_init__(self) -> None:
        for name in ("alignment_atol", "downstream_atol", "overall_atol", "correlation_atol"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value >= 0):
                raise InputError(f"verify.{name}", f"expected a number >= 0, got {value!r}")

    def tolerance(self, kind: str) -> float | None:
        return {"alignment": self.alignment_atol, "downstream": self.downstream_atol,
                "overall": self.overall_atol, "correlation": self.correlation_atol}.get(kind)


@dataclass(frozen=True)
class Check:
    """One row: a measure, its reference and current value, difference, tolerance, verdict."""

    measure: str
    kind: str
    reference: Any
    this_run: Any
    difference: float | None
    tolerance: float | None
    verdict: str
    note: str = ""


def flatten(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Leaves of a JSON document as (dotted path, value); list items by index."""
    if isinstance(obj, Mapping):
        for key in sorted(obj):
            yield from flatten(obj[key], f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, list) and any(isinstance(x, Mapping | list) for x in obj):
        for i, item in enumerate(obj):
            yield from flatten(item, f"{prefix}[{i}]")
    else:
        yield prefix, obj


def kind_of(file: str, key: str) -> str:
    """The kind of a measure, from its metrics file and key."""
    top = file.split("/", 1)[0]
    if top == "extract":
        return "extract"
    if top in ("regression", "rsa", "topline"):
        return "alignment"
    if top == "downstream":
        return "overall" if file == "downstream/overall.json" else "downstream"
    if top == "pretraining.json":
        return "alignment"
    if top == "correlations.json":
        if key.startswith("fig3"):  # between alignment measures only: no probe in them
            return "alignment"
        return "correlation" if key.startswith(("table1", "fig6")) else "count"
    if top == "report.json":
        if key.endswith(".overall"):
            return "overall"
        return "alignment" if key.startswith(("models", "topline")) else "count"
    return "other"


def _read_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(where, f"not valid JSON ({exc})") from None


def workspace_metrics(root: str | Path = ".") -> dict[str, Any]:
    """{file relative to build/metrics: parsed JSON} of this workspace."""
    base = Path(root) / METRICS_DIR
    if not base.is_dir():
        raise InputError(base, "no metrics here (run `dvc repro` or `make demo` first)")
    return {str(p.relative_to(base)): _read_json(p.read_text(), str(p))
            for p in sorted(base.rglob("*.json"))}


def _git(args: list[str], cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise InputError("verify.reference", f"git {' '.join(args)} failed: "
                         f"{done.stderr.strip().splitlines()[-1] if done.stderr else ''}")
    return done.stdout


def reference_metrics(reference: str, root: str | Path = ".") -> dict[str, Any]:
    """The reference's metrics: a results folder, or a git revision of this repository."""
    root = Path(root)
    folder = Path(reference)
    if folder.is_dir():
        for candidate in (folder / METRICS_DIR, folder / "metrics", folder):
            if any(candidate.rglob("*.json")):
                return {str(p.relative_to(candidate)): _read_json(p.read_text(), str(p))
                        for p in sorted(candidate.rglob("*.json"))}
        raise InputError(folder, "holds no metrics JSON files")
    names = _git(["ls-tree", "-r", "--name-only", reference, "--", METRICS_DIR], root).split()
    if not names:
        raise InputError("verify.reference", f"{reference!r} has no committed {METRICS_DIR}/")
    return {name[len(METRICS_DIR) + 1:]: _read_json(_git(["show", f"{reference}:{name}"], root),
                                                     f"{reference}:{name}")
            for name in names if name.endswith(".json")}


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _same(a: Any, b: Any) -> bool:
    if _number(a) and _number(b):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def compare_metrics(current: Mapping[str, Any], reference: Mapping[str, Any],
                    config: VerifyConfig, allow_missing: bool = False) -> list[Check]:
    """Every leaf of every metrics file, compared with its tolerance."""
    rows: list[Check] = []
    for file in sorted(set(current) | set(reference)):
        cur = dict(flatten(current.get(file, {})))
        ref = dict(flatten(reference.get(file, {})))
        for key in sorted(set(cur) | set(ref)):
            name, kind = f"{file}:{key}", kind_of(file, key)
            if key not in ref:
                rows.append(Check(name, kind, None, cur[key], None, None, "new",
                                  "not in the reference"))
                continue
            if key not in cur:
                rows.append(Check(name, kind, ref[key], None, None, None,
                                  "info" if allow_missing else "missing", "not in this run"))
                continue
            a, b = cur[key], ref[key]
            tol = config.tolerance(kind)
            if _number(a) and _number(b) and tol is not None:
                if math.isnan(a) or math.isnan(b):
                    ok = math.isnan(a) and math.isnan(b)
                    rows.append(Check(name, kind, b, a, None, tol, "ok" if ok else "fail"))
                    continue
                diff = float(a) - float(b)
                rows.append(Check(name, kind, b, a, diff, tol,
                                  "ok" if abs(diff) <= tol else "fail"))
            else:
                rows.append(Check(name, kind, b, a, None, 0.0 if _number(a) else None,
                                  "ok" if _same(a, b) else "fail", "must be equal"))
    return rows


def compare_published(csv: str | Path) -> list[Check]:
    """The reproduced-vs-published rows: checked ones with their tolerance, others as info."""
    import pandas as pd

    path = Path(csv)
    if not path.is_file():
        return []
    frame = pd.read_csv(path)
    rows = []
    for r in frame.itertuples():
        if pd.isna(r.reproduced):
            continue
        what = r.what + (f" ({r.model})" if isinstance(r.model, str) else "")
        tol = None if pd.isna(r.tolerance) else float(r.tolerance)
        note = "" if pd.isna(r.note) else str(r.note)
        if not bool(r.checked) or tol is None:
            rows.append(Check(f"published: {what}", "published", r.published, r.reproduced,
                              float(r.difference), tol, "info", note))
            continue
        ok = abs(float(r.difference)) <= tol
        rows.append(Check(f"published: {what}", "published", r.published, r.reproduced,
                          float(r.difference), tol, "ok" if ok else "fail", note))
    return rows


def verify(root: str | Path, config: VerifyConfig, reference: str | None = None,
           allow_missing: bool = False) -> list[Check]:
    """All checks of this workspace (metrics against the reference, then published numbers)."""
    root = Path(root)
    rows = compare_metrics(workspace_metrics(root), reference_metrics(
        reference or config.reference, root), config, allow_missing)
    return rows + compare_published(root / PUBLISHED_CSV)


def write_report(rows: list[Check], out_dir: str | Path) -> Path:
    """``verify.csv`` and ``verify.json`` in ``out_dir`` (atomic); returns the CSV path."""
    import pandas as pd

    from brainalign.atomic import atomic_path, write_text

    out_dir = Path(out_dir)
    frame = pd.DataFrame([asdict(r) for r in rows])
    csv = out_dir / "verify.csv"
    with atomic_path(csv) as tmp:
        frame.to_csv(tmp, index=False)
    write_text(out_dir / "verify.json",
               json.dumps([asdict(r) for r in rows], indent=1, default=str) + "\n")
    return csv


def summary(rows: list[Check]) -> dict[str, dict[str, int]]:
    """Counts of verdicts per kind."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        out.setdefault(r.kind, {}).setdefault(r.verdict, 0)
        out[r.kind][r.verdict] += 1
    return out


def _fmt(x: Any) -> str:
    if _number(x):
        return f"{x:.6g}"
    text = json.dumps(x) if not isinstance(x, str) else x
    return text if len(text) <= 24 else text[:21] + "..."


def format_rows(rows: list[Check], everything: bool = False) -> Iterator[str]:
    """The table (failures and info rows; every row with ``everything``)."""
    yield (f"{'measure':64s} {'reference':>12s} {'this run':>12s} {'difference':>11s} "
           f"{'tolerance':>9s}  verdict")
    for r in rows:
        if not everything and r.verdict == "ok":
            continue
        diff = "" if r.difference is None else f"{r.difference:.2e}"
        tol = "" if r.tolerance is None else f"{r.tolerance:.1e}"
        name = r.measure if len(r.measure) <= 64 else r.measure[:61] + "..."
        yield (f"{name:64s} {_fmt(r.reference):>12s} {_fmt(r.this_run):>12s} {diff:>11s} "
               f"{tol:>9s}  {r.verdict}{'  (' + r.note + ')' if r.note else ''}")
