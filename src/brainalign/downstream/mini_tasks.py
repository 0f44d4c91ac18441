"""Offline HEAR-format demo tasks (the HEAR tarballs are not reachable from this machine).

Three tasks, written in the hear-preprocess layout (task_metadata.json, labelvocabulary.csv,
``<split>.json``, ``<rate>/<split>/<file>.wav``, 16-bit PCM mono):

- ``nat165-category``: the 165 real natural sounds (2 s), labelled with their 11 categories,
  split into the 5 folds of the authors' fold file (``presplit_kfold``, top-1 accuracy).
- ``synth-pitch``: like NSynth pitch: harmonic tones of several timbres (harmonic spectra and
  envelopes), one class per MIDI pitch, train/valid/test stratified by pitch (``pitch_acc``
  first, then ``chroma_acc``).
- ``synth-multilabel``: mixtures of 2 or 3 synthetic sources from distinct classes (tones, noise
  bands, click trains, chirps, AM tones, harmonic buzz), multilabel, scored by mAP (then d' and
  ROC AUC) like FSD50K; every class occurs in every split.

Everything is drawn from one seeded numpy generator per task, so a rebuild is byte-identical.
Each task folder is built in a temporary sibling and then swapped in, never left half-written.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from brainalign.atomic import temp_dir, write_json
from brainalign.data.folds import load_folds
from brainalign.data.stimuli import load_stimuli
from brainalign.downstream.config import check_float, check_int, check_keys
from brainalign.errors import InputError

log = logging.getLogger(__name__)

NAT165 = "nat165-category"
SYNTH_PITCH = "synth-pitch"
SYNTH_MULTILABEL = "synth-multilabel"
TIMBRES = ("sine", "saw", "square", "bright", "formant")
SOURCES = ("tone_low", "tone_high", "noise_low", "noise_high", "clicks", "chirp", "am_tone", "buzz")


@dataclass(frozen=True)
class MiniTasksConfig:
    """Sizes of the demo tasks (``params.yaml: mini_tasks``); small enough that all three run
    for one model within a minute on 2 CPU cores."""

    seed: int = 0
    sample_rate: int = 16_000
    clip_seconds: float = 1.0
    pitch_n_pitches: int = 24
    pitch_lowest_midi: int = 48
    pitch_n_timbres: int = 4
    pitch_train_per_pitch: int = 4
    pitch_valid_per_pitch: int = 2
    pitch_test_per_pitch: int = 2
    multilabel_n_classes: int = 8
    multilabel_n_train: int = 120
    multilabel_n_valid: int = 40
    multilabel_n_test: int = 40

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, section: str = "mini_tasks"
                    ) -> MiniTasksConfig:
        p = check_keys(params, section, {f.name for f in fields(cls)})
        kw: dict[str, Any] = {}
        minimum = {"seed": 0, "sample_rate": 8000, "pitch_n_pitches": 2, "pitch_lowest_midi": 21,
                   "pitch_n_timbres": 1, "pitch_train_per_pitch": 1, "pitch_valid_per_pitch": 1,
                   "pitch_test_per_pitch": 1, "multilabel_n_classes": 3,
                   "multilabel_n_train": 2, "multilabel_n_valid": 1, "multilabel_n_test": 1}
        for key, low in minimum.items():
            if key in p:
                kw[key] = check_int(p[key], f"params.yaml: {section}.{key}", low)
        if "clip_seconds" in p:
            kw["clip_seconds"] = check_float(p["clip_seconds"], f"params.yaml: {section}."
                                             "clip_seconds", 0.1, 10.0)
        cfg = cls(**kw)
        if cfg.pitch_n_timbres > len(TIMBRES):
            raise InputError(f"params.yaml: {section}.pitch_n_timbres",
                             f"at most {len(TIMBRES)} timbres exist, got {cfg.pitch_n_timbres}")
        if cfg.multilabel_n_classes > len(SOURCES):
            raise InputError(f"params.yaml: {section}.multilabel_n_classes",
                             f"at most {len(SOURCES)} source classes exist, "
                             f"got {cfg.multilabel_n_classes}")
        top = cfg.pitch_lowest_midi + cfg.pitch_n_pitches - 1
        if _midi_hz(top) * 2 >= cfg.sample_rate / 2:
            raise InputError(f"params.yaml: {section}.pitch_lowest_midi",
                             f"highest pitch (MIDI {top}) leaves no harmonic below Nyquist")
        return cfg

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _midi_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69) / 12)


def _wav_bytes(audio: np.ndarray, rate: int) -> bytes:
    """16-bit PCM mono WAV bytes (deterministic header)."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0).astype(np.float32), rate, format="WAV",
             subtype="PCM_16")
    return buf.getvalue()


