"""Brain maps: where in cortex a model predicts best, from the regression stage's voxel outputs.

For each model and voxel dataset, from ``build/regression/<model>/<dataset>/voxels.parquet``
(written by :func:`brainalign.alignment.stages.run_regression`):

- ``r2``: the voxel's cross-validated regression R^2 (NaN for voxels the regression skipped);
- ``layer``: the layer selected in most outer folds (ties: the earlier layer in the model's
  order), ``layer_index`` its position (0-based; -1 when skipped), ``depth`` =
  ``layer_index / (n_layers - 1)`` (0: the first candidate layer, 1: the last), and
  ``fold_agreement``, the share of outer folds that chose it.

Outputs under ``out_dir/<dataset>/``: ``voxels.parquet`` (those columns with subject, ROI and the
voxel coordinates), ``metrics.json`` and, for NIfTI datasets, per subject
``subject<id>_r2.nii.gz`` (float64, NaN where skipped), ``subject<id>_layer.nii.gz`` (int16,
``layer_index + 1``: 0 outside the mask or where skipped), ``subject<id>_depth.nii.gz``
(float64, NaN where skipped) and ``subject<id>_mask.nii.gz`` (the brain mask, uint8), in the
subject's own space (outside the mask every map is 0): nilearn's
``NiftiMasker(mask).inverse_transform`` of the per-voxel values. Lab-release datasets carry
surface coordinates (``x_ras``, ``y_ras``) rather than images: their maps are the table, drawn
as scatter maps by :mod:`brainalign.report.brainmaps`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainalign.atomic import write_bytes, write_json
from brainalign.data.fmri import VoxelDataset
from brainalign.errors import InputError
from brainalign.outputs import damaged

_LAYER_COL = re.compile(r"^layer_f(\d+)$")
MAP_KINDS = ("r2", "layer", "depth", "mask")


def _read_regression(folder: Path) -> tuple[pd.DataFrame, list[str]]:
    vox_path, metrics_path = folder / "voxels.parquet", folder / "metrics.json"
    for path in (vox_path, metrics_path):
        if not path.is_file():
            raise InputError(path, "regression output not found (run `dvc repro regress@<model>`)")
    try:
        vox = pd.read_parquet(vox_path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        raise damaged(vox_path, exc, "table") from None
    try:
        layers = json.loads(metrics_path.read_text())["layers"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise damaged(metrics_path, exc, "metrics file") from None
    missing = [c for c in ("voxel", "subject", "regressed", "r2") if c not in vox.columns]
    if missing or not any(_LAYER_COL.match(c) for c in vox.columns):
        raise InputError(vox_path, f"expected the regression stage's voxel table (columns voxel, "
                         f"subject, regressed, r2, layer_f<k>); missing {missing or 'layer_f<k>'}")
    return vox, list(layers)


def selected_layer(vox: pd.DataFrame, layers: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(layer index, share of outer folds that chose it) per voxel; index -1 where skipped.

    The index is the layer chosen in most outer folds; ties go to the earlier layer.
    """
    cols = sorted((c for c in vox.columns if _LAYER_COL.match(c)),
                  key=lambda c: int(_LAYER_COL.match(c).group(1)))  # type: ignore[union-attr]
    position = {name: i for i, name in enumerate(layers)}
    chosen = np.full((len(vox), len(cols)), -1, dtype=np.int64)
    for j, col in enumerate(cols):
        values = vox[col].to_numpy(dtype=object)
        for i, name in enumerate(values):
            if isinstance(name, str):
                if name not in position:
                    raise InputError(col, f"layer {name!r} is not among the model's layers "
                                     f"{layers}")
                chosen[i, j] = position[name]
    counts = np.zeros((len(vox), len(layers)), dtype=np.int64)
    for j in range(len(cols)):
        ok = chosen[:, j] >= 0
        np.add.at(counts, (np.flatnonzero(ok), chosen[ok, j]), 1)
    index = np.where(counts.sum(axis=1) > 0, counts.argmax(axis=1), -1)  # argmax: first of ties
    share = np.where(index >= 0, counts.max(axis=1) / max(len(cols), 1), np.nan)
    return index, share


def voxel_maps(vox: pd.DataFrame, dataset: VoxelDataset, layers: list[str],
               where: str | Path) -> pd.DataFrame:
    """The per-voxel map table of one dataset (see the module docstring)."""
    if len(vox) != dataset.n_voxels or not np.array_equal(
            vox["subject"].to_numpy(dtype=np.int64), dataset.subject):
        raise InputError(where, f"{len(vox)} voxels that do not match the {dataset.n_voxels} "
                         f"voxels of {dataset.source} (rerun `dvc repro regress@<model>`)")
    index, share = selected_layer(vox, layers)
    regressed = vox["regressed"].to_numpy(dtype=bool)
    index = np.where(regressed, index, -1)
    depth = np.where(index >= 0, index / max(len(layers) - 1, 1), np.nan)
    names = np.asarray(layers, dtype=object)
    table = pd.DataFrame({
        "voxel": np.arange(dataset.n_voxels, dtype=np.int64),
        "subject": dataset.subject,
        "roi": dataset.roi.astype(str),
        "regressed": regressed,
        "r2": np.where(regressed, vox["r2"].to_numpy(dtype=np.float64), np.nan),
        "layer": np.where(index >= 0, names[np.maximum(index, 0)], None),
        "layer_index": index,
        "depth": depth,
        "fold_agreement": np.where(index >= 0, share, np.nan),
    })
    if dataset.coords is not None:
        for k, name in enumerate(dataset.coord_names):
            table[name] = dataset.coords[:, k]
    if dataset.hemi is not None:
        table["hemi"] = dataset.hemi.astype(str)
    return table


