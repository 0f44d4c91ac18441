"""NIfTI datasets: the description, loading with nilearn, own stimuli and folds, every bad input,
and the simulated NIfTI copy giving the same regression and RSA numbers as the lab format."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from brainalign.alignment.stages import run_regression, run_rsa, run_topline
from brainalign.data.components import load_components
from brainalign.data.fmri import load_voxel_dataset
from brainalign.data.folds import load_folds
from brainalign.data.layout import DataLayout, DataParams
from brainalign.data.nifti import (
    fold_assignment,
    load_nifti_dataset,
    load_stimulus_set,
    read_description,
    stimulus_order,
    stratified_folds,
)
from brainalign.data.simulate import DatasetSim, SimulateParams, simulate_release
from brainalign.data.stimuli import canonical_names, read_category_labels
from brainalign.errors import InputError
from brainalign.models.activations import Activations, save_activations
from brainalign.params import section

N = 12
SHAPE = (4, 3, 2)
AFFINE = np.array([[2.0, 0, 0, -10], [0, 2.0, 0, -20], [0, 0, 2.0, 0], [0, 0, 0, 1]])
ORDER = [f"s{i:02d}" for i in (3, 0, 7, 1, 9, 2, 11, 4, 6, 5, 10, 8)]  # the table's order
CATS = {n: "ABC"[int(n[1:]) % 3] for n in ORDER}
LABELS = {1: "Primary", 2: "Posterior"}


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path.name


def make_dataset(root: Path, form: str = "4d", n_reps: int = 3) -> dict:
    """A 12-sound, 2-subject NIfTI dataset with its own stimuli and folds; returns the truth."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    (root / "wav").mkdir(exist_ok=True)
    for name in ORDER:
        sf.write(root / "wav" / f"{name}.wav", rng.uniform(-0.1, 0.1, 1600).astype(np.float32),
                 16000)
    pd.DataFrame({"sound": ORDER, "category": [CATS[n] for n in ORDER]}).to_csv(
        root / "sounds.csv", index=False)
    # atlas on a 1-mm grid in another orientation (x flipped): label 1 where x < -6, else 2
    atlas_affine = np.array([[-1.0, 0, 0, 0], [0, 1.0, 0, -20], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    x = -np.arange(12)[:, None, None] * np.ones((1, 8, 6))
    _save(root / "atlas.nii.gz", np.where(x < -6, 1, 2).astype(np.int16), atlas_affine)
    subjects, truth = {}, {}
    for sid, n_vox in ((1, 10), (2, 8)):
        mask = np.zeros(SHAPE, dtype=bool)
        mask.flat[np.sort(rng.choice(mask.size, n_vox, replace=False))] = True
        data = rng.standard_normal((*SHAPE, N, n_reps))
        data[~mask] = 0.0
        folder = root / f"sub-{sid:02d}"
        _save(folder / "mask.nii.gz", mask.astype(np.uint8))
        entry: dict = {"mask": f"sub-{sid:02d}/mask.nii.gz"}
        if form == "4d":
            entry["repetitions"] = [
                f"sub-{sid:02d}/" + _save(folder / f"rep-{r + 1}.nii.gz", data[..., r])
                for r in range(n_reps)]
        elif form == "3d":
            entry["repetitions"] = [
                [f"sub-{sid:02d}/r{r + 1}/"
                 + _save(folder / f"r{r + 1}" / f"{s}.nii.gz", data[..., i, r])
                 for i, s in enumerate(ORDER)] for r in range(n_reps)]
        else:  # a tidy table over one 4-D file holding every volume, in a shuffled order
            cells = [(s, r) for r in range(n_reps) for s in ORDER]
            perm = np.random.default_rng(sid).permutation(len(cells))
            stack = np.stack([data[..., ORDER.index(cells[p][0]), cells[p][1]] for p in perm], -1)
            _save(folder / "all.nii.gz", stack)
            pd.DataFrame({"sound": [cells[p][0] for p in perm],
                          "repetition": [cells[p][1] + 1 for p in perm],
                          "file": "all.nii.gz", "volume": np.arange(len(perm))}).to_csv(
                folder / "volumes.csv", index=False)
            entry["volumes"] = f"sub-{sid:02d}/volumes.csv"
        subjects[sid] = entry
        ijk = np.argwhere(mask)
        truth[sid] = {"mask": mask, "ijk": ijk,
                      "responses": data[mask].transpose(1, 0, 2),  # sounds x voxels x reps
                      "world": ijk @ AFFINE[:3, :3].T + AFFINE[:3, 3]}
    description = {
        "stimuli": {"folder": "wav", "table": "sounds.csv"},
        "folds": {"k": 3, "seed": 1},
        "datasets": {"NH2015": {"atlas": {"image": "atlas.nii.gz", "labels": LABELS},
                                "subjects": subjects}},
    }
    (root / "dataset.yaml").write_text(yaml.safe_dump(description, sort_keys=False))
    return truth


def _load(root: Path):
    return load_nifti_dataset(read_description(root / "dataset.yaml"), "NH2015", "unused.csv")


def _edit(root: Path, change) -> None:
    desc = yaml.safe_load((root / "dataset.yaml").read_text())
    change(desc)
    (root / "dataset.yaml").write_text(yaml.safe_dump(desc, sort_keys=False))


@pytest.fixture
def tiny(tmp_path) -> tuple[Path, dict]:
    root = tmp_path / "study"
    return root, make_dataset(root)


def test_own_dataset_loads_in_its_order_with_atlas_rois_and_coordinates(tiny):
    root, truth = tiny
    ds = _load(root)
    assert ds.stimuli == tuple(ORDER) and ds.categories == tuple(CATS[n] for n in ORDER)
    assert ds.responses.shape == (N, 18, 3) and ds.format == "nifti" and not ds.simulated
    assert ds.subject.tolist() == [1] * 10 + [2] * 8
    expected = np.concatenate([truth[s]["responses"] for s in (1, 2)], axis=1)
    np.testing.assert_array_equal(ds.responses, expected)
    world = np.concatenate([truth[s]["world"] for s in (1, 2)])
    np.testing.assert_allclose(ds.coords, world)
    # the atlas (1 mm, x flipped) resampled onto the 2-mm grid: Primary where x < -6
    assert ds.roi.tolist() == ["Primary" if x < -6 else "Posterior" for x in world[:, 0]]
    assert set(ds.masks) == {1, 2}
    np.testing.assert_array_equal(np.asarray(ds.masks[2].dataobj).astype(bool), truth[2]["mask"])


def test_3d_lists_and_a_tidy_table_load_the_same_values(tmp_path):
    a = _load_root(tmp_path / "a", "4d")
    for form in ("3d", "table"):
        b = _load_root(tmp_path / form, form)
        np.testing.assert_array_equal(a.responses, b.responses)
        assert a.roi.tolist() == b.roi.tolist() and a.stimuli == b.stimuli


def _load_root(root: Path, form: str):
    make_dataset(root, form)
    return _load(root)


def test_automatic_mask_is_the_background_mask(tiny):
    root, truth = tiny
    _edit(root, lambda d: [s.pop("mask") for s in d["datasets"]["NH2015"]["subjects"].values()])
    ds = _load(root)
    assert ds.n_voxels == 18
    np.testing.assert_array_equal(np.asarray(ds.masks[1].dataobj).astype(bool), truth[1]["mask"])


def test_missing_repetitions_stay_nan_and_skip_the_voxel(tiny):
    root, _ = tiny
    img = nib.load(root / "sub-01" / "rep-3.nii.gz")
    data = np.asarray(img.dataobj, dtype=np.float64)
    mask = np.asarray(nib.load(root / "sub-01" / "mask.nii.gz").dataobj).astype(bool)
    first = tuple(np.argwhere(mask)[0])
    data[first] = np.nan
    nib.save(nib.Nifti1Image(data, AFFINE), str(root / "sub-01" / "rep-3.nii.gz"))
    ds = _load(root)
    assert np.isnan(ds.responses[:, 0, 2]).all() and not np.isnan(ds.responses[:, 0, :2]).any()
    assert ds.complete_voxels().tolist() == [False] + [True] * 17


def test_own_folds_stratified_seeded_and_from_a_file(tiny):
    root, _ = tiny
    ds = _load(root)
    assert ds.folds.tolist() == stratified_folds([CATS[n] for n in ORDER], 3, 1).tolist()
    assert np.bincount(ds.folds).tolist() == [4, 4, 4]
    for cat in "ABC":  # each category spread over the folds
        in_cat = [f for f, n in zip(ds.folds, ORDER, strict=True) if CATS[n] == cat]
        assert sorted(np.bincount(in_cat, minlength=3).tolist()) == [1, 1, 2]
    assert stratified_folds(list("AABBCC") * 2, 3, 1).tolist() == stratified_folds(
        list("AABBCC") * 2, 3, 1).tolist()
    assert stratified_folds(list("AABBCC") * 2, 3, 1).tolist() != stratified_folds(
        list("AABBCC") * 2, 3, 2).tolist()
    folds = {n: i % 3 for i, n in enumerate(sorted(ORDER))}
    pd.DataFrame({"sound": list(folds), "fold": list(folds.values())}).to_csv(
        root / "folds.csv", index=False)
    _edit(root, lambda d: d.__setitem__("folds", {"file": "folds.csv"}))
    assert _load(root).folds.tolist() == [folds[n] for n in ORDER]


def test_canonical_sounds_keep_their_order_and_the_authors_folds(tiny, github_inputs):
    root, _ = tiny
    _edit(root, lambda d: [d.pop("stimuli"), d.pop("folds")])
    desc = read_description(root / "dataset.yaml")
    names, cats = stimulus_order(desc, github_inputs["labels_csv"])
    labels = read_category_labels(github_inputs["labels_csv"])
    assert names == canonical_names() and cats == tuple(labels[n] for n in names)
    assert fold_assignment(desc, names, cats) is None  # None: the authors' fold file
    with pytest.raises(InputError, match=r"sub-01/rep-1.nii.gz: expected 165 volumes"):
        load_nifti_dataset(desc, "NH2015", github_inputs["labels_csv"])
    (root / "dataset.yaml").write_text("datasets: {}\n")
    with pytest.raises(InputError, match=r"dataset.yaml: datasets: expected a mapping"):
        read_description(root / "dataset.yaml")


def test_own_stimulus_set_for_extract(tiny):
    root, _ = tiny
    stim = load_stimulus_set(read_description(root / "dataset.yaml"), "unused", "unused.csv")
    assert stim.names == tuple(ORDER) and stim.sample_rate == 16000 and len(stim.sha256) == N
    sf.write(root / "wav" / "s05.wav", np.zeros(800, np.float32), 8000)
    with pytest.raises(InputError, match=r"wav: expected every sound at one sample rate"):
        load_stimulus_set(read_description(root / "dataset.yaml"), "unused", "unused.csv")


def _volumes_4d(root: Path, n: int) -> None:
    img = nib.load(root / "sub-02" / "rep-2.nii.gz")
    data = np.asarray(img.dataobj)[..., :n]
    nib.save(nib.Nifti1Image(data, AFFINE), str(root / "sub-02" / "rep-2.nii.gz"))


def _regrid(root: Path, shape=None, affine=None) -> None:
    img = nib.load(root / "sub-01" / "rep-1.nii.gz")
    data = np.asarray(img.dataobj)
    if shape is not None:
        data = np.zeros((*shape, N))
    nib.save(nib.Nifti1Image(data, AFFINE if affine is None else affine),
             str(root / "sub-01" / "rep-1.nii.gz"))


def _empty_mask(root: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), AFFINE), str(root / "sub-02/mask.nii.gz"))


