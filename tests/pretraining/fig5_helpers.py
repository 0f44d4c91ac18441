"""Helpers of the Fig. 5 tests: small simulation settings, a tiny miniature, params dicts."""

from __future__ import annotations

import sys
from pathlib import Path

from brainalign.data.simulate import DatasetSim, SimulateParams

MODELS_TESTS = Path(__file__).resolve().parents[1] / "models"
if str(MODELS_TESTS) not in sys.path:  # the EnCodecMAE checkpoint fixtures (fixtures.*)
    sys.path.insert(0, str(MODELS_TESTS))

SMALL = SimulateParams(
    nh2015=DatasetSim(n_subjects=8, voxels_per_subject=30, frac_incomplete=0.1),
    b2021=DatasetSim(n_subjects=20, voxels_per_subject=15, nan_subjects=2, frac_nan_voxels=0.1),
)
TINY = {"steps": 2, "checkpoint_every": 1, "model_dim": 8, "num_heads": 2, "ff_dim": 8,
        "num_layers": 10, "decoder_layers": 1, "n_clips": 8, "batch_size": 4,
        "clip_seconds": 0.5}
"""A miniature of three checkpoints (steps 0, 1, 2) that trains in about a second."""


def params_for(data_root: Path, checkpoints: Path, **pretraining) -> dict:
    """A params.yaml dict for the Fig. 5 stages (CPU, one thread)."""
    miniature = {**TINY, **pretraining.pop("miniature", {})}
    return {
        "data": {"root": str(data_root)},
        "extract": {"device": "cpu", "batch_size": 8, "threads": 1},
        "rsa": {"eps": 1.0e-10, "nan_policy": "authors"},
        "pretraining": {"checkpoints": str(checkpoints), "miniature": miniature, **pretraining},
    }
