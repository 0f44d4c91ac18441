"""Compare our activations with Tuckute et al. 2023's published ones (``model_actv.tar``).

The archive (``https://mcdermottlab.mit.edu/tuckute_feather_2023/model_actv.tar``, ~2.7 GB; the
registry's ``reference`` group, trust on first use) holds, per model folder
``model-actv/<Model>/`` (paper-models.md section 1.4):

- in-house models (CochResNet50, CochCNN9, SpectroTemporal): ``natsound_activations.h5`` with one
  (165, n_units) dataset per layer (rows in the lab release's stimulus order, which is our
  canonical order) and a ``layer_list``;
- external models: ``<stimID>_activations.pkl`` per sound, a pickle of {layer key: 1-D array}
  (read by a restricted unpickler that admits numpy arrays only).

Files named ``*_randnetw*`` hold the permuted networks and are never read. A layer is found under
the authors' key (``ModelSpec.paper_keys``), else under our layer name, else its suffix after the
model key (CochDNN keys). Per layer the comparison reports the Pearson r over all (sound, unit)
values and the largest absolute difference relative to the reference's largest magnitude; a layer
fails when r < ``min_r`` (default 0.99) or, when given, the relative difference exceeds
``max_rel_diff``. Her activations are a close, not exact, reference: she read int16 files,
resampled with other tools and, for the CochDNNs, used ``scipy`` I/O (paper-models.md 1.3), so
equality is not expected, a high correlation is.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from brainalign.data.safe_pickle import load_numpy_pickle
from brainalign.errors import InputError

ROOT = "model-actv"

TUCKUTE_FOLDERS: Mapping[str, str] = {
    **{f"braindnn_resnet50_{t}": f"ResNet50{n}" for t, n in (
        ("word", "word"), ("speaker", "speaker"), ("audioset", "audioset"),
        ("word_speaker_audioset", "multitask"))},
    **{f"braindnn_kell2018_{t}": f"Kell2018{n}" for t, n in (
        ("word", "word"), ("speaker", "speaker"), ("audioset", "audioset"),
        ("word_speaker_audioset", "multitask"))},
    "braindnn_ast": "AST",
    "braindnn_vggish": "VGGish",
    "braindnn_wav2vec2": "wav2vec",
    "braindnn_s2t": "S2T",
    "braindnn_dcase2020": "DCASE2020",
    "braindnn_deepspeech": "DS2",
    "braindnn_sepformer": "sepformer",
    "braindnn_zerospeech": "ZeroSpeech2020",
    "braindnn_metricgan": "metricGAN",
    "braindnn_spectemp_filters": "spectemp",
    "spectemp": "spectemp",
}
"""Our model key -> Tuckute's folder (ABD resources.py ``d_model_names``; names not confirmed by
her RESULTDIR listing are marked unverified in paper-models.md 1.4)."""


@dataclass(frozen=True)
class LayerComparison:
    """One row of the report."""

    model: str
    layer: str
    reference_key: str
    n_sounds: int
    dim: int
    pearson_r: float
    max_rel_diff: float
    verdict: str
    note: str = ""


class _Archive:
    """Read members of the reference archive: a tar (streamed) or an unpacked folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tar: tarfile.TarFile | None = None
        if path.is_dir():
            self._names = [str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()]
        elif path.is_file():
            try:
                self._tar = tarfile.open(path)  # noqa: SIM115 - closed by close()
                self._names = [m.name for m in self._tar.getmembers() if m.isfile()]
            except (tarfile.TarError, OSError) as exc:
                raise InputError(path, f"not a readable tar archive ({exc})") from None
        else:
            raise InputError(path, "reference archive not found (run `brainalign fetch "
                             "--group reference`, or pass --archive)")
        self._by_folder: dict[str, list[str]] = {}
        for name in self._names:
            parts = PurePosixPath(name).parts
            if ROOT in parts:
                i = parts.index(ROOT)
                if len(parts) == i + 3:
                    self._by_folder.setdefault(parts[i + 1], []).append(name)

    def files(self, folder: str) -> list[str]:
        return sorted(self._by_folder.get(folder, []))

    def read(self, name: str) -> bytes:
        if self._tar is None:
            return (self.path / name).read_bytes()
        member = self._tar.getmember(name)
        if member.issym() or member.islnk():
            raise InputError(self.path, f"refusing link member {name!r}")
        handle = self._tar.extractfile(member)
        assert handle is not None
        return handle.read()

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()


def _h5_layers(data: bytes, where: str) -> dict[str, np.ndarray]:
    import h5py

    out: dict[str, np.ndarray] = {}
    try:
        with h5py.File(io.BytesIO(data), "r") as h5:
            for key in h5:
                obj = h5[key]
                if isinstance(obj, h5py.Dataset) and obj.ndim == 2:
                    out[key] = np.asarray(obj, dtype=np.float64)
    except OSError as exc:
        raise InputError(where, f"not a readable HDF5 file ({exc})") from None
    return out


