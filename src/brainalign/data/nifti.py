"""NIfTI fMRI datasets: a small YAML description -> the validated :class:`VoxelDataset` (nilearn).

``params.yaml`` ``data.fmri`` names the description under the data root: the folder holding
``dataset.yaml`` (written with a slash, e.g. ``mystudy/``) or the file itself. Every path in
it is relative to its folder and must stay inside it (DVC tracks that folder). Schema::

    simulated: false            # optional; true marks every derived number as simulated
    stimuli:                    # optional; omitted: the canonical 165 sounds (data.stimuli)
      folder: wav               # one .wav per sound; params data.stimuli must name this folder
      table: sounds.csv         # optional: columns sound,category; its rows give the order
    folds:                      # optional; omitted: the authors' folds for the 165 sounds,
      k: 5                      # else a seeded k-fold stratified by category (k 5, seed 0)
      seed: 0
      # file: folds.csv         # or a table with columns sound,fold (fold ids 0..k-1)
    datasets:                   # NH2015 and/or B2021: the columns the tables and figures use
      NH2015:
        mask: auto              # the subjects' default: a mask image, or auto
        atlas:                  # optional: ROIs from a label image (any grid: resampled)
          image: atlas.nii.gz
          labels: {1: Primary, 2: Anterior, 3: Lateral, 4: Posterior}
        subjects:
          1:                    # subject id (integer)
            mask: sub-01/mask.nii.gz
            repetitions:        # one entry per repetition, volumes in the stimulus order:
              - sub-01/rep-1.nii.gz               # a 4-D image (volume i = sound i)
              - [sub-01/r2/s001.nii, ...]         # or a list of 3-D images, one per sound
          2:
            volumes: sub-02/volumes.csv  # or a tidy table: sound,repetition,file[,volume]
                                         # (files relative to the table; volumes from 0)

Stimulus order: the canonical order for the 165 sounds; else the rows of ``stimuli.table``, or
the sorted file names. ``mask: auto`` is nilearn's ``NiftiMasker(mask_strategy="background")``
fitted on the subject's first repetition (voxels that differ from the image border value, as
zeros or NaN outside the brain). Voxels: the mask's voxels in C order (as nilearn's maskers),
subjects in ascending id; responses read with ``nilearn.masking.apply_mask`` (float64, NaN kept:
a missing repetition of a voxel stays NaN); the atlas is resampled onto each subject's mask with
``nilearn.image.resample_to_img`` (nearest) and read with ``apply_mask``; its label values not
listed, and 0, mean no ROI. Coordinates: the voxel centres in world mm (the images' affine).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainalign.data.fmri import PROVENANCE_FILE, ROI_LABELS, VoxelDataset
from brainalign.data.stimuli import (
    StimulusSet,
    canonical_names,
    canonical_sort,
    load_stimuli,
    read_category_labels,
    read_wav,
)
from brainalign.errors import InputError
from brainalign.readers import read_yaml_mapping

log = logging.getLogger(__name__)

DESCRIPTION_FILE = "dataset.yaml"
DATASET_NAMES = ("NH2015", "B2021")
"""The names a NIfTI dataset can take: the datasets the tables and figures report."""
AUTO_MASK = "auto"
DEFAULT_K = 5
DEFAULT_SEED = 0
NO_CATEGORY = "all"
_AFFINE_ATOL = 1e-4


# --------------------------------------------------------------------------- description


@dataclass(frozen=True)
class AtlasSpec:
    """A label image and the ROI name of each label value."""

    image: Path
    labels: Mapping[int, str]


@dataclass(frozen=True)
class SubjectSpec:
    """One subject: mask (None: automatic) and either repetitions or a tidy volume table."""

    id: int
    mask: Path | None
    repetitions: tuple[Path | tuple[Path, ...], ...] = ()
    volumes: Path | None = None
    atlas: AtlasSpec | None = None
    where: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """One NIfTI dataset of a description."""

    name: str
    subjects: tuple[SubjectSpec, ...]
    where: str


@dataclass(frozen=True)
class Description:
    """A parsed, validated NIfTI dataset description (paths resolved inside its folder)."""

    path: Path
    simulated: bool
    stimuli_folder: Path | None
    stimuli_table: Path | None
    fold_file: Path | None
    fold_k: int
    fold_seed: int
    folds_given: bool
    datasets: Mapping[str, DatasetSpec]

    @property
    def folder(self) -> Path:
        return self.path.parent


def description_path(target: str | Path) -> Path:
    """The description file of ``target``: the file itself, or ``<folder>/dataset.yaml``."""
    target = Path(target)
    return target if target.suffix in (".yaml", ".yml") else target / DESCRIPTION_FILE


def _keys(value: Any, where: str, allowed: Sequence[str], required: Sequence[str] = ()) -> dict:
    if not isinstance(value, Mapping):
        raise InputError(where, f"expected a mapping with keys {list(allowed)}, got {value!r}")
    unknown = sorted(str(k) for k in set(value) - set(allowed))
    if unknown:
        raise InputError(f"{where}.{unknown[0]}", f"unknown key; expected one of {list(allowed)}")
    missing = [k for k in required if k not in value]
    if missing:
        raise InputError(where, f"missing key {missing[0]!r}")
    return dict(value)


def _inside(folder: Path, rel: Any, where: str, kind: str = "file") -> Path:
    """``rel`` resolved inside ``folder``; it must exist and not leave the folder."""
    if not isinstance(rel, str) or not rel.strip():
        raise InputError(where, f"expected a {kind} path relative to {folder}, got {rel!r}")
    path = (folder / rel).resolve()
    if Path(rel).is_absolute() or not path.is_relative_to(folder.resolve()):
        raise InputError(where, f"{rel!r} is outside {folder}; expected a path inside the "
                         "description's folder (DVC tracks that folder)")
    exists = path.is_dir() if kind == "folder" else path.is_file()
    if not exists:
        raise InputError(where, f"{kind} not found: {folder / rel}")
    return folder / os.path.normpath(rel)


def _int(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(where, f"expected an integer >= {minimum}, got {value!r}")
    return value


def _atlas(folder: Path, value: Any, where: str) -> AtlasSpec:
    spec = _keys(value, where, ("image", "labels"), ("image", "labels"))
    image = _inside(folder, spec["image"], f"{where}.image")
    labels = spec["labels"]
    if not isinstance(labels, Mapping) or not labels:
        raise InputError(f"{where}.labels", f"expected a mapping label value -> ROI, got "
                         f"{labels!r}")
    out: dict[int, str] = {}
    for key, roi in labels.items():
        if isinstance(key, bool) or not isinstance(key, int) or key <= 0:
            raise InputError(f"{where}.labels", f"expected positive integer label values, "
                             f"got {key!r}")
        if roi not in ROI_LABELS:
            raise InputError(f"{where}.labels.{key}", f"expected one of {list(ROI_LABELS)}, "
                             f"got {roi!r}")
        out[key] = roi
    return AtlasSpec(image=image, labels=out)


def _subject(folder: Path, sid: Any, value: Any, where: str, default_mask: Any,
             atlas: AtlasSpec | None) -> SubjectSpec:
    if isinstance(sid, bool) or not isinstance(sid, int) or sid < 0:
        raise InputError(where, f"expected an integer subject id >= 0, got {sid!r}")
    where = f"{where}.{sid}"
    spec = _keys(value, where, ("mask", "repetitions", "volumes", "atlas"))
    if ("repetitions" in spec) == ("volumes" in spec):
        raise InputError(where, "expected either 'repetitions' (images) or 'volumes' (a table)")
    mask_value = spec.get("mask", default_mask)
    mask = (None if mask_value == AUTO_MASK
            else _inside(folder, mask_value, f"{where}.mask"))
    if "atlas" in spec:
        atlas = _atlas(folder, spec["atlas"], f"{where}.atlas")
    if "volumes" in spec:
        return SubjectSpec(sid, mask, volumes=_inside(folder, spec["volumes"], f"{where}.volumes"),
                           atlas=atlas, where=where)
    reps = spec["repetitions"]
    if not isinstance(reps, list) or not reps:
        raise InputError(f"{where}.repetitions", "expected a non-empty list, one entry per "
                         f"repetition (a 4-D image or a list of 3-D images), got {reps!r}")
    entries: list[Path | tuple[Path, ...]] = []
    for r, entry in enumerate(reps, start=1):
        w = f"{where}.repetitions[{r - 1}]"
        if isinstance(entry, list):
            if not entry:
                raise InputError(w, "expected one 3-D image per sound, got an empty list")
            entries.append(tuple(_inside(folder, e, f"{w}[{i}]") for i, e in enumerate(entry)))
        else:
            entries.append(_inside(folder, entry, w))
    return SubjectSpec(sid, mask, repetitions=tuple(entries), atlas=atlas, where=where)


def read_description(path: str | Path) -> Description:
    """Read and validate a NIfTI dataset description (one InputError naming file and key)."""
    path = Path(path)
    raw = read_yaml_mapping(path, "NIfTI dataset description not found (params.yaml data.fmri "
                            "names it: the folder holding dataset.yaml, or the file)")
    where = str(path)
    top = _keys(raw, where, ("simulated", "stimuli", "folds", "datasets"), ("datasets",))
    folder = path.parent
    simulated = top.get("simulated", False)
    if not isinstance(simulated, bool):
        raise InputError(f"{where}: simulated", f"expected true or false, got {simulated!r}")
    stim_folder = stim_table = None
    if "stimuli" in top:
        stim = _keys(top["stimuli"], f"{where}: stimuli", ("folder", "table"), ("folder",))
        stim_folder = _inside(folder, stim["folder"], f"{where}: stimuli.folder", "folder")
        if "table" in stim:
            stim_table = _inside(folder, stim["table"], f"{where}: stimuli.table")
    fold_file, k, seed = None, DEFAULT_K, DEFAULT_SEED
    if "folds" in top:
        folds = _keys(top["folds"], f"{where}: folds", ("file", "k", "seed"))
        if "file" in folds and ({"k", "seed"} & set(folds)):
            raise InputError(f"{where}: folds", "expected either 'file' or 'k'/'seed', not both")
        if "file" in folds:
            fold_file = _inside(folder, folds["file"], f"{where}: folds.file")
        k = _int(folds.get("k", DEFAULT_K), f"{where}: folds.k", 3)  # nested CV needs 3
        seed = _int(folds.get("seed", DEFAULT_SEED), f"{where}: folds.seed", 0)
    datasets_raw = top["datasets"]
    if not isinstance(datasets_raw, Mapping) or not datasets_raw:
        raise InputError(f"{where}: datasets", f"expected a mapping with some of "
                         f"{list(DATASET_NAMES)}, got {datasets_raw!r}")
    datasets: dict[str, DatasetSpec] = {}
    for name in datasets_raw:
        if name not in DATASET_NAMES:
            raise InputError(f"{where}: datasets.{name}", f"unknown dataset; expected one of "
                             f"{list(DATASET_NAMES)} (the datasets the tables and figures report)")
        w = f"{where}: datasets.{name}"
        spec = _keys(datasets_raw[name], w, ("mask", "atlas", "subjects"), ("subjects",))
        atlas = _atlas(folder, spec["atlas"], f"{w}.atlas") if "atlas" in spec else None
        subjects_raw = spec["subjects"]
        if not isinstance(subjects_raw, Mapping) or not subjects_raw:
            raise InputError(f"{w}.subjects", "expected a mapping subject id -> images")
        subjects = tuple(
            _subject(folder, sid, subjects_raw[sid], f"{w}.subjects", spec.get("mask", AUTO_MASK),
                     atlas)
            for sid in sorted(subjects_raw, key=lambda s: (not isinstance(s, int), str(s)))
        )
        datasets[name] = DatasetSpec(name, tuple(sorted(subjects, key=lambda s: s.id)), w)
    return Description(path=path, simulated=simulated, stimuli_folder=stim_folder,
                       stimuli_table=stim_table, fold_file=fold_file, fold_k=k, fold_seed=seed,
                       folds_given="folds" in top, datasets=datasets)


# ----------------------------------------------------------------------- stimuli and folds


def _read_table(path: Path, required: Sequence[str], optional: Sequence[str] = ()
                ) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV table with a header, as (line number, {column: value})."""
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in required if c not in header]
        extra = [c for c in header if c not in (*required, *optional)]
        if missing or extra:
            raise InputError(path, f"expected the columns {list(required)}"
                             f"{f' (optional {list(optional)})' if optional else ''}, got {header}")
        rows = [(i, {k.strip(): (v or "").strip() for k, v in row.items() if k is not None})
                for i, row in enumerate(reader, start=2)]
    if not rows:
        raise InputError(path, "table has no rows")
    return rows


