"""Clip embeddings of a HEAR task: every candidate layer, time-averaged, cached per model and task.

The model side is a plain callable (the lead connects it to the model registry)::

    embed(audio_list: list[np.ndarray], sample_rate: int) -> dict[layer_name, (n_clips, dim)]

It receives float32 mono clips at the model's rate and returns one time-averaged vector per clip
and layer, layers in the model's candidate order. The cache is one NPZ per (model, task), no
pickle: ``emb/<split>/<layer>`` arrays (float32, or float16 when asked) with rows in the task's
file order, and ``meta`` (JSON) holding the model name, rate, layer order and a fingerprint of
the task's metadata, split files and audio file sizes; a cache whose fingerprint differs is
recomputed.

At scale (FSD50K: 51k clips of up to 30 s; 210k clips over the paper's six tasks):

- *Bounded memory*: clips are read one at a time and passed to ``embed`` in calls of at most
  ``batch_size`` clips and ``max_samples`` audio samples (at the model's rate; one clip always
  goes). The default budget is heareval's: ``0.7 * 120 / sample_duration * 16000 / rate``
  clips per batch, i.e. 1,344,000 samples whatever the rate. Clips keep their own lengths, as in
  HEAR (fixed for most tasks, 0.3-30 s for FSD50K): ``embed`` receives a list, and the
  extractor runs equal-length runs of it together, never padding (heareval runs a
  variable-length task one clip at a time).
- *Incremental, resumable*: with a cache directory, the embeddings are written as they come, in
  shards of at most :data:`SHARD_BYTES` (``<cache>/<model>/<task>.parts/<split>.<first>.npz``,
  each atomic and carrying the task's fingerprint). An interrupted stage resumes after the last
  complete shard of each split, re-embedding at most one shard of clips; when every split is
  done the shards are assembled into the cache file (one split and layer in memory at a time)
  and removed.
- *Storage*: float32; ``dtype="float16"`` (not the paper's) halves disk and memory, and is part
  of the fingerprint (float32 caches keep their fingerprints).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Iterator, Mapping
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
SHARD_BYTES = 64 * 2**20
"""Embeddings held in memory before a shard is written (64 MiB: ~1,600 clips of 13 x 768)."""
DTYPES = {"float32": np.float32, "float16": np.float16}


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


def _check_dtype(dtype: str) -> np.dtype:
    if dtype not in DTYPES:
        raise InputError("embed_dtype", f"expected one of {list(DTYPES)}, got {dtype!r}")
    return np.dtype(DTYPES[dtype])


def task_fingerprint(task: HearTask, model: str, sample_rate: int, dtype: str = "float32",
                     model_digest: str = "") -> str:
    """SHA-256 over what determines the embeddings: model, rate, storage type (when not
    float32), ``model_digest`` (the model's code, weights and extraction settings, when given:
    a cache kept outside DVC's outputs must not outlive a change of the model), metadata,
    splits, audio sizes."""
    _check_dtype(dtype)
    h = hashlib.sha256()
    key: dict[str, object] = {"model": model, "rate": sample_rate, "v": CACHE_VERSION}
    if dtype != "float32":
        key["dtype"] = dtype
    if model_digest:
        key["model_digest"] = model_digest
    h.update(json.dumps(key).encode())
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


def _calls(task: HearTask, split: str, sample_rate: int, start: int, batch_size: int,
           max_samples: int | None) -> Iterator[tuple[int, list[np.ndarray]]]:
    """(index of the first clip, clips) of each embed call over ``split`` from clip ``start``:
    at most ``batch_size`` clips and ``max_samples`` samples per call, at least one clip."""
    batch: list[np.ndarray] = []
    first, samples = start, 0
    for i, clip in enumerate(task.iter_audio(split, sample_rate, start), start=start):
        full = len(batch) >= batch_size or (
            max_samples is not None and batch and samples + clip.size > max_samples)
        if full:
            yield first, batch
            batch, first, samples = [], i, 0
        batch.append(clip)
        samples += clip.size
    if batch:
        yield first, batch


def _cast(arrays: dict[str, np.ndarray], dtype: np.dtype, where: str) -> dict[str, np.ndarray]:
    with np.errstate(over="ignore"):  # reported below, naming the layer
        out = {k: v.astype(dtype, copy=False) for k, v in arrays.items()}
    if dtype != np.float32:
        for layer, arr in out.items():
            if not np.isfinite(arr).all():
                raise InputError(where, f"layer {layer!r}: embeddings overflow {dtype.name}; "
                                 "store them as float32 (downstream.embed_dtype)")
    return out


def _check_dims(layers: dict[str, int], got: dict[str, np.ndarray], where: str) -> None:
    dims = {layer: int(a.shape[1]) for layer, a in got.items()}
    if dims != layers:
        raise InputError(where, f"layer sizes differ between batches or splits: {dims} vs "
                         f"{layers}")


def compute_embeddings(
    task: HearTask, model: str, embed: EmbedFn, sample_rate: int, batch_size: int = 32,
    progress: bool = True, max_samples: int | None = None, dtype: str = "float32",
) -> TaskEmbeddings:
    """Run ``embed`` over every split of ``task`` (calls bounded as in the module docstring),
    in memory; :func:`task_embeddings` writes and resumes incrementally instead."""
    np_dtype = _check_dtype(dtype)
    layers: tuple[str, ...] | None = None
    dims: dict[str, int] | None = None
    splits: dict[str, dict[str, np.ndarray]] = {}
    total = sum(len(task.split_files[s]) for s in task.splits)
    with tqdm(total=total, desc=f"embed {model}/{task.name}", unit="clip", leave=False,
              disable=not progress) as bar:
        for split in task.splits:
            chunks: list[dict[str, np.ndarray]] = []
            where = f"embed({model}) on {task.name}/{split}"
            for _, batch in _calls(task, split, sample_rate, 0, batch_size, max_samples):
                out = _validate_batch(embed(batch, sample_rate), len(batch), layers, where)
                layers = tuple(out)
                if dims is None:
                    dims = {layer: int(a.shape[1]) for layer, a in out.items()}
                _check_dims(dims, out, f"embed({model})")
                chunks.append(_cast(out, np_dtype, where))
                bar.update(len(batch))
            assert layers is not None
            splits[split] = {
                layer: np.concatenate([c[layer] for c in chunks], axis=0) for layer in layers
            }
    assert layers is not None
    return TaskEmbeddings(model=model, task=task.name, layers=layers, splits=splits)


def save_embeddings(path: str | Path, emb: TaskEmbeddings, fingerprint: str) -> None:
    """Atomically write ``emb`` as NPZ (no pickle)."""
    arrays: dict[str, np.ndarray] = {}
    for split, layers in emb.splits.items():
        for layer, arr in layers.items():
            arrays[f"emb/{split}/{layer}"] = arr
    arrays["meta"] = _meta(emb.model, emb.task, emb.layers, list(emb.splits), fingerprint)
    write_npz(path, arrays)


def _meta(model: str, task: str, layers: tuple[str, ...], splits: list[str], fingerprint: str
          ) -> np.ndarray:
    meta = {"model": model, "task": task, "layers": list(layers), "splits": splits,
            "fingerprint": fingerprint, "version": CACHE_VERSION}
    return np.array(json.dumps(meta, sort_keys=True))


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


@dataclass(frozen=True)
class _Shard:
    """One written piece of a split: clips [start, stop)."""

    path: Path
    split: str
    start: int
    stop: int
    layers: tuple[str, ...]
    dims: tuple[int, ...]


def _read_shard_meta(path: Path) -> dict[str, object] | None:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return json.loads(str(npz["meta"]))
    except Exception:  # noqa: BLE001 - an unreadable shard is recomputed
        return None


def _resume(parts: Path, task: HearTask, fingerprint: str) -> dict[str, list[_Shard]]:
    """The complete shards of each split, contiguous from clip 0; anything else is deleted
    (other fingerprints, gaps, unreadable files, leftovers of interrupted writes)."""
    done: dict[str, list[_Shard]] = {s: [] for s in task.splits}
    if not parts.is_dir():
        return done
    found: list[tuple[str, int, Path, dict[str, object]]] = []
    for path in sorted(parts.iterdir()):
        meta = None if path.name.startswith(".") else _read_shard_meta(path)
        if (meta is None or meta.get("fingerprint") != fingerprint
                or meta.get("split") not in done):
            path.unlink(missing_ok=True)
            continue
        found.append((str(meta["split"]), int(meta["start"]), path, meta))  # type: ignore[arg-type]
    found.sort(key=lambda item: (item[0], item[1]))
    layers: tuple[tuple[str, ...], tuple[int, ...]] | None = None
    for split, start, path, meta in found:
        shard = _Shard(path, split, start, int(meta["stop"]),  # type: ignore[arg-type]
                       tuple(meta["layers"]), tuple(meta["dims"]))  # type: ignore[arg-type]
        expected = done[split][-1].stop if done[split] else 0
        if (shard.start != expected or shard.stop <= shard.start
                or shard.stop > len(task.split_files[split])
                or (layers is not None and (shard.layers, shard.dims) != layers)):
            path.unlink(missing_ok=True)
            continue
        layers = (shard.layers, shard.dims)
        done[split].append(shard)
    return done


def _write_shard(parts: Path, split: str, start: int, chunks: list[dict[str, np.ndarray]],
                 layers: tuple[str, ...], fingerprint: str) -> _Shard:
    arrays = {layer: np.concatenate([c[layer] for c in chunks], axis=0) for layer in layers}
    stop = start + next(iter(arrays.values())).shape[0]
    dims = tuple(int(arrays[layer].shape[1]) for layer in layers)
    meta = {"fingerprint": fingerprint, "split": split, "start": start, "stop": stop,
            "layers": list(layers), "dims": list(dims), "version": CACHE_VERSION}
    path = parts / f"{split}.{start:08d}.npz"
    write_npz(path, {**arrays, "meta": np.array(json.dumps(meta, sort_keys=True))})
    return _Shard(path, split, start, stop, layers, dims)


class _Assembled(Mapping[str, np.ndarray]):
    """The cache file's members, each concatenated from the shards only when written."""

    def __init__(self, shards: dict[str, list[_Shard]], layers: tuple[str, ...],
                 meta: np.ndarray) -> None:
        self._keys = [f"emb/{s}/{layer}" for s in shards for layer in layers] + ["meta"]
        self._shards, self._meta = shards, meta

    def __getitem__(self, key: str) -> np.ndarray:
        if key == "meta":
            return self._meta
        _, split, layer = key.split("/", 2)
        parts = []
        for shard in self._shards[split]:
            with np.load(shard.path, allow_pickle=False) as npz:
                parts.append(npz[layer])
        return np.concatenate(parts, axis=0)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _embed_incrementally(
    task: HearTask, model: str, embed: EmbedFn, sample_rate: int, path: Path, fingerprint: str,
    batch_size: int, progress: bool, max_samples: int | None, dtype: str,
    shard_bytes: int,
) -> None:
    """Embed every clip not yet in a shard, then assemble the shards into ``path``."""
    np_dtype = _check_dtype(dtype)
    parts = path.with_name(path.name[:-len(".npz")] + ".parts")
    done = _resume(parts, task, fingerprint)
    first = next((sh[0] for sh in done.values() if sh), None)
    layers = first.layers if first is not None else None
    dims = dict(zip(first.layers, first.dims, strict=True)) if first is not None else None
    have = {s: (done[s][-1].stop if done[s] else 0) for s in task.splits}
    total = sum(len(task.split_files[s]) for s in task.splits)
    if any(have.values()):
        log.info("embeddings of %s/%s: resuming after %d of %d clips", model, task.name,
                 sum(have.values()), total)
    parts.mkdir(parents=True, exist_ok=True)
    with tqdm(total=total, initial=sum(have.values()), desc=f"embed {model}/{task.name}",
              unit="clip", leave=False, disable=not progress) as bar:
        for split in task.splits:
            where = f"embed({model}) on {task.name}/{split}"
            chunks: list[dict[str, np.ndarray]] = []
            start, held = have[split], 0
            for _, batch in _calls(task, split, sample_rate, have[split], batch_size,
                                   max_samples):
                out = _validate_batch(embed(batch, sample_rate), len(batch), layers, where)
                layers = tuple(out)
                if dims is None:
                    dims = {layer: int(a.shape[1]) for layer, a in out.items()}
                _check_dims(dims, out, f"embed({model})")
                chunks.append(_cast(out, np_dtype, where))
                held += sum(a.nbytes for a in chunks[-1].values())
                bar.update(len(batch))
                if held >= shard_bytes:
                    done[split].append(_write_shard(parts, split, start, chunks, layers,
                                                    fingerprint))
                    start, chunks, held = done[split][-1].stop, [], 0
            if chunks:
                assert layers is not None
                done[split].append(_write_shard(parts, split, start, chunks, layers,
                                                fingerprint))
    assert layers is not None
    meta = _meta(model, task.name, layers, list(task.splits), fingerprint)
    write_npz(path, _Assembled(done, layers, meta))
    shutil.rmtree(parts, ignore_errors=True)


def task_embeddings(
    task: HearTask,
    model: str,
    embed: EmbedFn,
    sample_rate: int,
    cache_dir: str | Path | None,
    batch_size: int = 32,
    progress: bool = True,
    max_samples: int | None = None,
    dtype: str = "float32",
    shard_bytes: int = SHARD_BYTES,
    model_digest: str = "",
) -> TaskEmbeddings:
    """Embeddings of ``task`` for ``model``, from ``<cache_dir>/<model>/<task>.npz`` when valid;
    otherwise computed (incrementally and resumably when there is a cache directory)."""
    fingerprint = task_fingerprint(task, model, sample_rate, dtype, model_digest)
    if cache_dir is None:
        return compute_embeddings(task, model, embed, sample_rate, batch_size, progress,
                                  max_samples, dtype)
    cache = Path(cache_dir) / model / f"{task.name}.npz"
    if cache.is_file():
        try:
            emb, cached = load_embeddings(cache)
        except InputError as exc:
            log.warning("ignoring unreadable cache %s (%s)", cache, exc)
        else:
            if cached == fingerprint and set(emb.splits) == set(task.splits):
                log.info("embeddings of %s/%s from cache %s", model, task.name, cache)
                return emb
            log.info("cache %s is stale; recomputing", cache)
    _embed_incrementally(task, model, embed, sample_rate, cache, fingerprint, batch_size,
                         progress, max_samples, dtype, shard_bytes)
    emb, _ = load_embeddings(cache)
    return emb


def seed_cache_from_activations(
    task: HearTask, acts_layers: dict[str, np.ndarray], acts_stimuli: tuple[str, ...],
    model: str, sample_rate: int, cache_dir: str | Path, dtype: str = "float32",
    model_digest: str = "",
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
        splits[split] = {layer: np.asarray(a[idx], dtype=_check_dtype(dtype))
                         for layer, a in acts_layers.items()}
    emb = TaskEmbeddings(model=model, task=task.name, layers=tuple(acts_layers), splits=splits)
    path = Path(cache_dir) / model / f"{task.name}.npz"
    save_embeddings(path, emb, task_fingerprint(task, model, sample_rate, dtype, model_digest))
    return path
