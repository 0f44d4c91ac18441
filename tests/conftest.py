"""Shared fixtures: the offline mirror of the public inputs (../shared/mirror by default)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NATSOUND = (
    "raw.githubusercontent.com/snormanhaignere/natsound165-neuron2015/"
    "b41b99ff620d7997dbf278fc770f58566707726a"
)
BRAINDNN = "raw.githubusercontent.com/mrpep/braindnn/1222378faacf8bbb5503a0b5de522397adbb1a19"


def _mirror_root() -> Path | None:
    env = os.environ.get("BRAINALIGN_MIRROR")
    root = Path(env) if env else REPO.parent / "shared" / "mirror"
    return root if (root / "SHA256SUMS").is_file() else None


@pytest.fixture(scope="session")
def mirror_root() -> Path:
    """Root of the offline mirror; tests that need the real inputs fail loudly without it."""
    root = _mirror_root()
    if root is None:
        pytest.fail(
            "offline mirror not found: set BRAINALIGN_MIRROR or place shared/ beside the repo"
        )
    return root


@pytest.fixture(scope="session")
def github_inputs(mirror_root: Path) -> dict[str, Path]:
    """Paths of the real public inputs inside the mirror."""
    nat = mirror_root / NATSOUND
    return {
        "wav_dir": nat / "stimuli" / "wav",
        "labels_csv": nat / "stimuli" / "category_labels.csv",
        "components": nat / "data" / "components.mat",
        "folds": mirror_root / BRAINDNN / "lists" / "stratified-fold-assignment.pkl",
    }
