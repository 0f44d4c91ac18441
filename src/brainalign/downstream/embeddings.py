"""Clip embeddings of a HEAR task: every candidate layer, time-averaged, cached per model and task.

The model side is a plain callable (the lead connects it to the model registry)::

    embed(audio_list: list[np.ndarray], sample_rate: int) -> dict[layer_name, (n_clips, dim)]

It receives float32 mono clips at the model's rate and returns one time-averaged vector per clip
and layer, layers in the model's candidate order. The cache is one NPZ per (model, task), no
pickle: ``emb/<split>/<layer>`` float32 arrays with rows in the task's file order, and ``meta``
(JSON) holding the model name, rate, layer order and a fingerprint of the task's metadata, split
files and audio file sizes; a cache whose fingerprint differs is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from brainalign.downstream.hear_tasks import HearTask
from brainalign.errors import InputError
from brainalign.npz import write_npz
from brainalign.outputs import damaged

log = logging.getLogger(__name__)

EmbedFn = Callable[[list[np.ndarray], int], dict[str, np.ndarray]]
CACHE_VERSION = 1


@dataclass(frozen=True)
class TaskEmbeddings:
    """Per split, per layer embeddings (n_files, dim) of one model on one task."""

    model: str
    task: str
    layers: tuple[str, ...]
    splits: dict[str, dict[str, np.ndarray]] = field(repr=False)

    def layer_dims(self) -> dict[str, int]:
        first = next(iter(self.splits.values()))
        return {layer: int(first[layer].shape[1]) for layer in self.layers}


def task_fingerprint(task: HearTask, model: str, sample_rate: int) -> str:
    """SHA-256 over what determines the embeddings: model, rate, metadata, splits, audio sizes."""
    h = hashlib.sha256()
    h.update(json.dumps({"model": model, "rate": sample_rate, "v": CACHE_VERSION}).encode())
    h.update((task.root / "task_metadata.json").read_bytes())
    source = task.source_rate(sample_rate)
    h.update(str(source).encode())
    for split in task.splits:
        h.update((task.root / f"{split}.json").read_bytes())
        folder = task.root / str(source) / split
        for name in task.split_files[split]:
            path = folder / name
            size = path.stat().st_size if path.is_file() else -1
            h.update(f"{split}/{name}:{size}\n".encode())
    return h.hexdigest()


def _validate_batch(
    out: object, n: int, layers: tuple[str, ...] | None, where: str
) -> dict[str, np.ndarray]:
    if not isinstance(out, dict) or not out:
        raise InputError(where, "the embedding function must return a non-empty dict "
                         "{layer: (n_clips, dim) array}")
    result: dict[str, np.ndarray] = {}
    for layer, arr in out.items():
        arr = np.asarray(arr, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] == 0:
            raise InputError(where, f"layer {layer!r}: expected shape ({n}, dim), got {arr.shape}")
        if not np.isfinite(arr).all():
            raise InputError(where, f"layer {layer!r}: embeddings hold NaN or infinite values")
        result[str(layer)] = arr
    if layers is not None and tuple(result) != layers:
        raise InputError(where, f"layers changed between batches: {list(result)} vs {list(layers)}")
    return result


def compute_embeddings(
    task: HearTask, model: str, embed: EmbedFn, sample_rate: int, batch_size: int = 32,
    progress: bool = True,
) -> TaskEmbeddings:
    """Run ``embed`` over every split of ``task`` in batches of ``batch_size`` clips."""
    layers: tuple[str, ...] | None = None
    splits: dict[str, dict[str, np.ndarray]] = {}
    total = sum(len(task.split_files[s]) for s in task.splits)
    with tqdm(total=total, desc=f"embed {model}/{task.name}", unit="clip", leave=False,
              disable=not progress) as bar:
        for split in task.splits:
            chunks: list[dict[str, np.ndarray]] = []
            batch: list[np.ndarray] = []
            names = task.split_files[split]
            for i, clip in enumerate(task.iter_audio(split, sample_rate)):
                batch.append(clip)
                if len(batch) == batch_size or i == len(names) - 1:
                    where = f"embed({model}) on {task.name}/{split}"
                    out = _validate_batch(embed(batch, sample_rate), len(batch), layers, where)
                    layers = tuple(out)
                    chunks.append(out)
                    bar.update(len(batch))
                    batch = []
            assert layers is not None
            splits[split] = {
                layer: np.concatenate([c[layer] for c in chunks], axis=0) for layer in layers
            }
            dims = {layer: splits[split][layer].shape[1] for layer in layers}
            first_dims = {layer: a.shape[1] for layer, a in next(iter(splits.values())).items()}
            if dims != first_dims:
                raise InputError(f"embed({model})", f"layer sizes differ between splits: "
                                 f"{dims} vs {first_dims}")
    assert layers is not None
    return TaskEmbeddings(model=model, task=task.name, layers=layers, splits=splits)


def save_embeddings(path: str | Path, emb: TaskEmbeddings, fingerprint: str) -> None:
    """Atomically write ``emb`` as NPZ (no pickle)."""
    arrays: dict[str, np.ndarray] = {}
    for split, layers in emb.splits.items():
        for layer, arr in layers.items():
            arrays[f"emb/{split}/{layer}"] = arr
    meta = {"model": emb.model, "task": emb.task, "layers": list(emb.layers),
            "splits": list(emb.splits), "fingerprint": fingerprint, "version": CACHE_VERSION}
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    write_npz(path, arrays)


def load_embeddings(path: str | Path) -> tuple[TaskEmbeddings, str]:
    """Read a cache written by :func:`save_embeddings`; returns (embeddings, fingerprint)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            splits = {
                split: {layer: npz[f"emb/{split}/{layer}"] for layer in meta["layers"]}
                for split in meta["splits"]
            }
    except Exception as exc:  # a damaged zip raises BadZipFile, EOFError, ValueError, ...
        raise damaged(path, exc, "embedding cache") from None
    emb = TaskEmbeddings(model=meta["model"], task=meta["task"], layers=tuple(meta["layers"]),
                         splits=splits)
    return emb, str(meta["fingerprint"])