def _stem(name: str) -> str:
    return name.removesuffix(".wav")


def is_canonical(desc: Description) -> bool:
    """True when the description's sounds are the canonical 165 (or it names no stimuli)."""
    if desc.stimuli_folder is None:
        return True
    return sorted(_stem(p.name) for p in desc.stimuli_folder.glob("*.wav")) == sorted(
        canonical_names())


def stimulus_order(desc: Description, labels_csv: str | Path
                   ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(sound names, category per sound) in the dataset's stimulus order.

    The canonical 165 keep their order and ``category_labels.csv``'s categories; own stimuli
    follow ``stimuli.table`` (or sorted file names, category 'all' when no table).
    """
    if is_canonical(desc):
        labels = read_category_labels(labels_csv)
        names = canonical_names()
        if desc.stimuli_table is not None:
            table = _stimulus_table(desc)
            names_t = tuple(table)
            if canonical_sort(list(names_t)) != list(names_t):
                raise InputError(desc.stimuli_table, "the canonical 165 sounds keep the canonical "
                                 "order (ascending stimulus id); list them in that order")
            return names, tuple(table[n] or labels[n] for n in names)
        return names, tuple(labels[n] for n in names)
    assert desc.stimuli_folder is not None
    files = sorted(_stem(p.name) for p in desc.stimuli_folder.glob("*.wav"))
    if not files:
        raise InputError(desc.stimuli_folder, "no .wav files; expected one per sound")
    if desc.stimuli_table is None:
        return tuple(files), tuple(NO_CATEGORY for _ in files)
    table = _stimulus_table(desc)
    missing = sorted(set(files) - set(table))
    unknown = sorted(set(table) - set(files))
    if missing or unknown:
        raise InputError(desc.stimuli_table, f"expected one row per .wav file of "
                         f"{desc.stimuli_folder}; missing {missing[:5]} ({len(missing)}), "
                         f"no such file {unknown[:5]} ({len(unknown)})")
    return tuple(table), tuple(table[n] or NO_CATEGORY for n in table)


def _stimulus_table(desc: Description) -> dict[str, str]:
    assert desc.stimuli_table is not None
    out: dict[str, str] = {}
    for line, row in _read_table(desc.stimuli_table, ("sound",), ("category",)):
        name = _stem(row["sound"])
        if not name:
            raise InputError(desc.stimuli_table, f"line {line}: empty sound name")
        if name in out:
            raise InputError(desc.stimuli_table, f"line {line}: sound {name!r} listed twice")
        out[name] = row.get("category", "")
    return out


def stratified_folds(categories: Sequence[str], k: int, seed: int) -> np.ndarray:
    """Seeded k-fold stratified by category: fold id (0..k-1) per sound, in the given order.

    Categories are taken in sorted order; each one's sounds are shuffled (numpy PCG64 seeded
    with ``seed``) and dealt to the folds in turn, continuing from the previous category, so fold
    sizes differ by at most one and each category is spread as evenly as possible.
    """
    cats = np.asarray(categories, dtype=object)
    if k > len(cats):
        raise InputError("folds.k", f"expected at most one fold per sound ({len(cats)}), got {k}")
    rng = np.random.default_rng(seed)
    folds = np.empty(len(cats), dtype=np.int64)
    pos = 0
    for cat in sorted(set(cats.tolist())):
        for i in rng.permutation(np.flatnonzero(cats == cat)):
            folds[i] = pos % k
            pos += 1
    return folds


def fold_assignment(desc: Description, names: Sequence[str], categories: Sequence[str]
                    ) -> np.ndarray | None:
    """The dataset's own fold id per sound, or None for the authors' folds of the 165 sounds."""
    if desc.fold_file is not None:
        return _read_folds(desc.fold_file, names)
    if is_canonical(desc) and not desc.folds_given:
        return None
    return stratified_folds(categories, desc.fold_k, desc.fold_seed)


def _read_folds(path: Path, names: Sequence[str]) -> np.ndarray:
    index = {n: i for i, n in enumerate(names)}
    folds = np.full(len(names), -1, dtype=np.int64)
    for line, row in _read_table(path, ("sound", "fold")):
        name = _stem(row["sound"])
        if name not in index:
            raise InputError(path, f"line {line}: {name!r} is not one of the dataset's sounds")
        try:
            fold = int(row["fold"])
        except ValueError:
            fold = -1
        if fold < 0:
            raise InputError(path, f"line {line}: expected a fold id >= 0, got {row['fold']!r}")
        if folds[index[name]] >= 0:
            raise InputError(path, f"line {line}: sound {name!r} listed twice")
        folds[index[name]] = fold
    missing = [n for n, f in zip(names, folds, strict=True) if f < 0]
    if missing:
        raise InputError(path, f"no fold for {len(missing)} sounds (first: {missing[0]!r}); "
                         "expected one row per sound")
    ids = np.unique(folds)
    if len(ids) < 3 or ids.tolist() != list(range(len(ids))):
        raise InputError(path, f"expected fold ids 0..k-1 with k >= 3 (nested CV), got "
                         f"{ids.tolist()}")
    return folds


def load_stimulus_set(desc: Description, wav_dir: str | Path, labels_csv: str | Path
                      ) -> StimulusSet:
    """The dataset's sounds at their own rate, in its stimulus order (for ``extract``)."""
    if is_canonical(desc):
        return load_stimuli(desc.stimuli_folder or wav_dir, labels_csv, sample_rate=None,
                            source_rate=None)
    assert desc.stimuli_folder is not None
    names, categories = stimulus_order(desc, labels_csv)
    audio, hashes, rates = [], [], set()
    for name in names:
        path = desc.stimuli_folder / f"{name}.wav"
        samples, rate = read_wav(path)
        audio.append(samples)
        rates.add(rate)
        hashes.append(hashlib.sha256(path.read_bytes()).hexdigest())
    if len(rates) != 1:
        raise InputError(desc.stimuli_folder, f"expected every sound at one sample rate, found "
                         f"{sorted(rates)}")
    return StimulusSet(names=names, categories=categories, audio=tuple(audio),
                       sample_rate=rates.pop(), source=str(desc.stimuli_folder),
                       sha256=tuple(hashes))