def _normalise(audio: np.ndarray, peak: float = 0.5) -> np.ndarray:
    m = float(np.max(np.abs(audio)))
    return audio * (peak / m) if m > 0 else audio


class _TaskWriter:
    """Collects the files of one task in a temporary folder, then swaps it into place."""

    def __init__(self, out_root: Path, name: str, rate: int) -> None:
        self.final = out_root / name
        out_root.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_dir(f".{name}.", out_root)
        self.rate = rate
        self.splits: dict[str, dict[str, list[str]]] = {}

    def add(self, split: str, name: str, audio: np.ndarray, labels: list[str]) -> None:
        folder = self.tmp / str(self.rate) / split
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(_wav_bytes(audio, self.rate))
        self.splits.setdefault(split, {})[name] = labels

    def finish(self, metadata: dict[str, Any], labels: list[str]) -> None:
        for split, data in self.splits.items():
            (self.tmp / f"{split}.json").write_text(json.dumps(data, indent=1, sort_keys=True))
        vocab = "idx,label\n" + "".join(f"{i},{lab}\n" for i, lab in enumerate(labels))
        (self.tmp / "labelvocabulary.csv").write_text(vocab)
        (self.tmp / "task_metadata.json").write_text(json.dumps(metadata, indent=1,
                                                                 sort_keys=True))
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.old")
            if old.exists():
                shutil.rmtree(old)
            self.final.rename(old)
            self.tmp.rename(self.final)
            shutil.rmtree(old)
        else:
            self.tmp.rename(self.final)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _metadata(name: str, cfg: MiniTasksConfig, **fields_: Any) -> dict[str, Any]:
    meta = {"task_name": name.replace("-", "_"), "version": "mini-1", "mode": "mini",
            "embedding_type": "scene", "sample_rate": cfg.sample_rate,
            "builder": "brainalign.downstream.mini_tasks", "builder_params": cfg.as_dict()}
    meta.update(fields_)
    return meta


def build_nat165(wav_dir: str | Path, labels_csv: str | Path, folds_path: str | Path,
                 out_root: str | Path, cfg: MiniTasksConfig) -> int:
    """The 165 natural sounds, 11 categories, the authors' 5 folds (presplit k-fold)."""
    stimuli = load_stimuli(wav_dir, labels_csv, cfg.sample_rate)
    folds = load_folds(folds_path)
    writer = _TaskWriter(Path(out_root), NAT165, cfg.sample_rate)
    try:
        for name, category, audio, fold in zip(stimuli.names, stimuli.categories, stimuli.audio,
                                               folds, strict=True):
            writer.add(f"fold{int(fold):02d}", f"{name}.wav", audio, [category])
        n_folds = int(folds.max()) + 1
        writer.finish(_metadata(
            NAT165, cfg, prediction_type="multiclass", split_mode="presplit_kfold",
            nfolds=n_folds, splits=[f"fold{i:02d}" for i in range(n_folds)],
            sample_duration=len(stimuli.audio[0]) / cfg.sample_rate, evaluation=["top1_acc"],
            source={"wav_dir": Path(wav_dir).name, "folds": Path(folds_path).name,
                    "order": "canonical (ascending stimulus id)"},
        ), sorted(set(stimuli.categories)))
    except BaseException:
        writer.abort()
        raise
    return len(stimuli.names)