def _nan_voxel(root: Path) -> None:
    mask = np.asarray(nib.load(root / "sub-02" / "mask.nii.gz").dataobj).astype(bool)
    i, j, k = np.argwhere(mask)[3]
    for r in (1, 2, 3):
        path = root / "sub-02" / f"rep-{r}.nii.gz"
        data = np.asarray(nib.load(path).dataobj, dtype=np.float64)
        data[i, j, k] = np.nan
        nib.save(nib.Nifti1Image(data, AFFINE), str(path))


def _drop_table_row(root: Path) -> None:
    make_dataset(root, "table")
    table = pd.read_csv(root / "sub-01" / "volumes.csv")
    table[~((table["sound"] == "s07") & (table["repetition"] == 2))].to_csv(
        root / "sub-01" / "volumes.csv", index=False)


def _table_unknown_sound(root: Path) -> None:
    make_dataset(root, "table")
    table = pd.read_csv(root / "sub-01" / "volumes.csv")
    table.loc[0, "sound"] = "s99"
    table.to_csv(root / "sub-01" / "volumes.csv", index=False)


def _table_bad_volume(root: Path) -> None:
    make_dataset(root, "table")
    table = pd.read_csv(root / "sub-01" / "volumes.csv")
    table.loc[0, "volume"] = 500
    table.to_csv(root / "sub-01" / "volumes.csv", index=False)


