"""Helpers for the downstream tests: tiny HEAR-format tasks and deterministic embedders."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

RATE = 16_000
DURATION = 0.25
FREQS = {"a": 300.0, "b": 700.0, "c": 1500.0, "d": 3100.0}


def tone(label_freqs: list[float], rng: np.random.Generator, rate: int = RATE) -> np.ndarray:
    """A short mixture of sines (one per label) plus noise."""
    t = np.arange(int(DURATION * rate)) / rate
    x = sum(np.sin(2 * np.pi * f * (1 + rng.uniform(-0.02, 0.02)) * t) for f in label_freqs)
    return (0.2 * x + 0.05 * rng.normal(size=t.size)).astype(np.float32)


def write_task(
    root: Path,
    splits: dict[str, dict[str, list[str]]],
    meta: dict[str, Any],
    rate: int = RATE,
    seed: int = 0,
    audio_rate: int | None = None,
) -> Path:
    """Write a HEAR task folder: metadata, split JSONs and audio whose content follows the labels.

    ``audio_rate`` lets a test write files whose real rate differs from their folder's rate.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "task_metadata.json").write_text(json.dumps(meta))
    for split, files in splits.items():
        (root / f"{split}.json").write_text(json.dumps(files))
        folder = root / str(rate) / split
        folder.mkdir(parents=True, exist_ok=True)
        for name, labels in files.items():
            freqs = [FREQS.get(lab, 200.0 + 97.0 * (sum(map(ord, lab)) % 40)) for lab in labels]
            sf.write(folder / name, tone(freqs, rng, rate), audio_rate or rate, subtype="PCM_16")
    return root


def base_meta(**kw: Any) -> dict[str, Any]:
    meta = {"task_name": "toy", "embedding_type": "scene", "prediction_type": "multiclass",
            "split_mode": "trainvaltest", "evaluation": ["top1_acc"], "sample_duration": DURATION}
    meta.update(kw)
    return meta


def class_split(prefix: str, labels: list[str], per_label: int) -> dict[str, list[str]]:
    return {f"{prefix}_{lab}_{i}.wav": [lab] for lab in labels for i in range(per_label)}



def band_embedder(n_bands: int = 12, proj_dim: int = 20, seed: int = 0
                  ) -> Callable[[list[np.ndarray], int], dict[str, np.ndarray]]:
    """Deterministic two-layer embedder: log band energies of the spectrum ("bands", n_bands
    dims) and a fixed random projection of the log spectrum ("proj", proj_dim dims)."""
    n_fft = 256
    proj = np.random.default_rng(seed).normal(size=(n_fft // 2 + 1, proj_dim))
    edges = np.linspace(0, n_fft // 2 + 1, n_bands + 1).astype(int)

    def embed(audio: list[np.ndarray], sample_rate: int) -> dict[str, np.ndarray]:
        bands, projs = [], []
        for clip in audio:
            n = (len(clip) // n_fft) * n_fft
            frames = clip[:n].reshape(-1, n_fft) * np.hanning(n_fft)
            logspec = np.log(np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-6)  # (T, F)
            bands.append([logspec[:, a:b].mean() for a, b in zip(edges[:-1], edges[1:],
                                                                 strict=True)])
            projs.append(np.tanh(logspec @ proj / 40).mean(axis=0))
        return {"bands": np.array(bands, np.float32), "proj": np.array(projs, np.float32)}

    return embed
