"""fMRI voxel datasets as validated typed objects: the lab-release format, or NIfTI images.

Lab-release layout (data-formats.md), per dataset folder ``neural/<NAME>/``:
``voxel_features_array.npy`` (sounds x voxels x 3 reps, NaN for missing reps),
``voxel_features_meta.npy`` (per-voxel records), ``df_roi_meta.pkl`` (per used voxel: subject,
ROI label, surface coordinates), ``neural_stim_meta.npy`` (NH2015: the canonical stimulus order)
or ``stim_info_v4.mat`` (B2021). NIfTI datasets (:mod:`brainalign.data.nifti`) load into the same
:class:`VoxelDataset`, with their own stimuli, folds and the subjects' brain masks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from brainalign.data.safe_pickle import load_dataframe_pickle
from brainalign.data.stimuli import N_SOUNDS, canonical_names, check_canonical
from brainalign.errors import InputError

ROI_LABELS = ("Primary", "Anterior", "Lateral", "Posterior")
DATASETS = {"NH2015": {"n_sounds": 165}, "B2021": {"n_sounds": 192}}
N_REPS = 3
PROVENANCE_FILE = "PROVENANCE.json"
"""Written next to simulated datasets; its presence marks a dataset as simulated."""


@dataclass(frozen=True)
class VoxelDataset:
    """Voxel responses to a stimulus set (the canonical 165 sounds, or a NIfTI dataset's own).

    ``responses`` is (n_sounds, n_voxels, n_reps) float64 with NaN for missing repetitions, rows
    in the order of ``stimuli``; ``subject`` (n_voxels,) int; ``roi`` (n_voxels,) str with ''
    for voxels outside the four ROIs. Optional: ``coords`` (n_voxels, k) voxel coordinates named
    by ``coord_names`` (world mm x, y, z for NIfTI; the release's surface x_ras, y_ras), ``hemi``
    (n_voxels,) str; ``masks`` {subject: brain-mask image} of a NIfTI dataset (voxel order = the
    mask's C order, as nilearn's maskers); ``folds`` the dataset's own fold id per sound (None:
    the authors' fold file of the 165 sounds); ``categories`` per sound.
    """

    name: str
    responses: np.ndarray = field(repr=False)
    subject: np.ndarray = field(repr=False)
    roi: np.ndarray = field(repr=False)
    stimuli: tuple[str, ...]
    simulated: bool
    source: str
    coords: np.ndarray | None = field(default=None, repr=False)
    coord_names: tuple[str, ...] = ()
    hemi: np.ndarray | None = field(default=None, repr=False)
    masks: Mapping[int, Any] | None = field(default=None, repr=False)
    folds: np.ndarray | None = field(default=None, repr=False)
    categories: tuple[str, ...] = ()
    format: str = "lab"

    @property
    def n_voxels(self) -> int:
        return int(self.responses.shape[1])

    @property
    def subjects(self) -> np.ndarray:
        """Sorted unique subject indices."""
        return np.unique(self.subject)

    def target(self) -> np.ndarray:
        """Regression/RSA target: mean over repetitions (sounds x voxels), NaN where a rep is."""
        return self.responses.mean(axis=2)

    def complete_voxels(self) -> np.ndarray:
        """Boolean mask of voxels with no NaN in any sound or repetition."""
        return ~np.isnan(self.responses).any(axis=(0, 2))


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(path, "file not found (run `brainalign fetch`)")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise InputError(
            path, f"not a plain numpy array file ({exc}); object arrays are refused"
        ) from None
    except Exception as exc:
        raise InputError(path, f"not a readable .npy file ({exc})") from None


def _decode(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_stim_order(folder: Path, name: str) -> list[str]:
    """Stimulus stems in the order of the dataset's rows (first 165 for B2021)."""
    if name == "NH2015":
        path = folder / "neural_stim_meta.npy"
        meta = _load_npy(path)
        if meta.dtype.names is None or "filename" not in meta.dtype.names:
            raise InputError(path, "expected a structured array with a 'filename' field")
        names = [_decode(v).removesuffix(".wav") for v in meta["filename"]]
        if len(names) != N_SOUNDS:
            raise InputError(path, f"expected {N_SOUNDS} records, found {len(names)}")
        return names
    path = folder / "stim_info_v4.mat"
    import scipy.io

    if not path.is_file():
        raise InputError(path, "file not found (run `brainalign fetch`)")
    try:
        info = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)["stim_info"]
    except Exception as exc:
        raise InputError(path, f"expected a MATLAB struct 'stim_info' ({exc})") from None
    try:
        files = [str(f).removesuffix(".wav") for f in np.atleast_1d(info.stim_names)]
    except AttributeError:
        raise InputError(path, "stim_info has no field 'stim_names'") from None
    return files[:N_SOUNDS]


def load_voxel_dataset(folder: str | Path, name: str) -> VoxelDataset:
    """Load NH2015 or B2021 from a lab-release folder ``.../neural/<name>``.

    NH2015 keeps only voxels with ``n_reps == 3`` (as the authors); B2021 keeps every voxel.
    Only the first 165 sounds are kept (B2021 has 27 extra music clips). The stimulus order of
    the file must equal the canonical order; a mismatch is an error, not a silent reorder.
    """
    if name not in DATASETS:
        raise InputError("dataset", f"expected one of {sorted(DATASETS)}, got {name!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, f"{name} folder not found (run `brainalign fetch`)")
    arr_path = folder / "voxel_features_array.npy"
    arr = _load_npy(arr_path)
    n_sounds = DATASETS[name]["n_sounds"]
    if arr.ndim != 3 or arr.shape[0] != n_sounds or arr.shape[2] != N_REPS:
        raise InputError(
            arr_path, f"expected shape ({n_sounds}, n_voxels, {N_REPS}), got {arr.shape}"
        )
    if arr.dtype.kind != "f":
        raise InputError(arr_path, f"expected a float array, got dtype {arr.dtype}")
    stems = _read_stim_order(folder, name)
    check_canonical(
        stems, folder / ("neural_stim_meta.npy" if name == "NH2015" else "stim_info_v4.mat")
    )

    roi_path = folder / "df_roi_meta.pkl"
    roi_df = load_dataframe_pickle(roi_path)
    for col in ("subj_idx", "roi_label_general"):
        if col not in roi_df.columns:
            raise InputError(roi_path, f"missing column {col!r}")

    if name == "NH2015":
        meta_path = folder / "voxel_features_meta.npy"
        meta = _load_npy(meta_path)
        if meta.dtype.names is None or "n_reps" not in meta.dtype.names:
            raise InputError(meta_path, "expected a structured array with an 'n_reps' field")
        if len(meta) != arr.shape[1]:
            raise InputError(
                meta_path, f"{len(meta)} records for {arr.shape[1]} voxels in {arr_path.name}"
            )
        keep = np.asarray(meta["n_reps"]) == N_REPS
    else:
        keep = np.ones(arr.shape[1], dtype=bool)
    responses = np.asarray(arr[:N_SOUNDS][:, keep, :], dtype=np.float64)
    if len(roi_df) != responses.shape[1]:
        raise InputError(
            roi_path, f"{len(roi_df)} rows, expected one per used voxel ({responses.shape[1]})"
        )
    subject = roi_df["subj_idx"].to_numpy().astype(np.int64)
    roi = np.array(
        [
            "" if (isinstance(v, float) and np.isnan(v)) or v is None else str(v)
            for v in roi_df["roi_label_general"]
        ],
        dtype=object,
    )
    bad_roi = sorted(set(roi) - set(ROI_LABELS) - {""})
    if bad_roi:
        raise InputError(
            roi_path, f"unknown roi_label_general values {bad_roi}; expected {ROI_LABELS}"
        )
    all_nan = np.isnan(responses).all(axis=(0, 2))
    if all_nan.any():
        raise InputError(
            arr_path,
            f"{int(all_nan.sum())} used voxels hold only NaN (first: voxel "
            f"{int(np.flatnonzero(all_nan)[0])}); expected responses for every used voxel",
        )
    provenance = folder / PROVENANCE_FILE
    simulated = provenance.is_file() and json.loads(provenance.read_text()).get("simulated", False)
    coords, coord_names = None, ()
    if {"x_ras", "y_ras"} <= set(roi_df.columns):
        coords = roi_df[["x_ras", "y_ras"]].to_numpy(dtype=np.float64)
        coord_names = ("x_ras", "y_ras")
    hemi = roi_df["hemi"].astype(str).to_numpy(dtype=object) if "hemi" in roi_df.columns else None
    return VoxelDataset(
        name=name,
        responses=responses,
        subject=subject,
        roi=roi,
        stimuli=canonical_names(),
        simulated=bool(simulated),
        source=str(folder),
        coords=coords,
        coord_names=coord_names,
        hemi=hemi,
    )