# ------------------------------------------------------------------------------- images


def nifti_gz_bytes(img: Any) -> bytes:
    """``img`` as .nii.gz bytes (units mm), gzip without a date: the same bytes on every run."""
    import gzip

    img.header.set_xyzt_units("mm")
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


def _load_img(path: Path) -> Any:
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises ImageFileError, OSError, EOFError, ...
        raise InputError(path, f"not a readable NIfTI image ({exc})") from None
    if len(img.shape) not in (3, 4):
        raise InputError(path, f"expected a 3-D or 4-D image, got shape {img.shape}")
    return img


def _fmt_affine(affine: np.ndarray) -> str:
    return "[" + "; ".join(" ".join(f"{v:g}" for v in row) for row in np.round(affine[:3], 4)) + "]"


def _check_grid(img: Any, path: Path, ref_shape: tuple[int, ...], ref_affine: np.ndarray,
                ref_name: str) -> None:
    if tuple(img.shape[:3]) != tuple(ref_shape):
        raise InputError(path, f"grid {tuple(img.shape[:3])} differs from {ref_name}'s "
                         f"{tuple(ref_shape)}; expected every image of the subject on one grid")
    if not np.allclose(img.affine, ref_affine, rtol=0, atol=_AFFINE_ATOL):
        raise InputError(path, f"affine {_fmt_affine(img.affine)} differs from {ref_name}'s "
                         f"{_fmt_affine(ref_affine)}; expected every image of the subject in one "
                         "space (resample it first)")


