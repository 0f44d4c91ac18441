"""The miniature pretraining: deterministic files, upstream's masking, a decreasing loss."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import fig5_helpers as FH  # noqa: E402

from brainalign.pretraining import miniature as M  # noqa: E402
from brainalign.pretraining.config import MiniatureConfig  # noqa: E402


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_two_runs_write_identical_files(tmp_path) -> None:
    cfg = MiniatureConfig(**FH.TINY)
    first = M.train(cfg, tmp_path / "a")
    second = M.train(cfg, tmp_path / "b")
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert first == second
    assert len(_digests(tmp_path / "a")) == 4  # three checkpoints and the manifest
    # another seed is another run; a rerun into the same folder drops files it no longer writes
    other = M.train(MiniatureConfig(**{**FH.TINY, "seed": 1}), tmp_path / "c")
    assert other["checkpoints"][1]["sha256"] != first["checkpoints"][1]["sha256"]
    M.train(MiniatureConfig(**{**FH.TINY, "steps": 1}), tmp_path / "a")
    assert sorted(_digests(tmp_path / "a")) == ["epoch=0-step=0.ckpt", "epoch=0-step=1.ckpt",
                                                "miniature.json"]


def test_checkpoints_of_a_longer_run_extend_a_shorter_one(tmp_path) -> None:
    """The same seed trains the same steps: a longer run only adds checkpoints (the cache of
    the dynamics stage relies on it)."""
    short = M.train(MiniatureConfig(**FH.TINY), tmp_path / "short")
    long = M.train(MiniatureConfig(**{**FH.TINY, "steps": 4}), tmp_path / "long")
    assert [c["sha256"] for c in long["checkpoints"][:3]] == [
        c["sha256"] for c in short["checkpoints"]]


@pytest.mark.parametrize(("n", "prop", "gap"), [(149, 0.5, 15), (37, 0.5, 15), (10, 0.3, 15)])
def test_time_gap_mask_masks_exactly_the_proportion(n: int, prop: float, gap: int) -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        mask = M.time_gap_mask(rng, n, prop, gap)
        assert mask.shape == (n,) and int(mask.sum()) == int(n * prop)


def test_corpus_is_synthetic_and_seeded() -> None:
    cfg = MiniatureConfig(**FH.TINY)
    audio = M.synthetic_corpus(cfg)
    assert audio.shape == (8, 12000) and audio.dtype == np.float32
    assert np.all(np.abs(audio) <= 1.0) and np.all(audio.std(axis=1) > 0)
    assert np.array_equal(audio, M.synthetic_corpus(cfg))
    assert not np.array_equal(audio, M.synthetic_corpus(MiniatureConfig(**{**FH.TINY,
                                                                           "seed": 3})))
    feats = M.corpus_features(audio)
    assert tuple(feats.shape) == (8, 36, 256)  # 1 + (12000 - 637) // 318 frames


def test_loss_decreases_and_masked_frames_matter() -> None:
    cfg = MiniatureConfig(**{**FH.TINY, "learning_rate": 3e-3})
    torch.manual_seed(0)
    model = M.build_model(cfg)
    feats = M.corpus_features(M.synthetic_corpus(cfg))
    rng = np.random.default_rng(0)
    masked = torch.from_numpy(np.stack([M.time_gap_mask(rng, feats.shape[1], 0.5, 15)
                                         for _ in range(8)]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    losses = []
    for _ in range(30):
        loss = M._loss(model(feats, masked), feats, masked, cfg.masked_weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0]
    # the visible encoder never sees a masked frame: changing one leaves the encoder input
    # unchanged, while the loss (which reconstructs it) changes
    with torch.no_grad():
        changed = feats.clone()
        i, t = 0, int(np.flatnonzero(masked[0].numpy())[0])
        changed[i, t] += 5.0
        a = model(feats, masked)
        b = model(changed, masked)
        assert torch.equal(a, b)
        assert M._loss(a, feats, masked, 0.9) != M._loss(b, changed, masked, 0.9)
