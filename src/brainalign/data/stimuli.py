"""The 165 natural sounds: canonical order, category labels and audio at any sample rate.

Canonical order = ascending numeric stimulus id (``stim5_alarm_clock``, ``stim7_applause``, ...),
the order of the lab release's ``neural_stim_meta.npy`` in which the fold file is indexed
(data-formats.md). Every output records the order it uses.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import soundfile as sf

from brainalign.errors import InputError

_STIM_RE = re.compile(r"^stim(\d+)_([A-Za-z0-9_\-]+)$")

CATEGORY_COUNTS = {
    "Music": 24,
    "Song": 11,
    "EngSpeech": 10,
    "ForSpeech": 7,
    "HumVoc": 13,
    "HumNonVoc": 15,
    "AniVoc": 10,
    "AniNonVoc": 5,
    "Nature": 4,
    "Mechanical": 39,
    "EnvSound": 27,
}
"""Sounds per category in the GitHub copy's category_labels.csv (data-formats.md)."""

GITHUB_SAMPLE_RATE = 44_100
LAB_SAMPLE_RATE = 20_000
N_SOUNDS = 165


def stimulus_id(name: str) -> int:
    """Numeric id of a stimulus stem such as ``stim5_alarm_clock`` (``.wav`` suffix allowed)."""
    stem = name.removesuffix(".wav")
    match = _STIM_RE.match(stem)
    if match is None:
        raise InputError(name, "expected a stimulus name like 'stim5_alarm_clock'")
    return int(match.group(1))


def canonical_sort(names: list[str] | tuple[str, ...]) -> list[str]:
    """Sort stimulus stems into the canonical order (ascending numeric id)."""
    return sorted(names, key=stimulus_id)


@cache
def canonical_names() -> tuple[str, ...]:
    """The 165 canonical stimulus stems, in canonical order (from the committed registry)."""
    registry = json.loads(resources.files("brainalign.data").joinpath("registry.json").read_text())
    stems = [Path(e["path"]).stem for e in registry["github"] if e["path"].endswith(".wav")]
    names = tuple(canonical_sort(stems))
    if len(names) != N_SOUNDS:  # pragma: no cover - guards the committed registry
        raise InputError("registry.json", f"expected {N_SOUNDS} stimuli, found {len(names)}")
    return names


def check_canonical(names: list[str] | tuple[str, ...], where: str | Path) -> None:
    """Raise unless ``names`` are exactly the canonical 165 stems in canonical order."""
    names = tuple(n.removesuffix(".wav") for n in names)
    expected = canonical_names()
    if names == expected:
        return
    missing = sorted(set(expected) - set(names), key=stimulus_id)
    extra = sorted(set(names) - set(expected))
    if missing or extra:
        raise InputError(
            where,
            f"expected the canonical {N_SOUNDS} sounds; missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''} ({len(missing)}), unexpected {extra[:5]}"
            f"{'...' if len(extra) > 5 else ''} ({len(extra)})",
        )
    first = next(i for i, (a, b) in enumerate(zip(names, expected, strict=True)) if a != b)
    raise InputError(
        where,
        f"sounds are not in canonical order (ascending stimulus id): position {first} holds "
        f"{names[first]!r}, expected {expected[first]!r}",
    )


