"""Reader for HEAR 2021 task folders (the hear-preprocess output format).

Layout of one task (data-formats.md; fields checked against hear-eval-kit 2021.1.3)::

    <task>/task_metadata.json        task_name, embedding_type ('scene'), prediction_type
                                     ('multiclass' | 'multilabel'), split_mode ('trainvaltest' |
                                     'new_split_kfold' | 'presplit_kfold'), evaluation (metric
                                     names, the first selects models), sample_duration (seconds
                                     or null), nfolds (k-fold modes), splits (optional list)
    <task>/labelvocabulary.csv       optional: columns idx,label (idx 0..n-1)
    <task>/<split>.json              {"<file>.wav": [label, ...]} for each split
    <task>/<rate>/<split>/<file>.wav mono audio at <rate> Hz

Split names: ``train``/``valid``/``test`` for ``trainvaltest``; for k-fold modes the metadata's
``splits`` list, else ``fold00``..``fold{k-1:02d}``. Data splits follow heareval's
``data_splits_from_folds``: folds sorted; split i tests fold i, validates on fold (i+1) mod k and
trains on the others.

Audio: read from ``<task>/<model rate>/`` when present; otherwise resampled from the best
available rate folder (48000 first, as in the 48 kHz tarballs, else the highest rate). Every file
must have its folder's rate.

Label vocabulary: ``labelvocabulary.csv`` when present, else the sorted union of the labels of
all splits (what hear-preprocess writes). A label that occurs in a validation or test split but
never in the training data of a data split keeps its output unit (HEAR behaviour: the probe is
never trained towards it, so such clips count as errors); ``unseen_labels="warn"`` logs it and
records it in the results, ``"error"`` raises :class:`InputError` instead.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from brainalign.data.stimuli import read_wav, resample
from brainalign.downstream.metrics import SCENE_METRICS
from brainalign.errors import InputError
from brainalign.readers import read_json_object

log = logging.getLogger(__name__)

REQUIRED_FIELDS = (
    "task_name", "embedding_type", "prediction_type", "split_mode", "evaluation",
    "sample_duration",
)
PREDICTION_TYPES = ("multiclass", "multilabel")
SPLIT_MODES = ("trainvaltest", "new_split_kfold", "presplit_kfold")
KFOLD_MODES = ("new_split_kfold", "presplit_kfold")
TRAINVALTEST = ("train", "valid", "test")
PREFERRED_SOURCE_RATE = 48_000


@dataclass(frozen=True)
class DataSplit:
    """One train/valid/test assignment of split names (k-fold: one per fold)."""

    index: int
    train: tuple[str, ...]
    valid: tuple[str, ...]
    test: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "train": list(self.train), "valid": list(self.valid),
                "test": list(self.test)}


@dataclass(frozen=True)
class HearTask:
    """A HEAR scene task: metadata, label vocabulary and the labels of every split."""

    root: Path
    task_name: str
    prediction_type: str
    split_mode: str
    evaluation: tuple[str, ...]
    sample_duration: float | None
    splits: tuple[str, ...]
    labels: tuple[str, ...]
    split_files: dict[str, tuple[str, ...]] = field(repr=False)
    split_labels: dict[str, tuple[tuple[str, ...], ...]] = field(repr=False)
    metadata: dict[str, Any] = field(repr=False)

    @property
    def name(self) -> str:
        """The task folder's name (e.g. ``esc50-v2.0.0-full``)."""
        return self.root.name

    @property
    def is_kfold(self) -> bool:
        return self.split_mode in KFOLD_MODES

    def data_splits(self) -> list[DataSplit]:
        """Train/valid/test assignments: one for trainvaltest, k for k-fold (heareval rules)."""
        if not self.is_kfold:
            return [DataSplit(0, ("train",), ("valid",), ("test",))]
        folds = tuple(sorted(self.splits))
        k = len(folds)
        out = []
        for i in range(k):
            test, valid = folds[i], folds[(i + 1) % k]
            train = tuple(f for f in folds if f not in (test, valid))
            out.append(DataSplit(i, train, (valid,), (test,)))
        return out

    def targets(self, split: str) -> np.ndarray:
        """One-hot / multi-hot float32 targets (n_files, n_labels) of ``split``."""
        index = {label: i for i, label in enumerate(self.labels)}
        rows = self.split_labels[split]
        y = np.zeros((len(rows), len(self.labels)), dtype=np.float32)
        for r, labels in enumerate(rows):
            for label in labels:
                y[r, index[label]] = 1.0
        return y

    def unseen_labels(self, data_split: DataSplit) -> dict[str, list[str]]:
        """Labels of each valid/test split of ``data_split`` that no training clip carries."""
        seen = {lab for s in data_split.train for labels in self.split_labels[s] for lab in labels}
        out: dict[str, list[str]] = {}
        for s in (*data_split.valid, *data_split.test):
            missing = sorted({lab for labels in self.split_labels[s] for lab in labels} - seen)
            if missing:
                out[s] = missing
        return out

    def rate_dirs(self) -> dict[int, Path]:
        """Audio folders of the task, by sample rate."""
        return {
            int(p.name): p for p in self.root.iterdir() if p.is_dir() and p.name.isdigit()
        }

    def source_rate(self, target_rate: int) -> int:
        """The rate folder to read for a model at ``target_rate`` (see module docstring)."""
        rates = self.rate_dirs()
        if not rates:
            raise InputError(self.root, "no audio folder <sample_rate>/ (e.g. 48000/) found")
        if target_rate in rates:
            return target_rate
        if PREFERRED_SOURCE_RATE in rates:
            return PREFERRED_SOURCE_RATE
        return max(rates)

    def iter_audio(self, split: str, target_rate: int, start: int = 0) -> Iterator[np.ndarray]:
        """Yield the clips of ``split`` (in :attr:`split_files` order, from clip ``start``) at
        ``target_rate``."""
        rate = self.source_rate(target_rate)
        folder = self.root / str(rate) / split
        if not folder.is_dir():
            raise InputError(folder, f"audio folder of split {split!r} not found")
        for name in self.split_files[split][start:]:
            audio, _ = read_wav(folder / name, expected_rate=rate)
            yield resample(audio, rate, target_rate)