def _n_volumes(img: Any) -> int:
    return 1 if len(img.shape) == 3 else int(img.shape[3])


def _volume_sources(subject: SubjectSpec, names: Sequence[str]
                    ) -> list[list[tuple[Path, int | None]]]:
    """Per repetition, per sound: (file, volume index; None for a 3-D file)."""
    n = len(names)
    if subject.volumes is None:
        reps: list[list[tuple[Path, int | None]]] = []
        for r, entry in enumerate(subject.repetitions):
            if isinstance(entry, tuple):
                if len(entry) != n:
                    raise InputError(f"{subject.where}.repetitions[{r}]", f"expected {n} 3-D "
                                     f"images (one per sound), got {len(entry)}")
                reps.append([(p, None) for p in entry])
            else:
                reps.append([(entry, i) for i in range(n)])
        return reps
    table = subject.volumes
    index = {s: i for i, s in enumerate(names)}
    cells: dict[tuple[int, int], tuple[Path, int | None]] = {}
    folder = table.parent
    for line, row in _read_table(table, ("sound", "repetition", "file"), ("volume",)):
        name = _stem(row["sound"])
        if name not in index:
            raise InputError(table, f"line {line}: {name!r} is not one of the dataset's sounds")
        try:
            rep = int(row["repetition"])
            vol = int(row["volume"]) if row.get("volume") else None
        except ValueError:
            raise InputError(table, f"line {line}: expected integer repetition and volume, got "
                             f"{row['repetition']!r}, {row.get('volume')!r}") from None
        if rep < 1 or (vol is not None and vol < 0):
            raise InputError(table, f"line {line}: expected repetition >= 1 and volume >= 0")
        key = (index[name], rep)
        if key in cells:
            raise InputError(table, f"line {line}: sound {name!r} repetition {rep} listed twice")
        cells[key] = (_inside(folder, row["file"], f"{table}: line {line}"), vol)
    n_reps = max(r for _, r in cells)
    for i, name in enumerate(names):
        have = [r for r in range(1, n_reps + 1) if (i, r) in cells]
        if len(have) < n_reps:
            lacking = sorted(set(range(1, n_reps + 1)) - set(have))
            raise InputError(table, f"sound {name!r} has no volume for repetition {lacking[0]}; "
                             f"expected each of the {n} sounds in every repetition 1..{n_reps}")
    return [[cells[(i, r)] for i in range(n)] for r in range(1, n_reps + 1)]