def read_category_labels(path: str | Path) -> dict[str, str]:
    """Read ``category_labels.csv`` (no header, ``stim_name,category``) into {stem: category}."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found (run `brainalign fetch`)")
    labels: dict[str, str] = {}
    with path.open(newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if not row:
                continue
            if len(row) != 2:
                raise InputError(path, f"line {lineno}: expected 'stim_name,category', got {row}")
            stem, category = row[0].strip().removesuffix(".wav"), row[1].strip()
            stimulus_id(stem)
            if category not in CATEGORY_COUNTS:
                raise InputError(
                    path,
                    f"line {lineno}: unknown category {category!r}; "
                    f"expected one of {sorted(CATEGORY_COUNTS)}",
                )
            labels[stem] = category
    check_canonical(canonical_sort(list(labels)), path)
    return labels


def read_wav(path: str | Path, expected_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read a mono wav as float32 in [-1, 1]; returns (samples, sample_rate).

    Raises :class:`InputError` for a missing, empty, corrupt or multi-channel file, or one whose
    rate differs from ``expected_rate`` when given.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        info = sf.info(str(path))
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise InputError(path, f"not a readable audio file ({exc})") from None
    if info.channels != 1:
        raise InputError(path, f"expected mono audio, found {info.channels} channels")
    if audio.shape[0] == 0:
        raise InputError(path, "audio file holds no samples")
    if expected_rate is not None and rate != expected_rate:
        raise InputError(path, f"expected a sample rate of {expected_rate} Hz, found {rate} Hz")
    if not np.isfinite(audio).all():
        raise InputError(path, "audio holds NaN or infinite samples")
    return audio[:, 0], int(rate)


RESAMPLERS = ("soxr_hq", "torchaudio")


def resample(audio: np.ndarray, orig_rate: int, target_rate: int,
             method: str = "soxr_hq") -> np.ndarray:
    """Resample mono float32 audio from ``orig_rate`` to ``target_rate``.

    ``soxr_hq``: what ``librosa.load(path, sr=target)`` does in the authors' librosa 0.11
    (``res_type='soxr_hq'``: ``soxr.resample(..., quality='soxr_hq')``), float32 in and out.
    ``torchaudio``: torchaudio's band-limited sinc interpolation (Hann window, width 6).
    """
    if orig_rate == target_rate:
        return np.ascontiguousarray(audio, dtype=np.float32)
    if method == "soxr_hq":
        import soxr

        out = soxr.resample(np.asarray(audio, dtype=np.float32), orig_rate, target_rate,
                            quality="soxr_hq")
        return np.ascontiguousarray(out, dtype=np.float32)
    if method == "torchaudio":
        import torch
        import torchaudio.functional as taf

        out = taf.resample(
            torch.from_numpy(np.asarray(audio, dtype=np.float32)), orig_rate, target_rate
        )
        return out.numpy().astype(np.float32, copy=False)
    raise InputError("resampler", f"expected one of {list(RESAMPLERS)}, got {method!r}")


@dataclass(frozen=True)
class StimulusSet:
    """The 165 sounds in canonical order, at one sample rate."""

    names: tuple[str, ...]
    categories: tuple[str, ...]
    audio: tuple[np.ndarray, ...] = field(repr=False)
    sample_rate: int
    source: str
    sha256: tuple[str, ...] = ()

    @property
    def ids(self) -> np.ndarray:
        return np.array([stimulus_id(n) for n in self.names], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.names)


def load_stimuli(
    wav_dir: str | Path,
    labels_csv: str | Path,
    sample_rate: int | None,
    source_rate: int | None = GITHUB_SAMPLE_RATE,
    resampler: str = "soxr_hq",
) -> StimulusSet:
    """Load the 165 sounds from ``wav_dir`` in canonical order.

    ``source_rate`` is the rate every file must have (44.1 kHz for the GitHub copy, 20 kHz for
    the lab release); None accepts any rate shared by all files. ``sample_rate`` resamples
    each sound to that rate with ``resampler``; None keeps the files' own rate.
    """
    import hashlib

    wav_dir = Path(wav_dir)
    if not wav_dir.is_dir():
        raise InputError(wav_dir, "stimulus folder not found (run `brainalign fetch`)")
    stems = [p.stem for p in wav_dir.glob("*.wav")]
    names = canonical_sort(stems)
    check_canonical(names, wav_dir)
    labels = read_category_labels(labels_csv)
    audio, hashes, rates = [], [], set()
    for name in names:
        path = wav_dir / f"{name}.wav"
        samples, rate = read_wav(path, expected_rate=source_rate)
        rates.add(rate)
        hashes.append(hashlib.sha256(path.read_bytes()).hexdigest())
        if sample_rate is not None:
            samples = resample(samples, rate, sample_rate, resampler)
        audio.append(samples)
    if len(rates) != 1:
        raise InputError(wav_dir, f"expected every sound at one sample rate, found {sorted(rates)}")
    return StimulusSet(
        names=tuple(names),
        categories=tuple(labels[n] for n in names),
        audio=tuple(audio),
        sample_rate=sample_rate if sample_rate is not None else rates.pop(),
        source=str(wav_dir),
        sha256=tuple(hashes),
    )
