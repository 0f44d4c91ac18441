"""Simulated voxel datasets in exactly the lab-release file format (the embedded default).

The lab's voxel data cannot be downloaded from these machines, so the demo uses stand-ins
generated deterministically from the REAL NH2015 components (components.mat: response profiles
R, 165 x 6, and voxel weights W, 6 x 11,065):

    response[sound, voxel, rep] = gain * (R_s @ W[:, source_voxel])[sound] + noise

- Voxels: each simulated voxel copies the weight column of a randomly drawn real voxel (seeded),
  so its tuning is a real mixture of the six components. Subjects get consecutive blocks of
  ``voxels_per_subject`` voxels.
- Subjects differ: subject s hears the sounds through its own component profiles
  R_s = R + idiosyncrasy * E_s, where E_s (sounds x 6) is subject-specific Gaussian variation
  scaled by each component's SD over the 165 sounds. This reliable, subject-specific part is
  what makes real subjects agree less with each other than with themselves; ``idiosyncrasy`` is
  calibrated per dataset so that the RSA topline lands near the published one (README, "The
  simulated voxels").
- ROI: by the voxel's dominant component: lowfreq/highfreq -> Primary, pitch/music -> Anterior,
  speech -> Lateral, envsounds -> Posterior; voxels whose largest weight is in the lowest
  ``frac_no_roi`` quantile get no ROI (NaN), as voxels outside the four ROIs in the release.
- Noise: each voxel draws a target test-retest reliability rho ~ U(reliability_low,
  reliability_high) = the correlation between two single repetitions; the noise variance is
  var(signal) * (1 - rho) / rho. A fraction ``structured_noise`` of it is structured: one
  fluctuation per subject, sound and repetition shared by all of that subject's voxels (as a
  scan-wide signal change), the rest i.i.d. over voxels, sounds and repetitions.
- Missing repetitions: NH2015 gets ``frac_incomplete`` extra voxels with n_reps < 3 (NaN in the
  missing reps) that the loader drops, as in the release; B2021 has ``nan_subjects`` subjects in
  which ``frac_nan_voxels`` of voxels miss their third repetition (kept by the loader; regression
  skips them, layer-wise RSA loses those subjects, as in the authors' code).
- B2021's 27 extra sounds (192 in all) are random mixtures of the music and song rows of R.
- Values are rounded to 1e-6 so the files are byte-identical on any CPU; a PROVENANCE.json next
  to each dataset marks it simulated (the loader reads it; every derived output carries it).
- The same values are also written as a NIfTI dataset (``nifti/``, :func:`write_nifti_release`):
  per subject a small grid in a common 3-mm space with a brain mask and one 4-D float64 image
  per repetition (volume i = sound i, the canonical order), and per dataset an atlas of the four
  ROIs on a finer 1.5-mm grid, described by ``nifti/dataset.yaml`` (``data.fmri:
  simulated/nifti``). Each voxel sits in its ROI's band of the anterior-posterior axis, placed so
  that the mask's C order is the release's voxel order: both formats load to the same arrays.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from brainalign.atomic import atomic_path, write_bytes, write_json, write_text
from brainalign.data.components import COMPONENT_NAMES, Components
from brainalign.data.fmri import N_REPS, PROVENANCE_FILE, ROI_LABELS, load_voxel_dataset
from brainalign.data.nifti import nifti_gz_bytes
from brainalign.data.stimuli import N_SOUNDS
from brainalign.errors import InputError

ROI_OF_COMPONENT = {
    "lowfreq": "Primary",
    "highfreq": "Primary",
    "pitch": "Anterior",
    "music": "Anterior",
    "speech": "Lateral",
    "envsounds": "Posterior",
}
N_B2021_SOUNDS = 192
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by brainalign simulate (deterministic header)"


@dataclass(frozen=True)
class DatasetSim:
    """Size, subject variation and missing-data settings of one simulated dataset."""

    n_subjects: int
    voxels_per_subject: int
    frac_incomplete: float = 0.0
    nan_subjects: int = 0
    frac_nan_voxels: float = 0.0
    idiosyncrasy: float = 0.0


@dataclass(frozen=True)
class SimulateParams:
    """params.yaml ``simulate`` section."""

    seed: int = 2015
    gain: float = 100.0
    reliability_low: float = 0.3
    reliability_high: float = 0.8
    frac_no_roi: float = 0.2
    structured_noise: float = 0.3
    nh2015: DatasetSim = field(
        default_factory=lambda: DatasetSim(
            n_subjects=8, voxels_per_subject=120, frac_incomplete=0.05, idiosyncrasy=0.45
        )
    )
    b2021: DatasetSim = field(
        default_factory=lambda: DatasetSim(
            n_subjects=20, voxels_per_subject=60, nan_subjects=2, frac_nan_voxels=0.05,
            idiosyncrasy=0.46,
        )
    )

    def __post_init__(self) -> None:
        if not 0 < self.reliability_low <= self.reliability_high < 1:
            raise ValueError("need 0 < reliability_low <= reliability_high < 1")
        if not 0 <= self.structured_noise < 1:
            raise ValueError("structured_noise must be in [0, 1)")
        for name in ("nh2015", "b2021"):
            ds = getattr(self, name)
            if ds.n_subjects < 1 or ds.voxels_per_subject < 1:
                raise ValueError(f"{name}: n_subjects and voxels_per_subject must be >= 1")
            for frac in ("frac_incomplete", "frac_nan_voxels"):
                if not 0 <= getattr(ds, frac) < 1:
                    raise ValueError(f"{name}.{frac} must be in [0, 1)")
            if ds.nan_subjects > ds.n_subjects:
                raise ValueError(f"{name}.nan_subjects exceeds n_subjects")
            if ds.idiosyncrasy < 0:
                raise ValueError(f"{name}.idiosyncrasy must be >= 0")


def _outer(resp: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """resp (S, 6) @ weights (6, V) as a fixed-order sum (no BLAS: bit-identical on any CPU)."""
    out = np.zeros((resp.shape[0], weights.shape[1]))
    for k in range(resp.shape[1]):
        out += resp[:, k, None] * weights[None, k, :]
    return out


def _subject_signal(responses: np.ndarray, weights: np.ndarray, subject: np.ndarray,
                    n_subjects: int, idiosyncrasy: float, gain: float,
                    rng: np.random.Generator) -> np.ndarray:
    """gain * R_s @ w_v for every voxel v of subject s (R_s: the subject's own profiles)."""
    sd = responses[:N_SOUNDS].std(axis=0)
    signal = np.zeros((responses.shape[0], weights.shape[1]))
    for s in range(1, n_subjects + 1):
        own = responses + idiosyncrasy * rng.standard_normal(responses.shape) * sd[None, :]
        cols = np.flatnonzero(subject == s)
        signal[:, cols] = gain * _outer(own, weights[:, cols])
    return signal


def _responses(
    signal: np.ndarray, subject: np.ndarray, rng: np.random.Generator, p: SimulateParams
) -> tuple[np.ndarray, np.ndarray]:
    """Add noise for a per-voxel reliability; returns (responses S x V x 3, reliabilities)."""
    n_vox = signal.shape[1]
    rel = rng.uniform(p.reliability_low, p.reliability_high, size=n_vox)
    sd_signal = signal[:N_SOUNDS].std(axis=0)
    sd_noise = sd_signal * np.sqrt((1.0 - rel) / rel)
    white = rng.standard_normal((signal.shape[0], n_vox, N_REPS))
    if p.structured_noise > 0:
        subjects = np.unique(subject)
        shared = rng.standard_normal((len(subjects), signal.shape[0], N_REPS))
        scan = shared[np.searchsorted(subjects, subject)].transpose(1, 0, 2)
        white = (np.sqrt(1.0 - p.structured_noise) * white
                 + np.sqrt(p.structured_noise) * scan)
    noise = white * sd_noise[None, :, None]
    return np.round(signal[:, :, None] + noise, 6), rel


def _rois(weights: np.ndarray, frac_no_roi: float) -> np.ndarray:
    dominant = np.argmax(weights, axis=0)
    labels = np.array([ROI_OF_COMPONENT[COMPONENT_NAMES[k]] for k in dominant], dtype=object)
    strength = weights.max(axis=0)
    cut = np.quantile(strength, frac_no_roi) if frac_no_roi > 0 else -np.inf
    labels[strength < cut] = np.nan
    return labels


def _roi_frame(subject: np.ndarray, rois: np.ndarray, rel: np.ndarray, rng: np.random.Generator):
    import pandas as pd

    n = len(subject)
    return pd.DataFrame(
        {
            "subj_idx": subject.astype(np.int64),
            "hemi": np.where(rng.random(n) < 0.5, "lh", "rh").astype(object),
            "x_ras": np.round(rng.uniform(-60, 60, n), 3),
            "y_ras": np.round(rng.uniform(-40, 10, n), 3),
            "voxel_id": np.arange(n, dtype=np.int64),
            "kell_r_reliability": np.round(rel, 6),
            "pearson_r_reliability": np.round(rel, 6),
            "roi_label_general": rois,
        }
    ).astype({"hemi": object, "roi_label_general": object})


def _write_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, arr, allow_pickle=False)