def _set(path: list, value) -> object:
    def change(d):
        node = d
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


def _short_3d_list(root: Path) -> None:
    make_dataset(root, "3d")
    _edit(root, lambda d: d["datasets"]["NH2015"]["subjects"][1]["repetitions"][0].pop())


def _float_atlas(root: Path) -> None:
    img = nib.load(root / "atlas.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj) + 0.5, img.affine), str(root / "atlas.nii.gz"))


def _table_wav_mismatch(root: Path) -> None:
    (root / "wav" / "s04.wav").unlink()


def _reps_differ(root: Path) -> None:
    _edit(root, lambda d: d["datasets"]["NH2015"]["subjects"][2]["repetitions"].pop())


SUBJ = ["datasets", "NH2015", "subjects"]
BAD = {
    "grid": (lambda r: _regrid(r, shape=(5, 3, 2)), r"sub-01/rep-1.nii.gz: grid \(5, 3, 2\) "
             r"differs from .*mask.nii.gz's \(4, 3, 2\)"),
    "affine": (lambda r: _regrid(r, affine=np.diag([3.0, 2, 2, 1])),
               r"sub-01/rep-1.nii.gz: affine \[3 0 0 0; .* differs from .*mask.nii.gz's"),
    "volume count": (lambda r: _volumes_4d(r, N - 1), r"sub-02/rep-2.nii.gz: expected 12 volumes "
                     r"\(one per sound, in the stimulus order\), found 11"),
    "3-D list": (_short_3d_list, r"subjects.1.repetitions\[0\]: expected 12 3-D images"),
    "empty mask": (_empty_mask, r"sub-02/mask.nii.gz: mask selects no voxel"),
    "NaN voxel": (_nan_voxel, r"sub-02/rep-1.nii.gz: 1 voxels of .*sub-02/mask.nii.gz hold only "
                  r"NaN in every volume \(first at voxel \("),
    "no volume": (_drop_table_row, r"sub-01/volumes.csv: sound 's07' has no volume for "
                  r"repetition 2; expected each of the 12 sounds"),
    "table sound": (_table_unknown_sound, r"volumes.csv: line 2: 's99' is not one of the "
                    r"dataset's sounds"),
    "table volume": (_table_bad_volume, r"volumes.csv: volume 500 of .*all.nii.gz does not "
                     r"exist \(36 volumes"),
    "outside": (lambda r: _edit(r, _set([*SUBJ, 1, "mask"], "../x.nii.gz")),
                r"subjects.1.mask: '../x.nii.gz' is outside"),
    "missing file": (lambda r: _edit(r, _set([*SUBJ, 2, "mask"], "nope.nii.gz")),
                     r"subjects.2.mask: file not found: .*nope.nii.gz"),
    "unknown key": (lambda r: _edit(r, _set(["datasets", "NH2015", "runs"], [])),
                    r"datasets.NH2015.runs: unknown key"),
    "dataset name": (lambda r: _edit(r, lambda d: d["datasets"].__setitem__(
        "Mine", d["datasets"].pop("NH2015"))), r"datasets.Mine: unknown dataset; expected one "
        r"of \['NH2015', 'B2021'\]"),
    "ROI label": (lambda r: _edit(r, _set(["datasets", "NH2015", "atlas", "labels", 2], "HG")),
                  r"atlas.labels.2: expected one of \['Primary'"),
    "float atlas": (_float_atlas, r"atlas.nii.gz: expected integer label values"),
    "stimulus table": (_table_wav_mismatch, r"sounds.csv: expected one row per .wav file of "
                       r".*missing \[\] \(0\), no such file \['s04'\]"),
    "repetitions differ": (_reps_differ, r"datasets.NH2015: subjects have different numbers of "
                           r"repetitions \{1: 3, 2: 2\}"),
    "few folds": (lambda r: _edit(r, _set(["folds", "k"], 2)), r"folds.k: expected an integer "
                  r">= 3"),
    "not an image": (lambda r: (r / "sub-01" / "rep-1.nii.gz").write_bytes(b"garbage"),
                     r"sub-01/rep-1.nii.gz: not a readable NIfTI image"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_inputs_give_one_clear_error(tmp_path, case):
    root = tmp_path / "study"
    make_dataset(root)
    damage, message = BAD[case]
    damage(root)
    with pytest.raises(InputError, match=message):
        _load(root)


def test_bad_fold_files(tiny):
    root, _ = tiny
    for rows, message in (
        ({"sound": ORDER[:-1], "fold": [0, 1, 2] * 3 + [0, 1]}, r"no fold for 1 sounds"),
        ({"sound": ORDER, "fold": [0, 1] * 6}, r"expected fold ids 0..k-1 with k >= 3"),
        ({"sound": ORDER, "fold": [0, 1, 3] * 4}, r"expected fold ids 0..k-1"),
    ):
        pd.DataFrame(rows).to_csv(root / "folds.csv", index=False)
        _edit(root, lambda d: d.__setitem__("folds", {"file": "folds.csv"}))
        with pytest.raises(InputError, match=rf"folds.csv: {message}"):
            _load(root)


def test_data_fmri_values():
    assert section(DataParams, {"fmri": "mystudy/"}, "data").fmri == "mystudy/"
    assert section(DataParams, {"fmri": "x/dataset.yaml"}, "data").fmri == "x/dataset.yaml"
    for bad in ("/abs/study/", "../study/"):
        with pytest.raises(InputError, match="params.yaml: data.fmri: expected a NIfTI "
                           "description under the data root"):
            section(DataParams, {"fmri": bad}, "data")


def test_data_fmri_hint_for_a_description_folder(tmp_path):
    (tmp_path / "mystudy").mkdir()
    (tmp_path / "mystudy" / "dataset.yaml").write_text("datasets: {}\n")
    with pytest.raises(InputError, match=r"write 'mystudy/'"):
        section(DataParams, {"fmri": "mystudy", "root": str(tmp_path)}, "data")


def test_layout_of_a_nifti_configuration(tmp_path):
    make_dataset(tmp_path / "study")
    layout = DataLayout(tmp_path, "study/", stimuli="study/wav")
    assert layout.is_nifti and layout.dataset_names() == ("NH2015",)
    assert not layout.canonical_stimuli and not layout.simulated and not layout.needs_simulation
    ds = layout.voxel_datasets()["NH2015"]
    assert layout.folds_of(ds).tolist() == ds.folds.tolist()
    assert layout.stimulus_set().names == tuple(ORDER)
    with pytest.raises(InputError, match=r"params.yaml: data.stimuli: expected 'study/wav'"):
        DataLayout(tmp_path, "study/").voxel_datasets()
    with pytest.raises(InputError, match="names a NIfTI description"):
        layout.neural("NH2015")


# ------------------------------------------------- the simulated NIfTI copy vs the lab format

SMALL = SimulateParams(
    nh2015=DatasetSim(n_subjects=4, voxels_per_subject=15, frac_incomplete=0.1),
    b2021=DatasetSim(n_subjects=4, voxels_per_subject=10, nan_subjects=1, frac_nan_voxels=0.2),
)


@pytest.fixture(scope="module")
def simulated(github_inputs, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sim")
    comp = load_components(github_inputs["components"])
    labels = read_category_labels(github_inputs["labels_csv"])
    simulate_release(comp, [labels[n] for n in canonical_names()], root, SMALL, "test")
    return root


def _activations(path: Path) -> Path:
    rng = np.random.default_rng(3)
    comp = rng.standard_normal((165, 6))
    layers = {"l1": (comp @ rng.standard_normal((6, 8)) + rng.standard_normal((165, 8))),
              "l2": rng.standard_normal((165, 5))}
    save_activations(path, Activations("toy", {k: v.astype(np.float32) for k, v in layers.items()},
                                       canonical_names(), {}))
    return path


def test_simulated_nifti_equals_the_lab_format_in_regression_and_rsa(simulated, github_inputs,
                                                                      tmp_path):
    desc = read_description(simulated / "nifti" / "dataset.yaml")
    assert desc.simulated and set(desc.datasets) == {"NH2015", "B2021"}
    acts = _activations(tmp_path / "toy.npz")
    folds = load_folds(github_inputs["folds"])
    params = {"alphas": [0.1, 1.0, 10.0], "extend_edges": False}
    for name in ("NH2015", "B2021"):
        lab = load_voxel_dataset(simulated / "neural" / name, name)
        nif = load_nifti_dataset(desc, name, github_inputs["labels_csv"])
        np.testing.assert_array_equal(lab.responses, nif.responses)
        assert lab.roi.tolist() == nif.roi.tolist() and nif.simulated and nif.folds is None
        outs = {}
        for kind, ds in (("lab", lab), ("nifti", nif)):
            out = tmp_path / kind / name
            outs[kind] = (
                run_regression(acts, ds, folds, params, out / "reg", progress=False),
                run_rsa(acts, ds, folds, {"rois": ["all", "Primary"]}, out / "rsa"),
                run_topline(ds, {"rois": ["all", "Primary"]}, out / "top"),
            )
        assert outs["lab"] == outs["nifti"]
        for sub, table in (("reg", "voxels.parquet"), ("rsa", "rsa_layerwise.parquet")):
            pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "lab" / name / sub / table),
                                          pd.read_parquet(tmp_path / "nifti" / name / sub / table))
        assert json.loads((tmp_path / "nifti" / name / "reg" / "metrics.json").read_text())[
            "mean_r2"] == outs["lab"][0]["mean_r2"]


def test_own_stimuli_and_folds_run_through_regression_and_rsa(tiny, tmp_path):
    root, _ = tiny
    ds = _load(root)
    rng = np.random.default_rng(5)
    signal = ds.target()[:, :4]
    layers = {"a": signal + 0.1 * rng.standard_normal(signal.shape),
              "b": rng.standard_normal((N, 3))}
    acts = tmp_path / "acts.npz"
    save_activations(acts, Activations("toy", layers, ds.stimuli, {}))
    reg = run_regression(acts, ds, ds.folds, {"alphas": [0.1, 1.0], "extend_edges": False},
                         tmp_path / "reg", progress=False)
    assert reg["n_voxels"] == 18 and reg["n_subjects"] == 2 and reg["mean_r2"] > 0
    rsa = run_rsa(acts, ds, ds.folds, {"rois": ["all", "Primary"]}, tmp_path / "rsa")
    assert set(rsa["rois"]) == {"all", "Primary"}
    save_activations(acts, Activations("toy", layers, tuple(sorted(ds.stimuli)), {}))
    with pytest.raises(InputError, match="sound order differs from the targets'"):
        run_regression(acts, ds, ds.folds, None, tmp_path / "reg2", progress=False)
