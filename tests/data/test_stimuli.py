"""Stimuli: canonical order, categories, audio loading and every bad wav."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf

from brainalign.data.stimuli import (
    CATEGORY_COUNTS,
    canonical_names,
    check_canonical,
    load_stimuli,
    read_category_labels,
    read_wav,
    stimulus_id,
)
from brainalign.errors import InputError


def test_canonical_order_is_ascending_stimulus_id():
    names = canonical_names()
    assert len(names) == 165
    assert names[:3] == ("stim5_alarm_clock", "stim7_applause", "stim11_baby_crying")
    ids = [stimulus_id(n) for n in names]
    assert ids == sorted(ids) and len(set(ids)) == 165


def test_category_labels_match_published_counts(github_inputs):
    labels = read_category_labels(github_inputs["labels_csv"])
    counts = {c: list(labels.values()).count(c) for c in CATEGORY_COUNTS}
    assert counts == CATEGORY_COUNTS
    assert labels["stim5_alarm_clock"] == "Mechanical"


def test_fold_file_is_stratified_in_canonical_order(github_inputs):
    """Evidence for the canonical order (data-formats.md): per-category fold counts differ <= 2."""
    from brainalign.data.folds import load_folds

    labels = read_category_labels(github_inputs["labels_csv"])
    folds = load_folds(github_inputs["folds"])
    spreads = []
    for cat in CATEGORY_COUNTS:
        idx = [i for i, n in enumerate(canonical_names()) if labels[n] == cat]
        counts = np.bincount(folds[idx], minlength=5)
        spreads.append(counts.max() - counts.min())
    assert max(spreads) == 2 and sorted(spreads)[-2] <= 1


def test_load_stimuli_resamples_to_requested_rate(github_inputs):
    stim = load_stimuli(github_inputs["wav_dir"], github_inputs["labels_csv"], 16_000)
    assert stim.names == canonical_names()
    assert stim.sample_rate == 16_000
    assert all(a.dtype == np.float32 and a.ndim == 1 and a.shape == (32_000,) for a in stim.audio)
    assert stim.categories[0] == "Mechanical"
    raw, rate = read_wav(github_inputs["wav_dir"] / "stim5_alarm_clock.wav")
    assert rate == 44_100 and raw.shape == (88_200,)
    # Resampling keeps the signal: RMS within 2 % (the sounds are band-limited speech/music/noise).
    rms_in, rms_out = np.sqrt(np.mean(raw**2)), np.sqrt(np.mean(stim.audio[0] ** 2))
    assert abs(rms_out / rms_in - 1) < 0.02


@pytest.fixture
def wav_copy(github_inputs, tmp_path):
    """A writable copy of the 165 wavs."""
    dst = tmp_path / "wav"
    shutil.copytree(github_inputs["wav_dir"], dst, copy_function=shutil.copyfile)
    dst.chmod(0o755)  # the mirror may be read-only (as in CI and the Docker image)
    return dst


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("stereo", "expected mono audio, found 2 channels"),
        ("rate", "expected a sample rate of 44100 Hz, found 16000 Hz"),
        ("empty", "holds no samples"),
        ("corrupt", "not a readable audio file"),
    ],
)
def test_bad_wav_names_the_file(wav_copy, github_inputs, damage, message):
    target = wav_copy / "stim7_applause.wav"
    if damage == "stereo":
        sf.write(target, np.zeros((100, 2), dtype=np.float32), 44_100)
    elif damage == "rate":
        sf.write(target, np.zeros(100, dtype=np.float32), 16_000)
    elif damage == "empty":
        sf.write(target, np.zeros(0, dtype=np.float32), 44_100)
    else:
        target.write_bytes(b"RIFF\x00\x00garbage")
    with pytest.raises(InputError, match=message) as err:
        load_stimuli(wav_copy, github_inputs["labels_csv"], 16_000)
    assert "stim7_applause.wav" in str(err.value)


def test_missing_and_extra_sounds_are_errors(wav_copy, github_inputs):
    (wav_copy / "stim7_applause.wav").unlink()
    with pytest.raises(InputError, match=r"missing \['stim7_applause'\]"):
        load_stimuli(wav_copy, github_inputs["labels_csv"], 16_000)
    sf.write(wav_copy / "stim7_applause.wav", np.zeros(10, dtype=np.float32), 44_100)
    sf.write(wav_copy / "stim9999_extra.wav", np.zeros(10, dtype=np.float32), 44_100)
    with pytest.raises(InputError, match="unexpected"):
        load_stimuli(wav_copy, github_inputs["labels_csv"], 16_000)


def test_order_mismatch_is_reported_with_position():
    names = list(canonical_names())
    names[0], names[1] = names[1], names[0]
    with pytest.raises(InputError, match="position 0 holds 'stim7_applause'"):
        check_canonical(names, "x")


def test_bad_stimulus_name():
    with pytest.raises(InputError, match="stimulus name"):
        stimulus_id("alarm_clock")