def _masked(img: Any, mask_img: Any) -> np.ndarray:
    """(n_volumes, n_voxels) float64 of ``img`` in the mask, NaN kept (nilearn apply_mask)."""
    from nilearn.image import index_img
    from nilearn.masking import apply_mask

    if len(img.shape) == 4 and img.shape[3] == 1:
        img = index_img(img, 0)
    out = apply_mask(img, mask_img, dtype=np.float64, ensure_finite=False)
    return out.reshape(1, -1) if out.ndim == 1 else out


def _subject_mask(subject: SubjectSpec, first: Sequence[tuple[Path, Any]]) -> tuple[Any, str]:
    """(binary mask image, its name in messages): the given mask, or nilearn's automatic one
    (background strategy) fitted on ``first``, the images of the first repetition."""
    import nibabel as nib
    from nilearn.image import concat_imgs
    from nilearn.maskers import NiftiMasker

    if subject.mask is None:
        path = first[0][0]
        for other, img in first[1:]:
            _check_grid(img, other, first[0][1].shape[:3], first[0][1].affine, str(path))
        imgs = first[0][1] if len(first) == 1 else concat_imgs([img for _, img in first])
        mask_img = NiftiMasker(mask_strategy="background").fit(imgs).mask_img_
        name = f"the automatic mask of {path}"
    else:
        img = _load_img(subject.mask)
        if len(img.shape) == 4 and img.shape[3] != 1:
            raise InputError(subject.mask, f"expected a 3-D mask, got shape {img.shape}")
        data = np.asarray(img.dataobj).reshape(img.shape[:3])
        mask_img = nib.Nifti1Image((np.nan_to_num(data) != 0).astype(np.uint8), img.affine)
        name = str(subject.mask)
    if not np.asarray(mask_img.dataobj).any():
        hint = " (automatic: the image is uniform; give a mask)" if subject.mask is None else ""
        raise InputError(subject.mask or first[0][0],
                         f"mask selects no voxel; expected a brain mask with non-zero voxels{hint}")
    return mask_img, name


