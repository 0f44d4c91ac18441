"""Shared fixtures for the model tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest


@pytest.fixture(scope="session")
def make_tone() -> Callable[..., np.ndarray]:
    """tone(freq, seconds, rate, amp=0.5) -> float32 pure tone."""

    def tone(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
        t = np.arange(int(seconds * rate)) / rate
        return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)

    return tone
