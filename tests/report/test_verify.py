"""`brainalign verify`: committed metrics pass, perturbed ones fail on the right rows."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from brainalign.cli import app
from brainalign.errors import InputError
from brainalign.report.verify import (
    VerifyConfig,
    compare_metrics,
    compare_published,
    kind_of,
    reference_metrics,
    verify,
    workspace_metrics,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git repository holding a copy of the committed build/metrics and params.yaml."""
    root = tmp_path / "ws"
    shutil.copytree(REPO / "build" / "metrics", root / "build" / "metrics")
    shutil.copyfile(REPO / "params.yaml", root / "params.yaml")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "baseline"]):
        subprocess.run(["git", *cmd], cwd=root, env=env, check=True)
    return root


def _edit(root: Path, rel: str, fn) -> None:
    path = root / "build" / "metrics" / rel
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_the_committed_outputs_pass(repo):
    rows = verify(repo, VerifyConfig())
    assert rows and all(r.verdict in ("ok", "info") for r in rows), [
        r for r in rows if r.verdict not in ("ok", "info")][:3]
    kinds = {r.kind for r in rows}
    assert {"alignment", "downstream", "overall", "extract"} <= kinds


def test_perturbed_metrics_fail_on_exactly_those_rows(repo):
    model = json.loads((repo / "build/metrics/report.json").read_text())["models"]
    name = sorted(model)[0]
    _edit(repo, f"regression/{name}.json",
          lambda d: d["NH2015"].__setitem__("mean_r2", d["NH2015"]["mean_r2"] + 2e-3))
    _edit(repo, f"rsa/{name}.json",
          lambda d: d["B2021"].__setitem__("cv_rho", d["B2021"]["cv_rho"] + 5e-5))  # inside
    _edit(repo, "downstream/overall.json", lambda d: d.__setitem__(name, d[name] + 1.0))
    _edit(repo, f"extract/{name}.json", lambda d: d.__setitem__("n_sounds", 164))
    rows = verify(repo, VerifyConfig())
    failed = {r.measure for r in rows if r.verdict == "fail"}
    assert failed == {f"regression/{name}.json:NH2015.mean_r2", f"downstream/overall.json:{name}",
                      f"extract/{name}.json:n_sounds"}
    row = next(r for r in rows if r.measure == f"regression/{name}.json:NH2015.mean_r2")
    assert row.difference == pytest.approx(2e-3) and row.tolerance == 1e-4
    # each tolerance is respected: widen the alignment one and that row passes
    rows = verify(repo, VerifyConfig(alignment_atol=3e-3, overall_atol=2.0))
    assert {r.measure for r in rows if r.verdict == "fail"} == {f"extract/{name}.json:n_sounds"}


def test_cli_exit_codes_table_and_report(repo, monkeypatch):
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(app, ["verify"])
    assert result.exit_code == 0, result.output
    assert "all within tolerance" in result.output
    assert (repo / "build/verify/verify.csv").is_file()
    report = json.loads((repo / "build/verify/verify.json").read_text())
    assert {"measure", "reference", "this_run", "difference", "tolerance", "verdict"} <= set(
        report[0])
    _edit(repo, "topline/topline.json",
          lambda d: d["NH2015"].__setitem__("topline_rho", d["NH2015"]["topline_rho"] - 0.01))
    result = CliRunner().invoke(app, ["verify"])
    assert result.exit_code == 1
    assert "topline/topline.json:NH2015.topline_rho" in result.output
    assert "1 out of tolerance" in result.output


def test_missing_and_new_measures(repo):
    (repo / "build/metrics/downstream/fcpe.json").unlink()
    (repo / "build/metrics/downstream/new-model.json").write_text('{"score": 1.0}')
    rows = verify(repo, VerifyConfig())
    verdicts = {r.measure.split(":")[0]: r.verdict for r in rows}
    assert verdicts["downstream/fcpe.json"] == "missing"
    assert verdicts["downstream/new-model.json"] == "new"
    rows = verify(repo, VerifyConfig(), allow_missing=True)
    assert not any(r.verdict == "missing" for r in rows)


def test_reference_from_a_folder_and_bad_references(repo, tmp_path):
    folder = tmp_path / "results"
    shutil.copytree(repo / "build" / "metrics", folder / "metrics")
    assert reference_metrics(str(folder), repo) == workspace_metrics(repo)
    with pytest.raises(InputError, match="git"):
        reference_metrics("no-such-revision", repo)
    with pytest.raises(InputError, match="no metrics"):
        workspace_metrics(tmp_path / "empty")


def test_published_rows_checked_only_when_comparable(tmp_path):
    csv = tmp_path / "rvp.csv"
    pd.DataFrame([
        {"what": "Fig. 4 SpectroTemporal component R^2", "model": "SpectroTemporal",
         "measure": "comp_music", "published": 0.335676, "reproduced": 0.31, "difference": -0.025,
         "published_exact": True, "tolerance": 1e-4, "checked": False,
         "note": "the authors fed the lab release's 20 kHz files"},
        {"what": "Table 1 r", "model": None, "measure": "reg_b2021", "published": 0.895,
         "reproduced": 0.9, "difference": 0.005, "published_exact": True, "tolerance": 0.1,
         "checked": True, "note": ""},
        {"what": "Fig. 2 topline", "model": None, "measure": "topline_nh2015", "published": 0.759,
         "reproduced": 0.70, "difference": -0.059, "published_exact": False,
         "tolerance": 0.002, "checked": True, "note": ""},
        {"what": "no counterpart", "model": None, "measure": "x", "published": 0.5,
         "reproduced": None, "difference": None, "published_exact": True, "tolerance": None,
         "checked": False, "note": "no counterpart"},
    ]).to_csv(csv, index=False)
    rows = compare_published(csv)
    assert [r.verdict for r in rows] == ["info", "ok", "fail"]


def test_kinds() -> None:
    assert kind_of("regression/fcpe.json", "NH2015.mean_r2") == "alignment"
    assert kind_of("downstream/fcpe.json", "synth-pitch") == "downstream"
    assert kind_of("downstream/overall.json", "fcpe") == "overall"
    assert kind_of("report.json", "models.fcpe.overall") == "overall"
    assert kind_of("report.json", "models.fcpe.reg_nh2015") == "alignment"
    assert kind_of("correlations.json", "table1.all.reg_b2021.Overall") == "correlation"
    # Fig. 3 correlates alignment measures with each other: the alignment tolerance
    assert kind_of("correlations.json", "fig3.reg_nh2015~rsa_nh2015") == "alignment"
    assert kind_of("correlations.json", "fig6.reg_b2021.r") == "correlation"
    assert kind_of("extract/fcpe.json", "layer_dims.conv1") == "extract"


def test_non_numbers_must_be_equal():
    rows = compare_metrics({"a.json": {"layers": ["x", "y"], "flag": True}},
                           {"a.json": {"layers": ["x", "z"], "flag": True}}, VerifyConfig())
    assert {r.measure: r.verdict for r in rows} == {"a.json:layers": "fail", "a.json:flag": "ok"}
    with pytest.raises(InputError, match="verify.downstream_atol"):
        VerifyConfig(downstream_atol=-1)