def _write_pickle(path: Path, frame) -> None:
    buf = io.BytesIO()
    frame.to_pickle(buf, compression=None, protocol=4)
    write_bytes(path, buf.getvalue())


def _write_mat(path: Path, variables: dict) -> None:
    import scipy.io

    buf = io.BytesIO()
    scipy.io.savemat(buf, variables, format="5")
    data = bytearray(buf.getvalue())
    data[:116] = _MAT_HEADER.ljust(116)  # savemat stamps the creation time here
    write_bytes(path, bytes(data))


def simulate_nh2015(
    comp: Components,
    out_dir: Path,
    p: SimulateParams,
    rng: np.random.Generator,
    categories: list[str],
) -> dict:
    ds = p.nh2015
    n_used = ds.n_subjects * ds.voxels_per_subject
    n_extra = int(round(ds.frac_incomplete * n_used))
    cols = rng.choice(
        comp.weights.shape[1],
        size=n_used + n_extra,
        replace=n_used + n_extra > comp.weights.shape[1],
    )
    weights = comp.weights[:, cols]
    subject = np.concatenate(
        [
            np.repeat(np.arange(1, ds.n_subjects + 1), ds.voxels_per_subject),
            rng.integers(1, ds.n_subjects + 1, size=n_extra),
        ]
    )
    signal = _subject_signal(comp.responses, weights, subject, ds.n_subjects, ds.idiosyncrasy,
                             p.gain, rng)
    resp, rel = _responses(signal, subject, rng, p)
    n_reps = np.full(n_used + n_extra, N_REPS)
    n_reps[n_used:] = rng.integers(1, N_REPS, size=n_extra)
    for v in range(n_used, n_used + n_extra):
        resp[:, v, n_reps[v] :] = np.nan
    # Interleave the incomplete voxels with the used ones, as in a real voxel list.
    order = np.argsort(
        np.concatenate([np.arange(n_used), rng.uniform(0, n_used, n_extra)]), kind="stable"
    )
    resp, subject, n_reps, weights, rel = (
        resp[:, order],
        subject[order],
        n_reps[order],
        weights[:, order],
        rel[order],
    )
    used = n_reps == N_REPS

    meta = np.zeros(
        n_used + n_extra,
        dtype=[
            ("subj_idx", "<i8"),
            ("hemi", "S2"),
            ("x_ras", "<f8"),
            ("y_ras", "<f8"),
            ("voxel_id", "<i8"),
            ("n_reps", "<i8"),
        ],
    )
    meta["subj_idx"] = subject
    meta["voxel_id"] = np.arange(n_used + n_extra)
    meta["n_reps"] = n_reps
    frame = _roi_frame(subject[used], _rois(weights[:, used], p.frac_no_roi), rel[used], rng)
    meta["hemi"] = np.where(rng.random(n_used + n_extra) < 0.5, b"lh", b"rh")
    meta["hemi"][used] = [h.encode() for h in frame["hemi"]]
    meta["x_ras"][used], meta["y_ras"][used] = frame["x_ras"], frame["y_ras"]
    frame["voxel_id"] = np.flatnonzero(used)

    stim = np.zeros(
        N_SOUNDS,
        dtype=[
            ("id", "<i8"),
            ("filename", "S64"),
            ("name", "S64"),
            ("duration_s", "<f8"),
            ("category", "S16"),
        ],
    )
    stim["id"] = np.arange(N_SOUNDS)
    stim["filename"] = [f"{n}.wav".encode() for n in comp.stimuli]
    stim["name"] = [n.split("_", 1)[1].encode() for n in comp.stimuli]
    stim["duration_s"] = 2.0
    stim["category"] = [c.encode() for c in categories]
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_npy(out_dir / "voxel_features_array.npy", resp)
    _write_npy(out_dir / "voxel_features_meta.npy", meta)
    _write_npy(out_dir / "neural_stim_meta.npy", stim)
    _write_pickle(out_dir / "df_roi_meta.pkl", frame)
    return {
        "n_voxels_total": int(n_used + n_extra),
        "n_voxels_used": int(n_used),
        "n_subjects": ds.n_subjects,
    }


