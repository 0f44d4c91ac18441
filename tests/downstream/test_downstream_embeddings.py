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
