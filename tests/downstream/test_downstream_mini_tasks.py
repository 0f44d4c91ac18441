"""The offline HEAR-format demo tasks: content, HEAR layout, byte-identical rebuilds."""

from __future__ import annotations

import json
import os
import stat
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from brainalign.data.folds import load_folds
from brainalign.data.stimuli import CATEGORY_COUNTS
from brainalign.downstream.hear_tasks import load_task
from brainalign.downstream.mini_tasks import (
    NAT165,
    SYNTH_MULTILABEL,
    SYNTH_PITCH,
    MiniTasksConfig,
    tree_digest,
)
from brainalign.downstream.stages import run_build_mini_tasks
from brainalign.errors import InputError

SMALL = {"pitch_n_pitches": 5, "pitch_lowest_midi": 60, "pitch_train_per_pitch": 4,
         "pitch_valid_per_pitch": 2, "pitch_test_per_pitch": 2, "multilabel_n_train": 24,
         "multilabel_n_valid": 8, "multilabel_n_test": 8, "clip_seconds": 0.5}


@pytest.fixture(scope="module")
def built(github_inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mini") / "tasks"
    counts = run_build_mini_tasks(github_inputs["wav_dir"], github_inputs["labels_csv"],
                                  github_inputs["folds"], root, SMALL)
    assert counts == {NAT165: 165, SYNTH_PITCH: 40, SYNTH_MULTILABEL: 40}
    return root


def test_nat165_task(built: Path, github_inputs: dict[str, Path]) -> None:
    task = load_task(built / NAT165)
    assert task.split_mode == "presplit_kfold" and task.evaluation == ("top1_acc",)
    assert task.splits == tuple(f"fold{i:02d}" for i in range(5))
    assert task.labels == tuple(sorted(CATEGORY_COUNTS))
    assert [len(task.split_files[s]) for s in task.splits] == [33] * 5
    counts = Counter(lab for s in task.splits for labels in task.split_labels[s] for lab in labels)
    assert counts == Counter(CATEGORY_COUNTS)
    # the fold of each sound is the fold file's (canonical order = ascending stimulus id)
    folds = load_folds(github_inputs["folds"])
    fold_of = {name: int(s[4:]) for s in task.splits for name in task.split_files[s]}
    ordered = sorted(fold_of, key=lambda n: int(n.split("_")[0][4:]))
    assert [fold_of[n] for n in ordered] == folds.tolist()
    info = sf.info(str(built / NAT165 / "16000" / "fold00" / task.split_files["fold00"][0]))
    assert (info.samplerate, info.channels, info.frames) == (16_000, 1, 32_000)


def test_task_folders_have_the_usual_mode(built: Path) -> None:
    # mkdtemp makes 0700 folders; a task folder is an output like any file (umask mode)
    umask = os.umask(0)
    os.umask(umask)
    for name in (NAT165, SYNTH_PITCH, SYNTH_MULTILABEL):
        assert stat.S_IMODE((built / name).stat().st_mode) == 0o777 & ~umask, name


def test_synth_pitch_task(built: Path) -> None:
    task = load_task(built / SYNTH_PITCH)
    assert task.split_mode == "trainvaltest"
    assert task.evaluation == ("pitch_acc", "chroma_acc")
    assert task.labels == ("60", "61", "62", "63", "64")
    assert [len(task.split_files[s]) for s in task.splits] == [20, 10, 10]
    # the tone's fundamental is the labelled MIDI pitch (within 20 cents)
    name = task.split_files["train"][0]
    audio, rate = sf.read(str(built / SYNTH_PITCH / "16000" / "train" / name))
    spec = np.abs(np.fft.rfft(audio * np.hanning(audio.size), n=8 * audio.size))
    freqs = np.fft.rfftfreq(8 * audio.size, 1 / rate)
    midi = int(task.split_labels["train"][0][0])
    f0 = 440 * 2 ** ((midi - 69) / 12)
    band = (freqs > f0 * 0.97) & (freqs < f0 * 1.03)
    assert spec[band].max() > 0.2 * spec[(freqs > 50)].max()


def test_synth_multilabel_task(built: Path) -> None:
    task = load_task(built / SYNTH_MULTILABEL)
    assert task.prediction_type == "multilabel" and task.evaluation[0] == "mAP"
    for split in task.splits:
        sizes = {len(labels) for labels in task.split_labels[split]}
        assert sizes <= {2, 3}
        assert task.targets(split).sum(axis=0).min() >= 1  # every class in every split


def test_rebuild_is_byte_identical(built: Path, github_inputs: dict[str, Path],
                                   tmp_path: Path) -> None:
    again = tmp_path / "tasks"
    run_build_mini_tasks(github_inputs["wav_dir"], github_inputs["labels_csv"],
                         github_inputs["folds"], again, SMALL)
    for name in (NAT165, SYNTH_PITCH, SYNTH_MULTILABEL):
        assert tree_digest(again / name) == tree_digest(built / name)
    manifest = json.loads((again / "manifest.json").read_text())
    assert manifest["tasks"][NAT165]["sha256"] == tree_digest(built / NAT165)
    # rebuilding over an existing tree replaces it and leaves no temporary folders
    run_build_mini_tasks(github_inputs["wav_dir"], github_inputs["labels_csv"],
                         github_inputs["folds"], again, {**SMALL, "seed": 1})
    assert sorted(p.name for p in again.iterdir()) == sorted(
        [NAT165, SYNTH_PITCH, SYNTH_MULTILABEL, "manifest.json"])
    assert tree_digest(again / SYNTH_PITCH) != tree_digest(built / SYNTH_PITCH)
    # the real sounds do not depend on the seed (only the recorded builder params do)
    assert tree_digest(again / NAT165 / "16000") == tree_digest(built / NAT165 / "16000")


def test_params_validation() -> None:
    with pytest.raises(InputError, match=r"params.yaml: mini_tasks.n_clips: unknown key"):
        MiniTasksConfig.from_params({"n_clips": 3})
    with pytest.raises(InputError, match=r"mini_tasks.pitch_n_timbres"):
        MiniTasksConfig.from_params({"pitch_n_timbres": 9})
    with pytest.raises(InputError, match=r"mini_tasks.sample_rate: expected an integer"):
        MiniTasksConfig.from_params({"sample_rate": "16k"})
    assert MiniTasksConfig.from_params({}) == MiniTasksConfig()


def test_too_few_multilabel_clips_for_all_classes(tmp_path: Path) -> None:
    from brainalign.downstream.mini_tasks import build_synth_multilabel

    cfg = MiniTasksConfig.from_params({"multilabel_n_valid": 2, "clip_seconds": 0.2})
    with pytest.raises(InputError, match="multilabel_n_valid"):
        build_synth_multilabel(tmp_path, cfg)
    assert not any(tmp_path.iterdir())  # nothing half-written
