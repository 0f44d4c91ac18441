"""Fixtures of the Fig. 5 tests: one thread, and a data root with the 165 real sounds and small
simulated voxels."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import fig5_helpers as FH  # noqa: E402

from brainalign.data.components import load_components  # noqa: E402
from brainalign.data.simulate import simulate_release  # noqa: E402
from brainalign.data.stimuli import canonical_names, read_category_labels  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def data_root(github_inputs, tmp_path_factory) -> Path:
    """``<root>/stimuli/{wav, category_labels.csv}`` (links to the mirror) and small simulated
    NH2015/B2021 under ``<root>/simulated``."""
    root = tmp_path_factory.mktemp("fig5data")
    (root / "stimuli").mkdir()
    (root / "stimuli" / "wav").symlink_to(github_inputs["wav_dir"])
    (root / "stimuli" / "category_labels.csv").symlink_to(github_inputs["labels_csv"])
    comp = load_components(github_inputs["components"])
    labels = read_category_labels(github_inputs["labels_csv"])
    simulate_release(comp, [labels[n] for n in canonical_names()], root / "simulated",
                     FH.SMALL, "test")
    return root