def task_embeddings(
    task: HearTask,
    model: str,
    embed: EmbedFn,
    sample_rate: int,
    cache_dir: str | Path | None,
    batch_size: int = 32,
    progress: bool = True,
) -> TaskEmbeddings:
    """Embeddings of ``task`` for ``model``, from ``<cache_dir>/<model>/<task>.npz`` when valid."""
    fingerprint = task_fingerprint(task, model, sample_rate)
    cache = None if cache_dir is None else Path(cache_dir) / model / f"{task.name}.npz"
    if cache is not None and cache.is_file():
        try:
            emb, cached = load_embeddings(cache)
        except InputError as exc:
            log.warning("ignoring unreadable cache %s (%s)", cache, exc)
        else:
            if cached == fingerprint and set(emb.splits) == set(task.splits):
                log.info("embeddings of %s/%s from cache %s", model, task.name, cache)
                return emb
            log.info("cache %s is stale; recomputing", cache)
    emb = compute_embeddings(task, model, embed, sample_rate, batch_size, progress)
    if cache is not None:
        save_embeddings(cache, emb, fingerprint)
    return emb


def seed_cache_from_activations(
    task: HearTask, acts_layers: dict[str, np.ndarray], acts_stimuli: tuple[str, ...],
    model: str, sample_rate: int, cache_dir: str | Path,
) -> Path:
    """Write the embedding cache of a task whose clips are the 165 stimuli from activations.

    The ``nat165-category`` mini task holds the same 165 sounds that ``extract`` already ran
    through the model (each layer time-averaged, as here), so its embeddings are the rows of the
    activation file, resampled once from the 44.1 kHz source instead of via the task's 16 kHz
    copy. Rows are matched to clips by file name (``<stimulus>.wav``); a clip that is not a
    stimulus is an error. The cache carries the task's fingerprint, so later reads accept it.
    """
    row = {name: i for i, name in enumerate(acts_stimuli)}
    splits: dict[str, dict[str, np.ndarray]] = {}
    for split in task.splits:
        stems = [Path(f).stem for f in task.split_files[split]]
        missing = [s for s in stems if s not in row]
        if missing:
            raise InputError(task.root, f"clips {missing[:3]} are not among the activation rows")
        idx = np.array([row[s] for s in stems], dtype=np.int64)
        splits[split] = {layer: np.asarray(a[idx], dtype=np.float32)
                         for layer, a in acts_layers.items()}
    emb = TaskEmbeddings(model=model, task=task.name, layers=tuple(acts_layers), splits=splits)
    path = Path(cache_dir) / model / f"{task.name}.npz"
    save_embeddings(path, emb, task_fingerprint(task, model, sample_rate))
    return path
