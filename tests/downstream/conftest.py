"""Fixtures for the downstream tests (helpers live in ds_helpers.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .ds_helpers import RATE, base_meta, class_split, write_task


@pytest.fixture
def make_task(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_task(name, splits, **meta_overrides)`` -> task folder under tmp_path."""

    def make(name: str, split_data: dict[str, dict[str, list[str]]], rate: int = RATE,
             audio_rate: int | None = None, **meta: Any) -> Path:
        return write_task(tmp_path / "tasks" / name, split_data, base_meta(**meta), rate=rate,
                          audio_rate=audio_rate)

    return make


@pytest.fixture
def toy_trainvaltest(make_task: Callable[..., Path]) -> Path:
    labels = ["a", "b", "c"]
    return make_task("toy-tvt", {
        "train": class_split("tr", labels, 6),
        "valid": class_split("va", labels, 3),
        "test": class_split("te", labels, 3),
    })


@pytest.fixture
def toy_kfold(make_task: Callable[..., Path]) -> Path:
    labels = ["a", "b", "c"]
    splits = {f"fold{k:02d}": class_split(f"f{k}", labels, 3) for k in range(4)}
    return make_task("toy-kfold", splits, split_mode="new_split_kfold", nfolds=4)
