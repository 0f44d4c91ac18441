"""Where every input lives under the data root (params.yaml ``data`` section)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from brainalign.errors import InputError

GITHUB_STIMULI = "stimuli/wav"
"""The GitHub copy of the 165 sounds (44.1 kHz), under the data root: the embedded default."""
LAB_STIMULI = "lab/data/stimuli/165_natural_sounds"
"""The lab release's 165 sounds (20 kHz), under the data root: what the paper fed the models."""


@dataclass(frozen=True)
class DataParams:
    """params.yaml ``data`` section."""

    root: str = "data"
    fetch: tuple[str, ...] = ("github",)
    fmri: Literal["simulated", "lab"] = "simulated"
    tasks: str = "build/tasks"
    stimuli: str = GITHUB_STIMULI


@dataclass(frozen=True)
class DataLayout:
    """Paths of the raw inputs; ``fmri`` selects the simulated stand-in or the lab release."""

    root: Path
    fmri: str = "simulated"
    tasks: Path = Path("build/tasks")
    stimuli: str = GITHUB_STIMULI

    @classmethod
    def from_params(cls, p: DataParams) -> DataLayout:
        return cls(Path(p.root), p.fmri, Path(p.tasks), p.stimuli)

    @property
    def wav_dir(self) -> Path:
        """The 165 sounds the models hear: params.yaml ``data.stimuli`` under the root."""
        return self.root / self.stimuli

    @property
    def github_wav_dir(self) -> Path:
        """The GitHub copy of the 165 sounds (44.1 kHz; the mini tasks are built from it)."""
        return self.root / GITHUB_STIMULI

    @property
    def labels_csv(self) -> Path:
        return self.root / "stimuli" / "category_labels.csv"

    @property
    def components(self) -> Path:
        return self.root / "components" / "components.mat"

    @property
    def folds(self) -> Path:
        return self.root / "folds" / "stratified-fold-assignment.pkl"

    @property
    def simulated_root(self) -> Path:
        return self.root / "simulated"

    @property
    def lab_root(self) -> Path:
        """The unpacked lab release (``data/`` of data.tar)."""
        return self.root / "lab" / "data"

    @property
    def hear_root(self) -> Path:
        return self.root / "hear"

    def neural(self, dataset: str) -> Path:
        """Folder of NH2015 or B2021 in the selected source."""
        if dataset not in ("NH2015", "B2021"):
            raise InputError("dataset", f"expected NH2015 or B2021, got {dataset!r}")
        base = self.simulated_root if self.fmri == "simulated" else self.lab_root
        return base / "neural" / dataset