def subject_images(table: pd.DataFrame, dataset: VoxelDataset) -> dict[int, dict[str, Any]]:
    """{subject: {r2, layer, depth, mask: NIfTI image}} in each subject's space (NIfTI)."""
    import nibabel as nib
    from nilearn.maskers import NiftiMasker

    if not dataset.masks:
        raise InputError(dataset.source, "not a NIfTI dataset: no subject masks to map onto")
    out: dict[int, dict[str, Any]] = {}
    for sid, mask in sorted(dataset.masks.items()):
        rows = table[table["subject"] == sid]
        masker = NiftiMasker(mask_img=mask).fit()
        images = {}
        for kind, values, dtype in (
            ("r2", rows["r2"].to_numpy(np.float64), np.float64),
            ("layer", rows["layer_index"].to_numpy(np.float64) + 1, np.int16),
            ("depth", rows["depth"].to_numpy(np.float64), np.float64),
        ):
            img = masker.inverse_transform(values)
            data = np.asarray(img.dataobj, dtype=np.float64).reshape(img.shape[:3])
            if dtype is np.int16:
                data = np.nan_to_num(data).astype(np.int16)
            images[kind] = nib.Nifti1Image(data.astype(dtype), mask.affine)
        mask_data = np.asarray(mask.dataobj).astype(np.uint8).reshape(mask.shape[:3])
        images["mask"] = nib.Nifti1Image(mask_data, mask.affine)
        out[int(sid)] = images
    return out


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    import io

    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def run_brainmaps(model: str, regression_dir: str | Path, datasets: Mapping[str, VoxelDataset],
                  out_dir: str | Path) -> dict[str, Any]:
    """Write the brain maps of one model for every dataset; returns the metrics per dataset.

    ``regression_dir`` is ``build/regression/<model>``; every input is validated before
    anything is written, and each dataset's ``metrics.json`` is written last.
    """
    from brainalign.data.nifti import nifti_gz_bytes

    regression_dir, out_dir = Path(regression_dir), Path(out_dir)
    planned: dict[str, tuple[pd.DataFrame, dict[str, bytes], dict[str, Any]]] = {}
    for name, ds in datasets.items():
        vox, layers = _read_regression(regression_dir / name)
        table = voxel_maps(vox, ds, layers, regression_dir / name / "voxels.parquet")
        files: dict[str, bytes] = {"voxels.parquet": _parquet_bytes(table)}
        subjects: dict[str, Any] = {}
        images = subject_images(table, ds) if ds.format == "nifti" else {}
        for sid in sorted(int(s) for s in ds.subjects):
            rows = table[table["subject"] == sid]
            entry: dict[str, Any] = {
                "n_voxels": int(len(rows)),
                "n_regressed": int(rows["regressed"].sum()),
                "median_r2": _finite(float(np.nanmedian(rows["r2"]))
                                     if rows["regressed"].any() else np.nan),
            }
            if sid in images:
                entry["files"] = {}
                for kind in MAP_KINDS:
                    fname = f"subject{sid}_{kind}.nii.gz"
                    files[fname] = nifti_gz_bytes(images[sid][kind])
                    entry["files"][kind] = fname
            subjects[str(sid)] = entry
        chosen = table.loc[table["layer_index"] >= 0, "layer"]
        metrics = {
            "model": model,
            "dataset": name,
            "format": ds.format,
            "simulated": bool(ds.simulated),
            "stimuli": list(ds.stimuli),
            "layers": layers,
            "coordinates": list(ds.coord_names),
            "n_voxels": int(ds.n_voxels),
            "n_regressed": int(table["regressed"].sum()),
            "median_r2": _finite(float(np.nanmedian(table["r2"]))
                                 if table["regressed"].any() else np.nan),
            "layer_counts": {k: int(v) for k, v in chosen.value_counts().sort_index().items()},
            "subjects": subjects,
        }
        planned[name] = (table, files, metrics)
    for name, (_, files, metrics) in planned.items():
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        for fname, data in files.items():
            write_bytes(folder / fname, data)
        write_json(folder / "metrics.json", metrics)
    return {name: planned[name][2] for name in planned}


def load_maps(out_dir: str | Path, dataset: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(voxel table, metrics) of one dataset's brain maps, as written by :func:`run_brainmaps`."""
    folder = Path(out_dir) / dataset
    metrics_path = folder / "metrics.json"
    if not metrics_path.is_file():
        raise InputError(metrics_path, "brain maps not found (run `dvc repro brainmaps@<model>`)")
    try:
        metrics = json.loads(metrics_path.read_text())
        table = pd.read_parquet(folder / "voxels.parquet")
    except Exception as exc:
        raise damaged(folder, exc, "brain-map folder") from None
    return table, metrics
