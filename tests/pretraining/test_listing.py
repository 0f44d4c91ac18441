"""The published checkpoints' path: a Hub directory listing fetched from a mirror (three
checkpoints in the real Lightning format), then the same stages and figure."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import fig5_helpers as FH  # noqa: E402
from fixtures import encodecmae as FX  # noqa: E402

from brainalign.data.fetch import fetch  # noqa: E402
from brainalign.errors import InputError  # noqa: E402
from brainalign.models import encodecmae as E  # noqa: E402
from brainalign.pretraining import checkpoints as C  # noqa: E402
from brainalign.pretraining import stages  # noqa: E402
from brainalign.pretraining.table import FIG5A_PUBLISHED, compare_rows  # noqa: E402

COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
STEPS = (0, 1000, 2000)


def _mirror(root: Path, ckpt_dir: Path) -> None:
    """The Hub's answers and files for lpepino/encodecmae-pretrained under a mirror root."""
    hub = root / "huggingface.co"
    api = hub / "api" / "models" / E.PRETRAIN_REPO
    (api / "revision").mkdir(parents=True)
    (api / "revision" / "main").write_text(json.dumps({"sha": COMMIT}))
    items = []
    for path in sorted(ckpt_dir.glob("*.ckpt")):
        data = path.read_bytes()
        repo_path = f"{E.PRETRAIN_DIR}/{path.name}"
        items.append({"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data),
                      "path": repo_path, "lfs": {"oid": hashlib.sha256(data).hexdigest(),
                                                 "size": len(data), "pointerSize": 134}})
        blob = hub / E.PRETRAIN_REPO / "resolve" / COMMIT / repo_path
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
    tree = api / "tree" / COMMIT / E.PRETRAIN_DIR
    tree.parent.mkdir(parents=True)
    tree.write_text(json.dumps(items))


def test_listed_checkpoints_fetch_and_score(data_root, tmp_path, monkeypatch) -> None:
    spec = FX.reduced_spec(E.PRETRAIN_MODEL)
    monkeypatch.setattr(C, "_base_spec", lambda: spec)
    for step in STEPS:
        FX.write_pretraining_checkpoint(tmp_path / "upstream", step, reduced=True, seed=7)
    _mirror(tmp_path / "mirror", tmp_path / "upstream")
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"pretraining": [{
        "path": "weights/mel256-ec-base-pretraining", "sha256": None,
        "listing": {"repo": E.PRETRAIN_REPO, "folder": E.PRETRAIN_DIR, "pattern": "*.ckpt",
                    "revision": "main", "commit": None, "expected_count": len(STEPS),
                    "rename": "step-{step:06d}.ckpt", "files": None}}]}))
    data = tmp_path / "data"
    (data / "stimuli").mkdir(parents=True)
    for name in ("wav", "category_labels.csv"):
        (data / "stimuli" / name).symlink_to(data_root / "stimuli" / name)
    (data / "simulated").symlink_to(data_root / "simulated")
    fetch(["pretraining"], data, tmp_path / "mirror", registry, retries=0)
    folder = data / "weights" / "mel256-ec-base-pretraining"
    assert sorted(p.name for p in folder.iterdir()) == [f"step-{s:06d}.ckpt" for s in STEPS]

    run = C.discover(folder, data, registry)
    assert run.kind == C.PUBLISHED and run.steps == list(STEPS)
    assert run.provenance["commit"] == COMMIT
    assert all(c.sha256 and c.origin.startswith(E.PRETRAIN_REPO) for c in run.checkpoints)

    params = FH.params_for(data, folder, layers_a=["0", "1", "2"], layers_b=["0", "2"])
    build = tmp_path / "build"
    summary = stages.run_dynamics(params, build, registry)
    assert summary["source"] == C.PUBLISHED and summary["miniature"] is False
    assert summary["simulated_voxels"] is True
    table = pd.read_parquet(stages.paths(build)["parquet"])
    assert len(table) == len(STEPS) * 3 * 4 and not table["miniature"].any()
    assert table["checkpoint"].unique().tolist() == [f"step-{s:06d}.ckpt" for s in STEPS]
    files = stages.run_figure(params, build)
    tex = files[-1].read_text()
    assert "Published checkpoints; \\textbf{simulated voxels}" in tex
    assert "Miniature" not in tex
    # a replaced file fails its pinned sha256 when it is scored (here: not cached yet)
    (folder / "step-001000.ckpt").write_bytes((folder / "step-000000.ckpt").read_bytes())
    with pytest.raises(InputError, match="checksum mismatch"):
        stages.run_dynamics({**params, "rsa": {"eps": 1e-9}}, build, registry)
    # compare: step 0 is in the run (information only: simulated voxels), step 99k is not
    rows = compare_rows(summary, atol=1e-4)
    got = {r["measure"]: r for r in rows}
    assert got["fig5a_step0_layer2"]["reproduced"] == summary["first"]["rho"]["NH2015"]["1"]
    assert got["fig5a_step0_layer2"]["checked"] is False
    assert got["fig5a_final_layer10"]["reproduced"] is None
    assert "step 99000" in got["fig5a_final_layer10"]["note"]


def test_compare_rows_of_the_paper_run() -> None:
    rho = {str(k): 0.2 + 0.03 * k for k in range(10)}
    summary = {"miniature": False, "simulated_voxels": False,
               "first": {"step": 0, "rho": {"NH2015": {k: 0.21 for k in rho}}},
               "final": {"step": 99000, "rho": {"NH2015": rho}}}
    rows = {r["measure"]: r for r in compare_rows(summary, atol=1e-4)}
    assert len(rows) == len(FIG5A_PUBLISHED) == 9
    final10 = rows["fig5a_final_layer10"]
    assert final10["published"] == 0.475 and final10["reproduced"] == rho["9"]
    assert abs(final10["difference"] - (rho["9"] - 0.475)) < 1e-12
    assert final10["tolerance"] == 0.025 and final10["checked"] is True
    assert rows["fig5a_final_layer2"]["published"] == 0.35
    assert rows["fig5a_step0_layer6"]["difference"] == 0.0
    assert final10["what"] == "Fig. 5a rho at step 99k, NH2015 (read off the figure)"
    assert final10["model"] == "ECMAE (B) layer 10"
