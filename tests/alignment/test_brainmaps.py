"""Brain maps: per-voxel R^2 and selected layer as NIfTI images (values at known voxels equal the
regression output), scatter maps for the lab format, the figures, the LaTeX include, and the
simulated NIfTI demo through `dvc repro` from a fresh copy of the project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from brainalign.alignment.brainmaps import run_brainmaps, selected_layer
from brainalign.alignment.stages import run_regression
from brainalign.data.components import load_components
from brainalign.data.fmri import load_voxel_dataset
from brainalign.data.folds import load_folds
from brainalign.data.nifti import load_nifti_dataset, read_description
from brainalign.data.simulate import DatasetSim, SimulateParams, simulate_release
from brainalign.data.stimuli import canonical_names, read_category_labels
from brainalign.errors import InputError
from brainalign.models.activations import Activations, load_activations, save_activations
from brainalign.report.brainmaps import brainmaps_tex, figure_model

REPO = Path(__file__).resolve().parents[2]
SMALL = SimulateParams(
    nh2015=DatasetSim(n_subjects=3, voxels_per_subject=20, frac_incomplete=0.1),
    b2021=DatasetSim(n_subjects=3, voxels_per_subject=12, nan_subjects=1, frac_nan_voxels=0.2),
)
PARAMS = {"alphas": [0.1, 1.0, 10.0], "extend_edges": False}


def test_selected_layer_is_the_most_frequent_and_ties_go_to_the_earlier():
    vox = pd.DataFrame({
        "layer_f0": ["b", "c", "a", None], "layer_f1": ["b", "a", "c", None],
        "layer_f2": ["a", "c", "b", None], "layer_f3": ["b", "a", "c", None],
    })
    index, share = selected_layer(vox, ["a", "b", "c"])
    assert index.tolist() == [1, 0, 2, -1]  # row 2: a 2, c 2 -> a (earlier); row 3: c 2 > a 1
    np.testing.assert_allclose(share[:3], [0.75, 0.5, 0.5])
    assert np.isnan(share[3])
    with pytest.raises(InputError, match="layer 'z' is not among the model's layers"):
        selected_layer(vox.assign(layer_f0="z"), ["a", "b", "c"])


@pytest.fixture(scope="module")
def regressed(github_inputs, tmp_path_factory) -> dict:
    """The small simulated release, regressed in both formats with a toy model."""
    root = tmp_path_factory.mktemp("maps")
    comp = load_components(github_inputs["components"])
    labels = read_category_labels(github_inputs["labels_csv"])
    simulate_release(comp, [labels[n] for n in canonical_names()], root / "sim", SMALL, "test")
    rng = np.random.default_rng(1)
    base = rng.standard_normal((165, 6))
    layers = {"conv1": base @ rng.standard_normal((6, 10)) + rng.standard_normal((165, 10)),
              "conv2": base @ rng.standard_normal((6, 6)), "fc": rng.standard_normal((165, 4))}
    acts = root / "toy.npz"
    save_activations(acts, Activations("toy", layers, canonical_names(), {}))
    folds = load_folds(github_inputs["folds"])
    desc = read_description(root / "sim" / "nifti" / "dataset.yaml")
    datasets = {
        "nifti": {n: load_nifti_dataset(desc, n, github_inputs["labels_csv"])
                  for n in ("NH2015", "B2021")},
        "lab": {n: load_voxel_dataset(root / "sim" / "neural" / n, n) for n in ("NH2015", "B2021")},
    }
    maps = {}
    for kind, sets in datasets.items():
        for name, ds in sets.items():
            run_regression(acts, ds, folds, PARAMS, root / kind / "regression" / name,
                           progress=False)
        maps[kind] = run_brainmaps("toy", root / kind / "regression", sets, root / kind / "maps")
    return {"root": root, "datasets": datasets, "maps": maps}


def test_nifti_maps_hold_the_regression_values_at_their_voxels(regressed):
    root, sets = regressed["root"], regressed["datasets"]["nifti"]
    out, metrics = root / "nifti" / "maps", regressed["maps"]["nifti"]
    for name, ds in sets.items():
        vox = pd.read_parquet(root / "nifti" / "regression" / name / "voxels.parquet")
        table = pd.read_parquet(out / name / "voxels.parquet")
        assert metrics[name]["format"] == "nifti" and metrics[name]["simulated"]
        assert metrics[name]["stimuli"] == list(canonical_names())
        for sid in ds.subjects:
            files = metrics[name]["subjects"][str(sid)]["files"]
            mask = np.asarray(ds.masks[int(sid)].dataobj).astype(bool)
            ijk = np.argwhere(mask)  # the mask's C order = the dataset's voxel order
            rows = np.flatnonzero(ds.subject == sid)
            r2 = np.asarray(nib.load(out / name / files["r2"]).dataobj)
            layer = np.asarray(nib.load(out / name / files["layer"]).dataobj)
            depth = np.asarray(nib.load(out / name / files["depth"]).dataobj)
            saved_mask = np.asarray(nib.load(out / name / files["mask"]).dataobj).astype(bool)
            np.testing.assert_array_equal(saved_mask, mask)
            np.testing.assert_array_equal(nib.load(out / name / files["r2"]).affine,
                                          ds.masks[int(sid)].affine)
            at = tuple(ijk.T)
            expected = np.where(vox["regressed"].to_numpy()[rows],
                                vox["r2"].to_numpy()[rows], np.nan)
            np.testing.assert_array_equal(r2[at], expected)  # exact: float64 maps
            assert (r2[~mask] == 0).all() and (layer[~mask] == 0).all()
            np.testing.assert_array_equal(layer[at], table["layer_index"].to_numpy()[rows] + 1)
            np.testing.assert_array_equal(depth[at], table["depth"].to_numpy()[rows])
            # the selected layer of a voxel is one of its outer folds' layers
            v = rows[np.flatnonzero(vox["regressed"].to_numpy()[rows])[0]]
            chosen = {vox.loc[v, c] for c in vox.columns if c.startswith("layer_f")}
            assert table.loc[v, "layer"] in chosen
        skipped = ~vox["regressed"].to_numpy()
        assert (table["layer_index"].to_numpy()[skipped] == -1).all()
        assert np.isnan(table["r2"].to_numpy()[skipped]).all()
    b = sets["B2021"]
    assert (~b.complete_voxels()).any()  # B2021 keeps voxels with a missing repetition: NaN maps
    assert metrics["B2021"]["n_regressed"] == int(b.complete_voxels().sum())


def test_lab_maps_are_tables_on_surface_coordinates_equal_to_the_nifti_ones(regressed):
    root = regressed["root"]
    lab, nif = regressed["maps"]["lab"], regressed["maps"]["nifti"]["NH2015"]
    assert lab["NH2015"]["format"] == "lab" and lab["NH2015"]["coordinates"] == ["x_ras", "y_ras"]
    assert "files" not in lab["NH2015"]["subjects"]["1"]
    assert lab["NH2015"]["median_r2"] == nif["median_r2"]
    assert lab["NH2015"]["layer_counts"] == nif["layer_counts"]
    table = pd.read_parquet(root / "lab" / "maps" / "NH2015" / "voxels.parquet")
    assert {"x_ras", "y_ras", "hemi", "r2", "layer", "depth"} <= set(table.columns)
    ds = regressed["datasets"]["lab"]["NH2015"]
    np.testing.assert_array_equal(table[["x_ras", "y_ras"]].to_numpy(), ds.coords)


def test_maps_refuse_a_regression_of_other_voxels(regressed, tmp_path):
    root, sets = regressed["root"], regressed["datasets"]
    with pytest.raises(InputError, match=r"NH2015/voxels.parquet: 60 voxels that do not match the "
                       r"36 voxels"):
        run_brainmaps("toy", root / "lab" / "regression", {"NH2015": sets["lab"]["B2021"]},
                      tmp_path)
    with pytest.raises(InputError, match="regression output not found"):
        run_brainmaps("toy", tmp_path / "none", sets["lab"], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written before every input is valid


def test_figures_and_latex_include(regressed, tmp_path):
    root = regressed["root"]
    for kind in ("nifti", "lab"):
        paths = figure_model("toy", "Toy model", root / kind / "maps", ["NH2015", "B2021"],
                             tmp_path / kind / "toy", simulated=True)
        assert [p.suffix for p in paths] == [".pdf", ".png"]
        assert all(p.stat().st_size > 5000 for p in paths)
    first = (tmp_path / "nifti" / "toy.pdf").read_bytes()
    figure_model("toy", "Toy model", root / "nifti" / "maps", ["NH2015", "B2021"],
                 tmp_path / "again", simulated=True)
    assert (tmp_path / "again.pdf").read_bytes() == first  # byte-stable figures
    shutil.copytree(root / "nifti" / "maps", tmp_path / "tree" / "my_model")
    tex = brainmaps_tex([("my_model", "My & model")], tmp_path / "tree")
    assert r"\includegraphics[width=\linewidth]{{brainmaps/my_model}.pdf}" in tex
    assert r"My \& model (\texttt{my\_model})" in tex and tex.count(r"\begin{figure}") == 1
    assert tex.index("NH2015: slices") < tex.index("B2021: slices")
    with pytest.raises(InputError, match="no brain maps"):
        brainmaps_tex([("other", "Other")], tmp_path / "tree")


# --------------------------------------------------- the NIfTI demo through `dvc repro`

MODEL = "soundnet-random"


def _run(cmd: list[str], cwd: Path, env: dict) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def nifti_project(tmp_path_factory, mirror_root) -> tuple[Path, dict]:
    """A fresh copy of the project with the reduced parameters of the end-to-end test, switched
    to configs/nifti-demo.yaml, one model, then `dvc repro` of the brain maps and alignment."""
    root = tmp_path_factory.mktemp("nifti-project")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if rel.startswith(("build/", "tests/")) or rel in ("dvc.lock", "data.dvc"):
            continue
        if (REPO / rel).is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, root / rel)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"] = {MODEL: params["models"][MODEL]}
    params["simulate"]["nh2015"]["voxels_per_subject"] = 12
    params["simulate"]["b2021"]["voxels_per_subject"] = 6
    params["simulate"]["b2021"]["frac_nan_voxels"] = 0.2
    params["rsa"]["rois"] = ["all", "Primary"]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
           "BRAINALIGN_MIRROR": str(mirror_root), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    _run(["git", "init", "-q"], root, env)
    _run(["brainalign", "profile", "configs/nifti-demo.yaml"], root, env)
    _run(["brainalign", "fetch"], root, env)
    _run(["dvc", "repro", f"brainmaps@{MODEL}", "brainmaps-report", f"rsa@{MODEL}", "topline"],
         root, env)
    return root, env


def test_nifti_demo_runs_from_a_fresh_copy_with_the_lab_formats_numbers(nifti_project,
                                                                       github_inputs):
    root, env = nifti_project
    assert yaml.safe_load((root / "params.yaml").read_text())["data"]["fmri"] == "simulated/nifti"
    check = _run(["brainalign", "check"], root, env)
    assert "NH2015: 96 voxels, 8 subjects, 0 with NaN (SIMULATED, NIfTI)" in check
    reg = json.loads((root / "build/metrics/regression" / f"{MODEL}.json").read_text())
    assert reg["simulated_voxels"] is True
    # the same activations on the lab-format copy of the same values: the same numbers
    acts = root / "build/activations" / f"{MODEL}.npz"
    folds = load_folds(github_inputs["folds"])
    params = yaml.safe_load((root / "params.yaml").read_text())["regression"]
    for name in ("NH2015", "B2021"):
        lab = load_voxel_dataset(root / "data/simulated/neural" / name, name)
        m = run_regression(acts, lab, folds, params, root / "lab-check" / name, progress=False)
        assert m == json.loads((root / "build/regression" / MODEL / name / "metrics.json"
                                ).read_text())
        maps = json.loads((root / "build/brainmaps" / MODEL / name / "metrics.json").read_text())
        assert maps["format"] == "nifti" and len(maps["subjects"]) == len(lab.subjects)
    assert load_activations(acts).stimuli == canonical_names()
    for suffix in ("pdf", "png"):
        assert (root / "build/report/brainmaps" / f"{MODEL}.{suffix}").stat().st_size > 5000
    assert f"brainmaps/{MODEL}" in (root / "build/report/brainmaps.tex").read_text()
    status = _run(["dvc", "status", f"brainmaps@{MODEL}", "brainmaps-report"], root, env)
    assert "up to date" in status