def simulate_b2021(
    comp: Components,
    out_dir: Path,
    p: SimulateParams,
    rng: np.random.Generator,
    categories: list[str],
) -> dict:
    ds = p.b2021
    n_vox = ds.n_subjects * ds.voxels_per_subject
    cols = rng.choice(comp.weights.shape[1], size=n_vox, replace=n_vox > comp.weights.shape[1])
    weights = comp.weights[:, cols]
    music_rows = np.flatnonzero(np.isin(categories, ["Music", "Song"]))
    mix = rng.dirichlet(np.ones(len(music_rows)), size=N_B2021_SOUNDS - N_SOUNDS)
    extra = _outer(mix, comp.responses[music_rows])
    resp_rows = np.vstack([comp.responses, extra])
    subject = np.repeat(np.arange(1, ds.n_subjects + 1), ds.voxels_per_subject)
    signal = _subject_signal(resp_rows, weights, subject, ds.n_subjects, ds.idiosyncrasy,
                             p.gain, rng)
    resp, rel = _responses(signal, subject, rng, p)
    nan_subj = rng.choice(np.arange(1, ds.n_subjects + 1), size=ds.nan_subjects, replace=False)
    n_nan = 0
    for s in np.sort(nan_subj):
        idx = np.flatnonzero(subject == s)
        k = max(1, int(round(ds.frac_nan_voxels * len(idx)))) if ds.frac_nan_voxels > 0 else 0
        for v in rng.choice(idx, size=k, replace=False):
            resp[:, v, N_REPS - 1] = np.nan
            n_nan += 1
    frame = _roi_frame(subject, _rois(weights, p.frac_no_roi), rel, rng)
    frame["coord_id"] = np.arange(n_vox, dtype=np.int64)
    frame["shared_by"] = np.ones(n_vox, dtype=np.int64)
    names = list(comp.stimuli) + [
        f"music_extra_{i:02d}" for i in range(1, N_B2021_SOUNDS - N_SOUNDS + 1)
    ]
    cat_names = sorted(set(categories))
    cats = list(categories) + ["Music"] * (N_B2021_SOUNDS - N_SOUNDS)
    stim_info = {
        "category_names": np.array(cat_names, dtype=object),
        "category_idx": np.array([cat_names.index(c) + 1 for c in cats], dtype=np.float64),
        "fmri_stim_num": np.arange(1, N_B2021_SOUNDS + 1, dtype=np.float64),
        "duration_s": np.full(N_B2021_SOUNDS, 2.0),
        "source": np.array(
            ["NH2015"] * N_SOUNDS + ["B2021"] * (N_B2021_SOUNDS - N_SOUNDS), dtype=object
        ),
        "is_music": np.array([c in ("Music", "Song") for c in cats], dtype=np.float64),
        "rms": np.ones(N_B2021_SOUNDS),
        "stim_names": np.array(names, dtype=object),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_npy(out_dir / "voxel_features_array.npy", resp)
    _write_npy(out_dir / "voxel_features_meta.npy", np.arange(n_vox, dtype=np.int64))
    _write_pickle(out_dir / "df_roi_meta.pkl", frame)
    _write_mat(out_dir / "stim_info_v4.mat", {"stim_info": stim_info})
    return {
        "n_voxels_total": int(n_vox),
        "n_voxels_with_nan": int(n_nan),
        "n_subjects": ds.n_subjects,
        "nan_subjects": sorted(int(s) for s in nan_subj),
    }


def simulate_release(
    comp: Components,
    categories: list[str],
    out_root: str | Path,
    params: SimulateParams,
    components_sha256: str,
) -> dict:
    """Write simulated ``neural/NH2015`` and ``neural/B2021`` under ``out_root``."""
    if len(categories) != N_SOUNDS:
        raise InputError("categories", f"expected {N_SOUNDS} labels, got {len(categories)}")
    out_root = Path(out_root)
    summary = {}
    for offset, name in enumerate(("NH2015", "B2021")):
        rng = np.random.default_rng([params.seed, offset])
        folder = out_root / "neural" / name
        simulate_one = simulate_nh2015 if name == "NH2015" else simulate_b2021
        info = simulate_one(comp, folder, params, rng, categories)
        provenance = {
            "simulated": True,
            "dataset": name,
            "generator": "brainalign simulate (brainalign.data.simulate)",
            "method": "real NH2015 components: subject-specific profiles R_s @ W plus white and "
                      "scan-wide Gaussian noise at a per-voxel reliability",
            "components_sha256": components_sha256,
            "params": asdict(params),
            **info,
        }
        write_json(folder / PROVENANCE_FILE, provenance)
        summary[name] = info
    summary["nifti"] = write_nifti_release(out_root / "neural", out_root / NIFTI_FOLDER,
                                           components_sha256)
    return summary


# ------------------------------------------------------------------ the NIfTI version

NIFTI_FOLDER = "nifti"
VOXEL_MM = 3.0
ORIGIN_MM = (-66.0, -42.0, 0.0)
"""World position (x, y, z mm) of voxel (0, 0, 0): a patch of the left superior temporal plane."""
BANDS = ("", *ROI_LABELS)
"""Bands along the anterior-posterior (k) axis: no ROI, then the four ROIs; atlas value = index."""
BAND_VOXELS = 2
ROW_VOXELS = 8
"""Grid size along the j (inferior-superior) axis; the i (left-right) size follows the voxels."""


def _grid_positions(rois: np.ndarray) -> np.ndarray:
    """(row, k) of each voxel, in order, with k in the voxel's ROI band and (row, k) increasing.

    Row r is grid line (i, j) = divmod(r, ROW_VOXELS), so the flat C index r * n_k + k grows
    with the voxel index: the mask's C order (nilearn's voxel order) is the given order.
    """
    out = np.empty((len(rois), 2), dtype=np.int64)
    row, pos = 0, -1
    for v, roi in enumerate(rois):
        lo = BANDS.index(roi) * BAND_VOXELS
        k = max(lo, pos + 1)
        if k >= lo + BAND_VOXELS:
            row, k = row + 1, lo
        out[v] = row, k
        pos = k
    return out


def _voxel_affine() -> np.ndarray:
    """i -> x (left-right), j -> z (inferior-superior), k -> y (posterior-anterior), 3 mm."""
    x0, y0, z0 = ORIGIN_MM
    return np.array([[VOXEL_MM, 0, 0, x0], [0, 0, VOXEL_MM, y0], [0, VOXEL_MM, 0, z0],
                     [0, 0, 0, 1]], dtype=np.float64)


def _nifti_bytes(data: np.ndarray, affine: np.ndarray) -> bytes:
    """A .nii.gz of ``data`` (its dtype kept: float64 values are exact), gzip without a date."""
    import nibabel as nib

    return nifti_gz_bytes(nib.Nifti1Image(data, affine))


def _atlas_image(n_i: int) -> tuple[np.ndarray, np.ndarray]:
    """The dataset's ROI atlas on a 1.5-mm RAS grid covering every subject's grid."""
    n_k = len(BANDS) * BAND_VOXELS
    shape = (2 * n_i, 2 * n_k, 2 * ROW_VOXELS)  # x, y, z at half the voxel size
    y_band = (np.arange(shape[1]) // 2) // BAND_VOXELS
    atlas = np.broadcast_to(y_band[None, :, None], shape).astype(np.int16)
    affine = np.diag([VOXEL_MM / 2] * 3 + [1.0])
    affine[:3, 3] = ORIGIN_MM
    return atlas, affine


def write_nifti_release(neural_root: Path, out_dir: Path, components_sha256: str) -> dict:
    """Write the lab-format NH2015 and B2021 of ``neural_root`` as a NIfTI dataset (same values).

    Returns a summary; the description is ``out_dir/dataset.yaml``.
    """
    import yaml

    affine = _voxel_affine()
    n_k = len(BANDS) * BAND_VOXELS
    description: dict = {"simulated": True, "datasets": {}}
    summary: dict = {}
    for name in ("NH2015", "B2021"):
        ds = load_voxel_dataset(neural_root / name, name)
        places = {int(s): _grid_positions(ds.roi[ds.subject == s]) for s in ds.subjects}
        n_i = max(-(-(int(p[:, 0].max()) + 1) // ROW_VOXELS) for p in places.values())
        atlas, atlas_affine = _atlas_image(n_i)
        write_bytes(out_dir / name / "atlas.nii.gz", _nifti_bytes(atlas, atlas_affine))
        subjects: dict = {}
        for s, pos in places.items():
            cols = np.flatnonzero(ds.subject == s)
            shape = (-(-(int(pos[:, 0].max()) + 1) // ROW_VOXELS), ROW_VOXELS, n_k)
            i, j = np.divmod(pos[:, 0], ROW_VOXELS)
            mask = np.zeros(shape, dtype=np.uint8)
            mask[i, j, pos[:, 1]] = 1
            folder = f"{name}/sub-{s:02d}"
            write_bytes(out_dir / folder / "mask.nii.gz", _nifti_bytes(mask, affine))
            reps = []
            for r in range(ds.responses.shape[2]):
                vol = np.zeros((*shape, ds.responses.shape[0]), dtype=np.float64)
                vol[i, j, pos[:, 1], :] = ds.responses[:, cols, r].T
                rel = f"{folder}/rep-{r + 1}.nii.gz"
                write_bytes(out_dir / rel, _nifti_bytes(vol, affine))
                reps.append(rel)
            subjects[s] = {"mask": f"{folder}/mask.nii.gz", "repetitions": reps}
        description["datasets"][name] = {
            "atlas": {"image": f"{name}/atlas.nii.gz",
                      "labels": {b: roi for b, roi in enumerate(BANDS) if roi}},
            "subjects": subjects,
        }
        summary[name] = {"n_subjects": len(places), "n_voxels": ds.n_voxels,
                         "grid": [n_i, ROW_VOXELS, n_k]}
    header = ("# SIMULATED voxels (brainalign simulate): the values of ../neural/NH2015 and\n"
              "# ../neural/B2021 as NIfTI images; select with params.yaml data.fmri: "
              "simulated/nifti\n")
    write_text(out_dir / "dataset.yaml",
               header + yaml.safe_dump(description, sort_keys=False, default_flow_style=None))
    write_json(out_dir / PROVENANCE_FILE, {
        "simulated": True,
        "generator": "brainalign simulate (brainalign.data.simulate.write_nifti_release)",
        "method": "the simulated lab-format NH2015 and B2021 (first 165 sounds) as NIfTI images",
        "components_sha256": components_sha256,
        **summary,
    })
    return summary


def split_half_reliability(responses: np.ndarray) -> np.ndarray:
    """Per voxel: mean Pearson correlation between pairs of single repetitions (NaN-free voxels)."""
    n_reps = responses.shape[2]
    rs = []
    for a in range(n_reps):
        for b in range(a + 1, n_reps):
            x = responses[:, :, a] - responses[:, :, a].mean(0)
            y = responses[:, :, b] - responses[:, :, b].mean(0)
            rs.append((x * y).sum(0) / np.sqrt((x * x).sum(0) * (y * y).sum(0)))
    return np.mean(rs, axis=0)