def _pickle_layers(archive: _Archive, folder: str, stimuli: Sequence[str],
                   ) -> dict[str, np.ndarray]:
    """Stack the per-sound pickles ``<stim>_activations.pkl`` into (n_sounds, dim) arrays."""
    names = {PurePosixPath(n).name: n for n in archive.files(folder)}
    rows: list[dict[str, np.ndarray]] = []
    for stim in stimuli:
        member = names.get(f"{stim}_activations.pkl")
        if member is None:
            raise InputError(f"{ROOT}/{folder}", f"no {stim}_activations.pkl (expected one per "
                             "sound)")
        obj = load_numpy_pickle(member, data=archive.read(member))
        if not isinstance(obj, dict):
            raise InputError(member, f"expected a dict of layer -> array, got {type(obj).__name__}")
        rows.append({str(k): np.asarray(v, dtype=np.float64).ravel() for k, v in obj.items()})
    keys = set(rows[0])
    for stim, row in zip(stimuli, rows, strict=True):
        if set(row) != keys:
            raise InputError(f"{ROOT}/{folder}/{stim}_activations.pkl",
                             f"layer keys differ from the first sound's ({sorted(keys)[:4]}...)")
    return {k: np.stack([r[k] for r in rows]) for k in keys}


def reference_layers(archive: _Archive, model: str, stimuli: Sequence[str],
                     ) -> dict[str, np.ndarray]:
    """Tuckute's (n_sounds, dim) arrays of ``model`` by her layer key."""
    folder = TUCKUTE_FOLDERS.get(model)
    if folder is None:
        raise InputError(model, f"no counterpart in Tuckute et al.'s archive (models with one: "
                         f"{sorted(set(TUCKUTE_FOLDERS))})")
    files = archive.files(folder)
    if not files:
        raise InputError(archive.path, f"no folder {ROOT}/{folder}/ for {model!r}")
    h5 = [f for f in files if PurePosixPath(f).name == "natsound_activations.h5"]
    if h5:
        return _h5_layers(archive.read(h5[0]), h5[0])
    if not any(f.endswith("_activations.pkl") for f in files):
        raise InputError(f"{ROOT}/{folder}", "neither natsound_activations.h5 nor "
                         "<stim>_activations.pkl files")
    return _pickle_layers(archive, folder, stimuli)


def _compare(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    a, b = ours.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    r = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
    scale = float(np.abs(b).max()) or 1.0
    return r, float(np.abs(a - b).max() / scale)


def compare_model(archive: _Archive, activations: Any, min_r: float = 0.99,
                  max_rel_diff: float | None = None) -> list[LayerComparison]:
    """Compare one model's Activations with the archive, layer by layer."""
    from brainalign.models.registry import get_spec

    spec = get_spec(activations.model)
    ref = reference_layers(archive, spec.name, activations.stimuli)
    rows = []
    for layer in activations.layer_names:
        key = spec.paper_keys.get(layer, layer)
        candidates = [key, layer, key.removeprefix(f"{spec.name}_")]
        found = next((k for k in candidates if k in ref), None)
        ours = activations.layers[layer]
        if found is None:
            rows.append(LayerComparison(spec.name, layer, key, ours.shape[0], ours.shape[1],
                                        float("nan"), float("nan"), "missing",
                                        f"not in the archive (has {sorted(ref)[:3]}...)"))
            continue
        theirs = ref[found]
        if theirs.shape != ours.shape:
            rows.append(LayerComparison(spec.name, layer, found, ours.shape[0], ours.shape[1],
                                        float("nan"), float("nan"), "shape",
                                        f"reference shape {theirs.shape}"))
            continue
        r, rel = _compare(ours, theirs)
        ok = r >= min_r and (max_rel_diff is None or rel <= max_rel_diff)
        rows.append(LayerComparison(spec.name, layer, found, ours.shape[0], ours.shape[1],
                                    r, rel, "ok" if ok else "differs"))
    return rows


def verify_activations(archive_path: str | Path, activation_files: Sequence[str | Path],
                       min_r: float = 0.99, max_rel_diff: float | None = None,
                       ) -> list[LayerComparison]:
    """Compare every activation file with the archive; returns all rows."""
    from brainalign.models.activations import load_activations

    if not 0 < min_r <= 1:
        raise InputError("--min-r", f"expected a correlation in (0, 1], got {min_r}")
    archive = _Archive(Path(archive_path))
    try:
        rows: list[LayerComparison] = []
        for path in activation_files:
            rows += compare_model(archive, load_activations(path), min_r, max_rel_diff)
        return rows
    finally:
        archive.close()


def write_report(rows: Sequence[LayerComparison], out_dir: str | Path) -> tuple[Path, Path]:
    """The table as CSV and JSON (atomic)."""
    import pandas as pd

    from brainalign.atomic import atomic_path, write_text

    out_dir = Path(out_dir)
    frame = pd.DataFrame([asdict(r) for r in rows])
    csv = out_dir / "verify_activations.csv"
    with atomic_path(csv) as tmp:
        frame.to_csv(tmp, index=False)
    js = out_dir / "verify_activations.json"
    write_text(js, json.dumps([asdict(r) for r in rows], indent=1, allow_nan=True) + "\n")
    return csv, js


def format_table(rows: Sequence[LayerComparison]) -> Iterator[str]:
    yield f"{'model':28s} {'layer':14s} {'dim':>6s} {'r':>9s} {'max rel':>9s}  verdict"
    for r in rows:
        yield (f"{r.model:28s} {r.layer:14s} {r.dim:6d} {r.pearson_r:9.5f} "
               f"{r.max_rel_diff:9.2e}  {r.verdict}{'  ' + r.note if r.note else ''}")
