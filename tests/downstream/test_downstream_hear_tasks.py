"""HEAR task reader: metadata validation, split rules, labels, audio rates."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from brainalign.downstream.hear_tasks import REQUIRED_FIELDS, load_task
from brainalign.errors import InputError

from .ds_helpers import RATE, class_split


def test_trainvaltest_task(toy_trainvaltest: Path) -> None:
    task = load_task(toy_trainvaltest)
    assert task.splits == ("train", "valid", "test")
    assert task.labels == ("a", "b", "c")
    assert task.evaluation == ("top1_acc",)
    [ds] = task.data_splits()
    assert (ds.train, ds.valid, ds.test) == (("train",), ("valid",), ("test",))
    y = task.targets("train")
    assert y.shape == (18, 3) and np.all(y.sum(axis=1) == 1)
    assert task.split_files["train"] == tuple(sorted(task.split_files["train"]))


def test_kfold_split_rules(toy_kfold: Path) -> None:
    """Split i tests fold i, validates on fold (i+1) mod k, trains on the rest (heareval)."""
    task = load_task(toy_kfold)
    assert task.splits == ("fold00", "fold01", "fold02", "fold03")
    got = [(ds.test, ds.valid, ds.train) for ds in task.data_splits()]
    assert got == [
        (("fold00",), ("fold01",), ("fold02", "fold03")),
        (("fold01",), ("fold02",), ("fold00", "fold03")),
        (("fold02",), ("fold03",), ("fold00", "fold01")),
        (("fold03",), ("fold00",), ("fold01", "fold02")),
    ]


def test_kfold_split_names_from_metadata(make_task: Callable[..., Path]) -> None:
    splits = {name: class_split(name, ["a", "b"], 2) for name in ("x2", "x0", "x1")}
    task = load_task(make_task("named", splits, split_mode="presplit_kfold",
                               splits=["x2", "x0", "x1"]))
    assert [ds.test for ds in task.data_splits()] == [("x0",), ("x1",), ("x2",)]


@pytest.mark.parametrize("field", REQUIRED_FIELDS)
def test_missing_metadata_field(toy_trainvaltest: Path, field: str) -> None:
    path = toy_trainvaltest / "task_metadata.json"
    meta = json.loads(path.read_text())
    del meta[field]
    path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match=f"task_metadata.json: missing required field '{field}'"):
        load_task(toy_trainvaltest)


def test_kfold_needs_nfolds(toy_kfold: Path) -> None:
    path = toy_kfold / "task_metadata.json"
    meta = json.loads(path.read_text())
    del meta["nfolds"]
    path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="needs field 'nfolds'"):
        load_task(toy_kfold)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("prediction_type", "regression", "prediction_type must be one of"),
    ("split_mode", "random", "split_mode must be one of"),
    ("evaluation", [], "evaluation must be a non-empty list"),
    ("evaluation", ["event_onset_200ms_fms"], "unsupported metrics"),
    ("embedding_type", "event", "not supported"),
    ("sample_duration", -1, "sample_duration must be a positive number"),
])
def test_bad_metadata_values(toy_trainvaltest: Path, key: str, value: object,
                             message: str) -> None:
    path = toy_trainvaltest / "task_metadata.json"
    meta = json.loads(path.read_text())
    meta[key] = value
    path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match=message):
        load_task(toy_trainvaltest)


def test_empty_split(toy_trainvaltest: Path) -> None:
    (toy_trainvaltest / "valid.json").write_text("{}")
    with pytest.raises(InputError, match=r"valid.json: empty split"):
        load_task(toy_trainvaltest)


def test_missing_split_file(toy_trainvaltest: Path) -> None:
    (toy_trainvaltest / "test.json").unlink()
    with pytest.raises(InputError, match=r"test.json: split file not found"):
        load_task(toy_trainvaltest)


def test_multiclass_needs_one_label(toy_trainvaltest: Path) -> None:
    path = toy_trainvaltest / "train.json"
    data = json.loads(path.read_text())
    data[next(iter(data))] = ["a", "b"]
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="exactly one label"):
        load_task(toy_trainvaltest)


def test_vocabulary_file(toy_trainvaltest: Path) -> None:
    (toy_trainvaltest / "labelvocabulary.csv").write_text("idx,label\n0,a\n1,b\n2,c\n3,zz\n")
    assert load_task(toy_trainvaltest).labels == ("a", "b", "c", "zz")
    (toy_trainvaltest / "labelvocabulary.csv").write_text("idx,label\n0,a\n1,b\n")
    with pytest.raises(InputError, match="missing from the vocabulary"):
        load_task(toy_trainvaltest)
    (toy_trainvaltest / "labelvocabulary.csv").write_text("idx,label\n0,a\n2,b\n3,c\n")
    with pytest.raises(InputError, match="without gaps"):
        load_task(toy_trainvaltest)


def test_unseen_test_label(make_task: Callable[..., Path], caplog: pytest.LogCaptureFixture
                           ) -> None:
    """A test label absent from training keeps its output unit (HEAR) and is reported; the
    'error' policy refuses the task instead."""
    root = make_task("unseen", {
        "train": class_split("tr", ["a", "b"], 4),
        "valid": class_split("va", ["a", "b"], 2),
        "test": {**class_split("te", ["a", "b"], 2), "te_new.wav": ["d"]},
    })
    with caplog.at_level(logging.WARNING):
        task = load_task(root, unseen_labels="warn")
    assert "labels ['d'] occur in split 'test'" in caplog.text
    assert task.labels == ("a", "b", "d")
    assert task.unseen_labels(task.data_splits()[0]) == {"test": ["d"]}
    with pytest.raises(InputError, match=r"test.json: labels \['d'\] occur in split 'test'"):
        load_task(root, unseen_labels="error")


def test_audio_of_wrong_rate(make_task: Callable[..., Path]) -> None:
    """Files whose real rate differs from their folder's rate are refused, naming the file."""
    root = make_task("badrate", {s: class_split(s, ["a", "b"], 2)
                                 for s in ("train", "valid", "test")}, audio_rate=22_050)
    task = load_task(root)
    with pytest.raises(InputError, match=r"16000/train/train_a_0.wav: expected a sample rate of "
                                         r"16000 Hz, found 22050 Hz"):
        next(task.iter_audio("train", RATE))


def test_48k_only_task_is_resampled(make_task: Callable[..., Path]) -> None:
    root = make_task("hi", {s: class_split(s, ["a", "b"], 1) for s in ("train", "valid", "test")},
                     rate=48_000)
    task = load_task(root)
    assert task.source_rate(16_000) == 48_000
    clips = list(task.iter_audio("train", 16_000))
    assert len(clips) == 2 and clips[0].dtype == np.float32
    assert clips[0].shape[0] == pytest.approx(0.25 * 16_000, abs=1)
    # a matching rate folder is used directly
    assert task.source_rate(48_000) == 48_000


def test_missing_audio_folder(toy_trainvaltest: Path) -> None:
    import shutil

    shutil.rmtree(toy_trainvaltest / str(RATE))
    task = load_task(toy_trainvaltest)
    with pytest.raises(InputError, match="no audio folder"):
        next(task.iter_audio("train", RATE))
