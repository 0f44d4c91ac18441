"""Task embeddings: the embed-function contract and the per-model, per-task NPZ cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from brainalign.downstream.embeddings import (
    compute_embeddings,
    load_embeddings,
    task_embeddings,
    task_fingerprint,
)
from brainalign.downstream.hear_tasks import load_task
from brainalign.errors import InputError

from .ds_helpers import band_embedder


def test_compute_in_batches_matches_one_batch(toy_trainvaltest: Path) -> None:
    task = load_task(toy_trainvaltest)
    embed = band_embedder()
    a = compute_embeddings(task, "toy", embed, 16_000, batch_size=4, progress=False)
    b = compute_embeddings(task, "toy", embed, 16_000, batch_size=100, progress=False)
    assert a.layers == ("bands", "proj")
    assert a.layer_dims() == {"bands": 12, "proj": 20}
    for split in task.splits:
        assert a.splits[split]["bands"].shape == (len(task.split_files[split]), 12)
        for layer in a.layers:
            np.testing.assert_allclose(a.splits[split][layer], b.splits[split][layer], rtol=1e-6)


def test_cache_round_trip_and_invalidation(toy_trainvaltest: Path, tmp_path: Path) -> None:
    task = load_task(toy_trainvaltest)
    calls = []
    inner = band_embedder()

    def embed(audio: list[np.ndarray], rate: int) -> dict[str, np.ndarray]:
        calls.append(len(audio))
        return inner(audio, rate)

    cache = tmp_path / "cache"
    first = task_embeddings(task, "toy", embed, 16_000, cache, progress=False)
    path = cache / "toy" / f"{task.name}.npz"
    assert path.is_file()
    n_calls = len(calls)
    again = task_embeddings(task, "toy", embed, 16_000, cache, progress=False)
    assert len(calls) == n_calls  # served from the cache
    for split in task.splits:
        for layer in first.layers:
            assert np.array_equal(first.splits[split][layer], again.splits[split][layer])
    with np.load(path, allow_pickle=False) as npz:  # no pickle needed to read it
        assert json.loads(str(npz["meta"]))["layers"] == ["bands", "proj"]
    loaded, fingerprint = load_embeddings(path)
    assert loaded.layers == first.layers and len(fingerprint) == 64
    # a changed split file makes the cache stale
    data = json.loads((toy_trainvaltest / "test.json").read_text())
    data[next(iter(data))] = ["b"]
    (toy_trainvaltest / "test.json").write_text(json.dumps(data))
    task_embeddings(load_task(toy_trainvaltest), "toy", embed, 16_000, cache, progress=False)
    assert len(calls) > n_calls
    # another model gets its own cache file
    task_embeddings(task, "other", embed, 16_000, cache, progress=False)
    assert (cache / "other" / f"{task.name}.npz").is_file()


@pytest.mark.parametrize(("bad", "message"), [
    (lambda a, r: {}, "non-empty dict"),
    (lambda a, r: {"x": np.zeros((len(a) + 1, 3))}, r"expected shape \(\d+, dim\)"),
    (lambda a, r: {"x": np.full((len(a), 3), np.nan)}, "NaN or infinite"),
    (lambda a, r: {"x": np.zeros(len(a))}, "expected shape"),
])
def test_embed_contract_is_checked(toy_trainvaltest: Path, bad: object, message: str) -> None:
    task = load_task(toy_trainvaltest)
    with pytest.raises(InputError, match=message):
        compute_embeddings(task, "toy", bad, 16_000, progress=False)  # type: ignore[arg-type]


def test_calls_bounded_by_clips_and_samples(toy_trainvaltest: Path) -> None:
    """At most batch_size clips and max_samples samples per call (a longer clip goes alone)."""
    task = load_task(toy_trainvaltest)
    sizes: list[list[int]] = []
    inner = band_embedder()

    def embed(audio: list[np.ndarray], rate: int) -> dict[str, np.ndarray]:
        sizes.append([a.size for a in audio])
        return inner(audio, rate)

    bounded = compute_embeddings(task, "toy", embed, 16_000, batch_size=5,
                                 max_samples=10_000, progress=False)
    assert sizes and all(len(s) <= 5 and (sum(s) <= 10_000 or len(s) == 1) for s in sizes)
    assert max(len(s) for s in sizes) == 2  # 4,000-sample clips: two fit in 10,000
    sizes.clear()
    compute_embeddings(task, "toy", embed, 16_000, batch_size=5, max_samples=100,
                       progress=False)
    assert all(len(s) == 1 for s in sizes)
    whole = compute_embeddings(task, "toy", inner, 16_000, batch_size=1000, progress=False)
    for split in task.splits:
        for layer in whole.layers:
            np.testing.assert_allclose(bounded.splits[split][layer], whole.splits[split][layer],
                                       rtol=1e-6)


def test_interrupted_embedding_resumes(toy_trainvaltest: Path, tmp_path: Path) -> None:
    """Shards are written as the clips are embedded; a rerun embeds only the clips after the
    last complete shard, and the result equals an uninterrupted run."""
    task = load_task(toy_trainvaltest)
    inner = band_embedder()
    seen: list[int] = []

    def embed(audio: list[np.ndarray], rate: int) -> dict[str, np.ndarray]:
        if fail_after is not None and len(seen) >= fail_after:
            raise KeyboardInterrupt("stopped")
        seen.append(len(audio))
        return inner(audio, rate)

    cache = tmp_path / "cache"
    fail_after: int | None = 5
    with pytest.raises(KeyboardInterrupt):
        task_embeddings(task, "toy", embed, 16_000, cache, batch_size=4, progress=False,
                        shard_bytes=1)
    parts = cache / "toy" / f"{task.name}.parts"
    assert len(list(parts.glob("*.npz"))) == 5 and not (cache / "toy" / f"{task.name}.npz").exists()
    done = sum(seen)
    seen.clear()
    fail_after = None
    resumed = task_embeddings(task, "toy", embed, 16_000, cache, batch_size=4, progress=False,
                              shard_bytes=1)
    total = sum(len(task.split_files[s]) for s in task.splits)
    assert sum(seen) == total - done  # nothing embedded twice
    assert not parts.exists() and (cache / "toy" / f"{task.name}.npz").is_file()
    fresh = compute_embeddings(task, "toy", inner, 16_000, batch_size=4, progress=False)
    for split in task.splits:
        for layer in fresh.layers:
            assert np.array_equal(resumed.splits[split][layer], fresh.splits[split][layer])
    # shards of another fingerprint (the task changed) are dropped, not reused
    fail_after = 2
    with pytest.raises(KeyboardInterrupt):
        task_embeddings(task, "other", embed, 16_000, cache, batch_size=4, progress=False,
                        shard_bytes=1)
    data = json.loads((toy_trainvaltest / "test.json").read_text())
    data[next(iter(data))] = ["b"]
    (toy_trainvaltest / "test.json").write_text(json.dumps(data))
    seen.clear()
    fail_after = None
    changed = load_task(toy_trainvaltest)
    task_embeddings(changed, "other", embed, 16_000, cache, batch_size=4, progress=False,
                    shard_bytes=1)
    assert sum(seen) == total


def test_float16_storage(toy_trainvaltest: Path, tmp_path: Path) -> None:
    task = load_task(toy_trainvaltest)
    emb = task_embeddings(task, "toy", band_embedder(), 16_000, tmp_path, progress=False,
                          dtype="float16")
    assert all(a.dtype == np.float16 for s in emb.splits.values() for a in s.values())
    _, fingerprint = load_embeddings(tmp_path / "toy" / f"{task.name}.npz")
    assert fingerprint == task_fingerprint(task, "toy", 16_000, "float16")
    assert fingerprint != task_fingerprint(task, "toy", 16_000)
    # the float32 cache is a different one: asking for float32 recomputes it
    again = task_embeddings(task, "toy", band_embedder(), 16_000, tmp_path, progress=False)
    assert next(iter(again.splits["train"].values())).dtype == np.float32

    def huge(audio: list[np.ndarray], rate: int) -> dict[str, np.ndarray]:
        return {"x": np.full((len(audio), 3), 1e6, np.float32)}

    with pytest.raises(InputError, match="overflow float16"):
        compute_embeddings(task, "toy", huge, 16_000, progress=False, dtype="float16")