def _require(meta: dict[str, Any], key: str, path: Path) -> Any:
    if key not in meta:
        raise InputError(path, f"missing required field {key!r} "
                         f"(required: {list(REQUIRED_FIELDS)})")
    return meta[key]


def _split_names(meta: dict[str, Any], mode: str, path: Path) -> tuple[str, ...]:
    splits = meta.get("splits")
    if splits is not None and (
        not isinstance(splits, list) or not splits or not all(isinstance(s, str) for s in splits)
    ):
        raise InputError(path, f"field 'splits' must be a non-empty list of names, got {splits!r}")
    if mode == "trainvaltest":
        if splits is not None and sorted(splits) != sorted(TRAINVALTEST):
            raise InputError(path, f"split_mode 'trainvaltest' needs splits {list(TRAINVALTEST)}, "
                             f"got {splits}")
        return TRAINVALTEST
    nfolds = meta.get("nfolds")
    if nfolds is not None and (isinstance(nfolds, bool) or not isinstance(nfolds, int)):
        raise InputError(path, f"field 'nfolds' must be an integer, got {nfolds!r}")
    if splits is None:
        if nfolds is None:
            raise InputError(path, f"split_mode {mode!r} needs field 'nfolds' (or 'splits')")
        splits = [f"fold{i:02d}" for i in range(nfolds)]
    elif nfolds is not None and nfolds != len(splits):
        raise InputError(path, f"nfolds = {nfolds} but 'splits' lists {len(splits)} folds")
    if len(set(splits)) != len(splits):
        raise InputError(path, f"duplicate fold names in {splits}")
    if len(splits) < 3:
        raise InputError(path, f"k-fold evaluation needs at least 3 folds (train, valid, test), "
                         f"got {len(splits)}")
    return tuple(sorted(splits))


def _read_vocabulary(path: Path) -> tuple[str, ...]:
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or set(rows[0]) < {"idx", "label"}:
        raise InputError(path, "expected a CSV with columns idx,label and at least one row")
    try:
        pairs = sorted((int(r["idx"]), str(r["label"])) for r in rows)
    except (TypeError, ValueError):
        raise InputError(path, "column idx must hold integers") from None
    if [i for i, _ in pairs] != list(range(len(pairs))):
        raise InputError(path, f"idx must run 0..{len(pairs) - 1} without gaps or repeats")
    labels = tuple(label for _, label in pairs)
    if len(set(labels)) != len(labels):
        raise InputError(path, "labels must be unique")
    return labels


