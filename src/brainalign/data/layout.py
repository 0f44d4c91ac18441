"""Where every input lives under the data root (params.yaml ``data`` section)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from brainalign.errors import InputError

if TYPE_CHECKING:
    import numpy as np

    from brainalign.data.fmri import VoxelDataset
    from brainalign.data.nifti import Description
    from brainalign.data.stimuli import StimulusSet

GITHUB_STIMULI = "stimuli/wav"
"""The GitHub copy of the 165 sounds (44.1 kHz), under the data root: the embedded default."""
LAB_STIMULI = "lab/data/stimuli/165_natural_sounds"
"""The lab release's 165 sounds (20 kHz), under the data root: what the paper fed the models."""
LAB_SOURCES = ("simulated", "lab")
"""``data.fmri`` values of the lab-release format; anything else names a NIfTI description."""
DATASETS = ("NH2015", "B2021")


def is_description(fmri: str) -> bool:
    """True when ``data.fmri`` names a NIfTI description: a path with a slash or a .yaml name."""
    return fmri not in LAB_SOURCES and ("/" in fmri or fmri.endswith((".yaml", ".yml")))


@dataclass(frozen=True)
class DataParams:
    """params.yaml ``data`` section.

    ``fmri``: ``simulated`` (the embedded default), ``lab`` (the lab release) or a NIfTI dataset
    description under the root (:mod:`brainalign.data.nifti`): the folder holding its
    ``dataset.yaml``, written with a slash (``mystudy/``), or the ``.yaml`` file itself.
    """

    root: str = "data"
    fetch: tuple[str, ...] = ("github",)
    fmri: str = "simulated"
    tasks: str = "build/tasks"
    stimuli: str = GITHUB_STIMULI

    def __post_init__(self) -> None:
        fmri = self.fmri
        if not is_description(fmri):
            if fmri not in LAB_SOURCES:
                from brainalign.data.nifti import DESCRIPTION_FILE

                hint = ""
                if (Path(self.root) / fmri / DESCRIPTION_FILE).is_file():
                    hint = f" (for the NIfTI description in {self.root}/{fmri}, write '{fmri}/')"
                raise InputError("data.fmri",
                                 f"expected one of {list(LAB_SOURCES)}, got {fmri!r}{hint}")
            return
        rel = PurePosixPath(fmri)
        if rel.is_absolute() or ".." in rel.parts:
            raise InputError("data.fmri", f"expected a NIfTI description under the data root "
                             f"(a relative path without '..'; DVC tracks data/), got {fmri!r}")


@dataclass(frozen=True)
class DataLayout:
    """Paths of the raw inputs; ``fmri`` selects the simulated stand-in, the lab release or a
    NIfTI dataset description, whose voxel datasets, sounds and folds it loads."""

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
        """Folder of NH2015 or B2021 in the selected lab-format source."""
        if dataset not in DATASETS:
            raise InputError("dataset", f"expected NH2015 or B2021, got {dataset!r}")
        if self.is_nifti:
            raise InputError("params.yaml: data.fmri", f"{self.fmri!r} names a NIfTI "
                             "description, not a lab-release folder (use voxel_datasets())")
        base = self.simulated_root if self.fmri == "simulated" else self.lab_root
        return base / "neural" / dataset

    # ----------------------------------------------------------- NIfTI descriptions

    @property
    def is_nifti(self) -> bool:
        """True when ``data.fmri`` names a NIfTI dataset description."""
        return is_description(self.fmri)

    @property
    def nifti_description(self) -> Path:
        """The description file that ``data.fmri`` names (``<folder>/dataset.yaml`` or it)."""
        from brainalign.data.nifti import description_path

        if not self.is_nifti:
            raise InputError("params.yaml: data.fmri", f"{self.fmri!r} is not a NIfTI description")
        return description_path(self.root / self.fmri)

    def description(self) -> Description:
        """The parsed NIfTI description, its stimulus folder checked against ``data.stimuli``."""
        from brainalign.data.nifti import read_description

        desc = read_description(self.nifti_description)
        if desc.stimuli_folder is not None:
            expected = desc.stimuli_folder.relative_to(self.root).as_posix()
            if PurePosixPath(self.stimuli) != PurePosixPath(expected):
                raise InputError("params.yaml: data.stimuli", f"expected {expected!r}, the "
                                 f"stimulus folder of {desc.path} (the models hear the sounds "
                                 f"that extract@ depends on), got {self.stimuli!r}")
        return desc

    @property
    def simulated(self) -> bool:
        """True when the voxels are simulated: ``simulated``, or a description marked so."""
        if self.fmri == "simulated":
            return True
        if not self.is_nifti:
            return False
        from brainalign.data.fmri import PROVENANCE_FILE

        desc = self.description()
        provenance = desc.folder / PROVENANCE_FILE
        return desc.simulated or (
            provenance.is_file() and bool(json.loads(provenance.read_text()).get("simulated")))

    @property
    def needs_simulation(self) -> bool:
        """True when the configured voxels are written by ``brainalign simulate``."""
        sim = PurePosixPath(self.simulated_root.relative_to(self.root).as_posix())
        return self.fmri == "simulated" or (
            self.is_nifti and PurePosixPath(self.fmri).parts[:1] == sim.parts)

    def dataset_names(self) -> tuple[str, ...]:
        """The run's voxel datasets: NH2015 and B2021, or those the description defines."""
        if not self.is_nifti:
            return DATASETS
        return tuple(n for n in DATASETS if n in self.description().datasets)

    def voxel_dataset(self, name: str) -> VoxelDataset:
        """One voxel dataset of the configured source, loaded and validated."""
        if not self.is_nifti:
            from brainalign.data.fmri import load_voxel_dataset

            return load_voxel_dataset(self.neural(name), name)
        from brainalign.data.nifti import load_nifti_dataset

        return load_nifti_dataset(self.description(), name, self.labels_csv)

    def fmri_folder(self, name: str) -> Path:
        """The folder holding dataset ``name``'s files: its lab-release folder, or the NIfTI
        description's folder (every path of a description stays inside it)."""
        return self.nifti_description.parent if self.is_nifti else self.neural(name)

    def voxel_datasets(self) -> dict[str, VoxelDataset]:
        """Every voxel dataset of the run (:meth:`dataset_names`), loaded and validated."""
        return {name: self.voxel_dataset(name) for name in self.dataset_names()}

    @property
    def canonical_stimuli(self) -> bool:
        """True when the run's sounds are the canonical 165 (components and authors' folds)."""
        if not self.is_nifti:
            return True
        from brainalign.data.nifti import is_canonical

        return is_canonical(self.description())

    def stimulus_set(self) -> StimulusSet:
        """The sounds the models hear, at their own rate, in the datasets' stimulus order."""
        if not self.is_nifti:
            from brainalign.data.stimuli import load_stimuli

            return load_stimuli(self.wav_dir, self.labels_csv, sample_rate=None,
                                source_rate=None)
        from brainalign.data.nifti import load_stimulus_set

        return load_stimulus_set(self.description(), self.wav_dir, self.labels_csv)

    def folds_of(self, dataset: VoxelDataset) -> np.ndarray:
        """The dataset's own folds, else the authors' fold file of the 165 sounds."""
        from brainalign.data.folds import load_folds

        return dataset.folds if dataset.folds is not None else load_folds(self.folds)
