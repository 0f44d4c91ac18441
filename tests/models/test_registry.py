"""Registry: entries, weight files and checksums, unknown names."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from brainalign.errors import InputError
from brainalign.models.extract import DEMO_MODELS, build_runner
from brainalign.models.registry import (
    TRAINING_TYPES,
    get_spec,
    model_names,
    sha256_file,
    verify_weights,
    weights_file,
)

PRETRAINED_FAMILIES = {"CREPE", "PESTO", "FCPE", "GE2E", "aiSFX", "SoundNet"}


def test_every_entry_is_complete() -> None:
    names = model_names()
    assert len(names) == len(set(names))
    families = set()
    for name in names:
        spec = get_spec(name)
        assert spec.name == name and spec.label and spec.family
        assert spec.training in TRAINING_TYPES
        assert spec.sample_rate > 0 and spec.layers and spec.min_samples >= 1
        assert callable(spec.builder())
        if spec.weights is not None:
            assert len(spec.weights.sha256) == 64
            families.add(spec.family)
        else:
            assert spec.training == "untrained"
    assert families == PRETRAINED_FAMILIES
    assert get_spec("spectemp").layers == ("avgpool",)
    assert set(DEMO_MODELS) <= set(names)


def test_random_init_controls() -> None:
    controls = [get_spec(n) for n in model_names() if get_spec(n).random_init]
    assert len(controls) >= 2
    for spec in controls:
        base = get_spec(spec.name.removesuffix("-random"))
        assert spec.weights is None and spec.training == "untrained"
        assert spec.layers == base.layers and spec.sample_rate == base.sample_rate


@pytest.mark.parametrize("name", ["crepe-full", "crepe-tiny", "pesto", "fcpe", "resemblyzer",
                                  "aisfx", "soundnet"])
def test_shipped_weights_match_pinned_checksum(name: str) -> None:
    located = weights_file(name)
    assert located is not None
    path, sha = located
    assert path.is_file()
    assert sha256_file(path) == sha
    assert verify_weights(get_spec(name)) == path


def test_weightless_models_have_no_file() -> None:
    assert weights_file("spectemp") is None
    assert weights_file("soundnet-random") is None


def test_unknown_model_suggests_closest() -> None:
    with pytest.raises(InputError, match="did you mean 'crepe-tiny'"):
        get_spec("crepe-tinny")
    with pytest.raises(InputError, match="unknown model 'wav2vec2'"):
        get_spec("wav2vec2")


def test_checksum_mismatch_is_refused_before_loading(tmp_path) -> None:
    spec = get_spec("crepe-tiny")
    path, _ = weights_file("crepe-tiny")
    bad = tmp_path / "tiny.pth"
    shutil.copyfile(path, bad)
    with bad.open("r+b") as fh:
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(InputError, match="checksum mismatch"):
        verify_weights(spec, bad)
    # a registry entry pinning another checksum refuses to build at all
    wrong = dataclasses.replace(spec, weights=dataclasses.replace(spec.weights, sha256="0" * 64))
    with pytest.raises(InputError, match="checksum mismatch"):
        wrong.builder()(wrong, __import__("torch").device("cpu"), {})


def test_missing_weight_file(tmp_path) -> None:
    with pytest.raises(InputError, match="not found"):
        verify_weights(get_spec("soundnet"), tmp_path / "absent.npy")


def test_build_rejects_bad_option() -> None:
    from brainalign.models.extract import ExtractConfig

    cfg = ExtractConfig(options={"crepe-tiny": {"hop_ms": -1}})
    with pytest.raises(InputError, match="hop_ms"):
        build_runner("crepe-tiny", cfg)