def _atlas_rois(atlas: AtlasSpec, mask_img: Any) -> np.ndarray:
    """ROI name per mask voxel from the atlas resampled onto the mask's grid (nearest)."""
    from nilearn.image import resample_to_img
    from nilearn.masking import apply_mask

    img = _load_img(atlas.image)
    if len(img.shape) == 4:
        if img.shape[3] != 1:
            raise InputError(atlas.image, f"expected a 3-D label image, got shape {img.shape}")
        from nilearn.image import index_img

        img = index_img(img, 0)
    resampled = resample_to_img(img, mask_img, interpolation="nearest", force_resample=True,
                                copy_header=True)
    values = apply_mask(resampled, mask_img, dtype=np.float64, ensure_finite=True)
    if not np.all(values == np.round(values)):
        raise InputError(atlas.image, "expected integer label values")
    out = np.array([atlas.labels.get(int(v), "") for v in values], dtype=object)
    return out


def _load_subject(subject: SubjectSpec, names: Sequence[str], dataset: str
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any, int]:
    """(responses S x V x R, roi V, world coords V x 3, mask image, n_reps) of one subject."""
    from nibabel.affines import apply_affine

    sources = _volume_sources(subject, names)
    imgs: dict[Path, Any] = {}
    for rep in sources:
        for path, _ in rep:
            if path not in imgs:
                imgs[path] = _load_img(path)
    first_path = sources[0][0][0]
    first_rep = list(dict.fromkeys(path for path, _ in sources[0]))
    mask_img, mask_name = _subject_mask(subject, [(q, imgs[q]) for q in first_rep])
    ref_shape, ref_affine = mask_img.shape[:3], mask_img.affine
    n = len(names)
    for r, rep in enumerate(sources, start=1):
        for i, (path, vol) in enumerate(rep):
            img = imgs[path]
            _check_grid(img, path, ref_shape, ref_affine, mask_name)
            if vol is None and _n_volumes(img) != 1:
                raise InputError(path, f"expected a 3-D image (sound {names[i]!r}, repetition "
                                 f"{r}), got {_n_volumes(img)} volumes")
            if vol is not None and subject.volumes is None and _n_volumes(img) != n:
                raise InputError(path, f"expected {n} volumes (one per sound, in the stimulus "
                                 f"order), found {_n_volumes(img)}")
            if vol is not None and vol >= _n_volumes(img):
                raise InputError(subject.volumes or path, f"volume {vol} of {path} does not exist "
                                 f"({_n_volumes(img)} volumes; volumes count from 0)")
    masked = {path: _masked(img, mask_img) for path, img in imgs.items()}
    n_vox = next(iter(masked.values())).shape[1]
    responses = np.empty((n, n_vox, len(sources)), dtype=np.float64)
    for r, rep in enumerate(sources):
        for i, (path, vol) in enumerate(rep):
            responses[i, :, r] = masked[path][0 if vol is None else vol]
    ijk = np.argwhere(np.asarray(mask_img.dataobj).astype(bool))
    if np.isinf(responses).any():
        v = int(np.flatnonzero(np.isinf(responses).any(axis=(0, 2)))[0])
        raise InputError(first_path, f"infinite values at voxel {tuple(ijk[v].tolist())} of "
                         f"{mask_name}; expected finite responses (NaN for missing)")
    all_nan = np.isnan(responses).all(axis=(0, 2))
    if all_nan.any():
        v = int(np.flatnonzero(all_nan)[0])
        raise InputError(first_path, f"{int(all_nan.sum())} voxels of {mask_name} hold only NaN "
                         f"in every volume (first at voxel {tuple(ijk[v].tolist())}); expected "
                         "responses in every masked voxel (shrink the mask)")
    rois = (_atlas_rois(subject.atlas, mask_img) if subject.atlas is not None
            else np.full(n_vox, "", dtype=object))
    if subject.atlas is not None and not (rois != "").any():
        log.warning("%s subject %d: the atlas %s labels none of its %d voxels", dataset,
                    subject.id, subject.atlas.image, n_vox)
    coords = apply_affine(ref_affine, ijk).astype(np.float64)
    return responses, rois, coords, mask_img, len(sources)


