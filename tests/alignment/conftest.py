"""Shared helpers for the alignment tests: the literal reference lives in alignment_reference."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _quiet_reference():
    """scikit-learn warns about ill-conditioned solves inside lower-edge chains; expected."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