def _read_split(
    path: Path, prediction_type: str
) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    data = read_json_object(path, "split file not found",
                            'expected an object {"<file>.wav": [label, ...]}')
    if not data:
        raise InputError(path, "empty split: it lists no audio files")
    files = tuple(sorted(data))
    labels = []
    for name in files:
        value = data[name]
        if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
            raise InputError(path, f"{name}: expected a list of labels, got {value!r}")
        if prediction_type == "multiclass" and len(value) != 1:
            raise InputError(path, f"{name}: a multiclass task needs exactly one label, "
                             f"got {value}")
        labels.append(tuple(sorted({str(v) for v in value})))
    return files, tuple(labels)


def load_task(root: str | Path, unseen_labels: str = "warn") -> HearTask:
    """Read and validate a HEAR scene task folder (metadata, vocabulary, split files)."""
    root = Path(root)
    meta_path = root / "task_metadata.json"
    meta = read_json_object(meta_path, "task metadata not found (is this a HEAR task folder?)")
    for key in REQUIRED_FIELDS:
        _require(meta, key, meta_path)
    if meta["embedding_type"] != "scene":
        raise InputError(meta_path, f"embedding_type {meta['embedding_type']!r} not supported "
                         "(the paper's tasks are all 'scene' tasks)")
    ptype = meta["prediction_type"]
    if ptype not in PREDICTION_TYPES:
        raise InputError(meta_path, f"prediction_type must be one of {list(PREDICTION_TYPES)}, "
                         f"got {ptype!r}")
    mode = meta["split_mode"]
    if mode not in SPLIT_MODES:
        raise InputError(meta_path, f"split_mode must be one of {list(SPLIT_MODES)}, got {mode!r}")
    evaluation = meta["evaluation"]
    if not isinstance(evaluation, list) or not evaluation or not all(
        isinstance(m, str) for m in evaluation
    ):
        raise InputError(meta_path, f"evaluation must be a non-empty list of metric names, "
                         f"got {evaluation!r}")
    unknown = [m for m in evaluation if m not in SCENE_METRICS]
    if unknown:
        raise InputError(meta_path, f"unsupported metrics {unknown}; supported: "
                         f"{list(SCENE_METRICS)}")
    duration = meta["sample_duration"]
    if duration is not None and (
        isinstance(duration, bool) or not isinstance(duration, int | float) or duration <= 0
    ):
        raise InputError(meta_path, f"sample_duration must be a positive number or null, "
                         f"got {duration!r}")
    splits = _split_names(meta, mode, meta_path)

    split_files: dict[str, tuple[str, ...]] = {}
    split_labels: dict[str, tuple[tuple[str, ...], ...]] = {}
    for split in splits:
        split_files[split], split_labels[split] = _read_split(root / f"{split}.json", ptype)
    used = sorted({lab for rows in split_labels.values() for labels in rows for lab in labels})
    vocab_path = root / "labelvocabulary.csv"
    if vocab_path.is_file():
        labels = _read_vocabulary(vocab_path)
        extra = sorted(set(used) - set(labels))
        if extra:
            raise InputError(vocab_path, f"split files use labels missing from the vocabulary: "
                             f"{extra[:10]}")
    else:
        labels = tuple(used)
    if len(labels) < 2 and ptype == "multiclass":
        raise InputError(root, f"a multiclass task needs at least 2 labels, got {list(labels)}")

    task = HearTask(
        root=root, task_name=str(meta["task_name"]), prediction_type=ptype, split_mode=mode,
        evaluation=tuple(evaluation), sample_duration=None if duration is None else float(duration),
        splits=splits, labels=labels, split_files=split_files, split_labels=split_labels,
        metadata=meta,
    )
    check_unseen_labels(task, unseen_labels)
    return task


def check_unseen_labels(task: HearTask, policy: str) -> dict[int, dict[str, list[str]]]:
    """Apply the unseen-label policy (``warn`` | ``error``).

    Returns ``{data split index: {split name: unseen labels}}``.
    """
    if policy not in ("warn", "error"):
        raise InputError("unseen_labels", f"expected 'warn' or 'error', got {policy!r}")
    found: dict[int, dict[str, list[str]]] = {}
    for ds in task.data_splits():
        unseen = task.unseen_labels(ds)
        if not unseen:
            continue
        found[ds.index] = unseen
        for split, labels in unseen.items():
            msg = (f"labels {labels[:10]} occur in split {split!r} but in none of the training "
                   f"splits {list(ds.train)}")
            if policy == "error":
                raise InputError(task.root / f"{split}.json", msg)
            log.warning("%s: %s; they keep their output unit and count as errors", task.name, msg)
    return found