def load_nifti_dataset(desc: Description, name: str, labels_csv: str | Path) -> VoxelDataset:
    """Load dataset ``name`` of a description into a validated :class:`VoxelDataset`."""
    if name not in desc.datasets:
        raise InputError(desc.path, f"describes no dataset {name!r} (datasets: "
                         f"{list(desc.datasets)})")
    spec = desc.datasets[name]
    names, categories = stimulus_order(desc, labels_csv)
    parts = [_load_subject(s, names, name) for s in spec.subjects]
    reps = {p[4] for p in parts}
    if len(reps) != 1:
        counts = {s.id: p[4] for s, p in zip(spec.subjects, parts, strict=True)}
        raise InputError(spec.where, f"subjects have different numbers of repetitions {counts}; "
                         "expected the same number for every subject")
    subject = np.concatenate([np.full(p[0].shape[1], s.id, dtype=np.int64)
                              for s, p in zip(spec.subjects, parts, strict=True)])
    provenance = desc.folder / PROVENANCE_FILE
    simulated = desc.simulated or (
        provenance.is_file() and bool(json.loads(provenance.read_text()).get("simulated")))
    return VoxelDataset(
        name=name,
        responses=np.concatenate([p[0] for p in parts], axis=1),
        subject=subject,
        roi=np.concatenate([p[1] for p in parts]),
        stimuli=tuple(names),
        simulated=bool(simulated),
        source=f"{desc.path} (datasets.{name})",
        coords=np.concatenate([p[2] for p in parts]),
        coord_names=("x", "y", "z"),
        masks={s.id: p[3] for s, p in zip(spec.subjects, parts, strict=True)},
        folds=fold_assignment(desc, names, categories),
        categories=tuple(categories),
        format="nifti",
    )