def _envelope(kind: int, n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / rate
    attack = rng.uniform(0.005, 0.05)
    if kind == 0:  # plucked: fast attack, exponential decay
        env = np.exp(-t / rng.uniform(0.15, 0.6))
    elif kind == 1:  # sustained with release
        env = np.clip((t[-1] - t) / rng.uniform(0.05, 0.2), 0.0, 1.0)
    else:  # bowed: slow attack
        attack = rng.uniform(0.1, 0.3)
        env = np.ones(n)
    return env * np.clip(t / attack, 0.0, 1.0)


def _harmonic_tone(midi: int, timbre: str, cfg: MiniTasksConfig, rng: np.random.Generator
                   ) -> np.ndarray:
    rate, n = cfg.sample_rate, int(round(cfg.clip_seconds * cfg.sample_rate))
    t = np.arange(n) / rate
    f0 = _midi_hz(midi + rng.uniform(-0.2, 0.2))  # at most 20 cents off: the label stays exact
    vibrato = 1.0 + rng.uniform(0.0, 0.004) * np.sin(2 * np.pi * rng.uniform(4, 7) * t)
    phase0 = 2 * np.pi * np.cumsum(f0 * vibrato) / rate
    n_harm = int((rate / 2 * 0.95) // (f0 * 1.01))
    k = np.arange(1, n_harm + 1)
    if timbre == "sine":
        amps = 1.0 / k**3
    elif timbre == "saw":
        amps = 1.0 / k
    elif timbre == "square":
        amps = np.where(k % 2 == 1, 1.0 / k, 0.0)
    elif timbre == "bright":
        amps = 1.0 / np.sqrt(k)
    else:  # formant: a resonance between 800 and 2500 Hz over a 1/k spectrum
        fc = rng.uniform(800, 2500)
        amps = (1.0 / k) * (0.2 + np.exp(-0.5 * ((k * f0 - fc) / 250.0) ** 2))
    amps = amps * rng.uniform(0.7, 1.3, size=n_harm)
    phases = rng.uniform(0, 2 * np.pi, size=n_harm)
    audio = np.zeros(n)
    for a, kk, ph in zip(amps, k, phases, strict=True):
        if a > 0:
            audio += a * np.sin(kk * phase0 + ph)
    audio *= _envelope(int(rng.integers(3)), n, rate, rng)
    audio = _normalise(audio, rng.uniform(0.2, 0.7))
    return audio + rng.normal(0.0, 10 ** (rng.uniform(-4.0, -2.5)), size=n)


def build_synth_pitch(out_root: str | Path, cfg: MiniTasksConfig) -> int:
    """Harmonic tones of several timbres; label = MIDI pitch; train/valid/test by pitch."""
    rng = np.random.default_rng([cfg.seed, 1])
    writer = _TaskWriter(Path(out_root), SYNTH_PITCH, cfg.sample_rate)
    per_split = {"train": cfg.pitch_train_per_pitch, "valid": cfg.pitch_valid_per_pitch,
                 "test": cfg.pitch_test_per_pitch}
    timbres = TIMBRES[:cfg.pitch_n_timbres]
    count = 0
    try:
        for midi in range(cfg.pitch_lowest_midi, cfg.pitch_lowest_midi + cfg.pitch_n_pitches):
            for split, n_clips in per_split.items():
                for j in range(n_clips):
                    timbre = timbres[j % len(timbres)]
                    audio = _harmonic_tone(midi, timbre, cfg, rng)
                    writer.add(split, f"pitch{midi:03d}_{split}{j:03d}_{timbre}.wav", audio,
                               [str(midi)])
                    count += 1
        labels = [str(m) for m in range(cfg.pitch_lowest_midi,
                                        cfg.pitch_lowest_midi + cfg.pitch_n_pitches)]
        writer.finish(_metadata(
            SYNTH_PITCH, cfg, prediction_type="multiclass", split_mode="trainvaltest",
            splits=["train", "valid", "test"], sample_duration=cfg.clip_seconds,
            evaluation=["pitch_acc", "chroma_acc"], timbres=list(timbres),
        ), sorted(labels))
    except BaseException:
        writer.abort()
        raise
    return count


def _source(kind: str, cfg: MiniTasksConfig, rng: np.random.Generator) -> np.ndarray:
    rate, n = cfg.sample_rate, int(round(cfg.clip_seconds * cfg.sample_rate))
    t = np.arange(n) / rate
    nyq = rate / 2

    def band_noise(lo: float, hi: float) -> np.ndarray:
        spec = np.fft.rfft(rng.normal(size=n))
        f = np.fft.rfftfreq(n, 1 / rate)
        spec[(f < lo) | (f > hi)] = 0
        return np.fft.irfft(spec, n)

    if kind == "tone_low":
        x = np.sin(2 * np.pi * rng.uniform(150, 300) * t + rng.uniform(0, 2 * np.pi))
    elif kind == "tone_high":
        x = np.sin(2 * np.pi * rng.uniform(1500, min(3000, nyq * 0.8)) * t)
    elif kind == "noise_low":
        x = band_noise(20, 500)
    elif kind == "noise_high":
        x = band_noise(min(3000, nyq * 0.6), nyq)
    elif kind == "clicks":
        x = np.zeros(n)
        period = int(rate / rng.uniform(5, 15))
        x[int(rng.integers(period))::period] = 1.0
        x = np.convolve(x, np.hanning(9), mode="same")
    elif kind == "chirp":
        f_lo, f_hi = rng.uniform(300, 600), rng.uniform(1500, min(4000, nyq * 0.9))
        inst = f_lo + (f_hi - f_lo) * t / t[-1]
        x = np.sin(2 * np.pi * np.cumsum(inst) / rate)
    elif kind == "am_tone":
        carrier = np.sin(2 * np.pi * rng.uniform(600, 1000) * t)
        x = carrier * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(4, 8) * t))
    else:  # buzz: harmonic complex with a low f0
        f0 = rng.uniform(100, 200)
        k = np.arange(1, int((nyq * 0.9) // f0) + 1)
        x = np.sum(np.sin(2 * np.pi * f0 * k[:, None] * t[None, :]) / k[:, None], axis=0)
    start = int(rng.integers(0, n // 4))
    stop = int(rng.integers(3 * n // 4, n + 1))
    env = np.zeros(n)
    ramp = max(2, int(0.01 * rate))
    seg = np.ones(stop - start)
    seg[:ramp] = np.linspace(0, 1, ramp)
    seg[-ramp:] = np.linspace(1, 0, ramp)
    env[start:stop] = seg
    return _normalise(x * env, 1.0) * 10 ** (rng.uniform(-6, 0) / 20)


def build_synth_multilabel(out_root: str | Path, cfg: MiniTasksConfig) -> int:
    """Mixtures of 2-3 sources from distinct classes; multilabel (mAP); all classes per split."""
    rng = np.random.default_rng([cfg.seed, 2])
    classes = SOURCES[:cfg.multilabel_n_classes]
    sizes = {"train": cfg.multilabel_n_train, "valid": cfg.multilabel_n_valid,
             "test": cfg.multilabel_n_test}
    writer = _TaskWriter(Path(out_root), SYNTH_MULTILABEL, cfg.sample_rate)
    count = 0
    try:
        for split, n_clips in sizes.items():
            # The first clips cycle through the classes so every class occurs in every split.
            order = list(rng.permutation(len(classes)))
            seen: set[str] = set()
            for j in range(n_clips):
                k = int(rng.integers(2, 4))
                chosen = list(rng.choice(len(classes), size=k, replace=False))
                if j * 2 < len(classes):
                    lead = [order[(2 * j) % len(classes)], order[(2 * j + 1) % len(classes)]]
                    rest = [c for c in chosen if c not in lead]
                    chosen = (lead + rest)[:k]
                names = sorted(classes[c] for c in chosen)
                seen.update(names)
                mix = sum(_source(name, cfg, rng) for name in names)
                audio = _normalise(mix, rng.uniform(0.3, 0.8))
                writer.add(split, f"mix_{split}{j:04d}.wav", audio, names)
                count += 1
            if seen != set(classes):
                raise InputError(f"params.yaml: mini_tasks.multilabel_n_{split}",
                                 f"too few clips for every class to occur in split {split!r}: "
                                 f"missing {sorted(set(classes) - seen)}")
        writer.finish(_metadata(
            SYNTH_MULTILABEL, cfg, prediction_type="multilabel", split_mode="trainvaltest",
            splits=["train", "valid", "test"], sample_duration=cfg.clip_seconds,
            evaluation=["mAP", "d_prime", "aucroc"], sources_per_clip=[2, 3],
        ), sorted(classes))
    except BaseException:
        writer.abort()
        raise
    return count


def tree_digest(root: str | Path) -> str:
    """SHA-256 over every file path and content under ``root`` (to check rebuilds are identical)."""
    root = Path(root)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def build_mini_tasks(wav_dir: str | Path, labels_csv: str | Path, folds_path: str | Path,
                     out_root: str | Path, cfg: MiniTasksConfig | None = None) -> dict[str, int]:
    """Build all three demo tasks under ``out_root``; returns clip counts per task."""
    from brainalign.downstream.probe import torch_threads

    cfg = cfg or MiniTasksConfig()
    out_root = Path(out_root)
    # One torch thread: resampling short clips gains nothing from more, and on a shared 2-core
    # machine two OpenMP threads made torchaudio's resampler 20-80x slower.
    with torch_threads(1):
        counts = {
            NAT165: build_nat165(wav_dir, labels_csv, folds_path, out_root, cfg),
            SYNTH_PITCH: build_synth_pitch(out_root, cfg),
            SYNTH_MULTILABEL: build_synth_multilabel(out_root, cfg),
        }
    write_json(out_root / "manifest.json", {
        "tasks": {name: {"clips": n, "sha256": tree_digest(out_root / name)}
                  for name, n in counts.items()},
        "params": cfg.as_dict(),
    })
    log.info("mini tasks built in %s: %s", out_root, counts)
    return counts
