"""The model registry: name -> :class:`~brainalign.models.spec.ModelSpec`, resolved lazily.

Each family module declares its models in a module-level ``SPECS`` list and imports nothing
heavy at import time (torch, model packages and weights load inside its ``build`` function),
so resolving names or listing all models costs milliseconds. A name ``hear:<module>`` is any
importable HEAR 2021 API module (:mod:`brainalign.models.hear`), resolved on demand.

Import graph (no cycles): ``spec`` <- ``base`` <- family modules and ``hear``; ``spec`` <-
``registry``, which reaches family modules only by name through importlib.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from functools import cache
from typing import Any

from brainalign.errors import InputError
from brainalign.models.spec import (
    HEAR_PREFIX,
    MODELS_PACKAGE,
    TRAINING_TYPES,
    ModelSpec,
    module_file,
)

__all__ = ["HEAR_PREFIX", "TRAINING_TYPES", "FAMILY_MODULES", "ModelSpec", "get_spec",
           "model_names", "stage_dependencies", "family_of"]

_HEAR_RESOLVER = f"{MODELS_PACKAGE}.hear:hear_spec"
_HEAR_DEPENDENCIES = f"{MODELS_PACKAGE}.hear:stage_dependencies"

FAMILY_MODULES: tuple[str, ...] = (
    "spectemp",
    "crepe",
    "pesto",
    "fcpe",
    "resemblyzer_ge2e",
    "aisfx_cnn",
    "soundnet",
    # The paper's pretrained models (Pepino et al. 2025; paper-models.md).
    "encodecmae",
    "beats",
    "dasheng",
    "cochdnn",
    "ast",
    "vggish",
    "wav2vec2",
    "s2t",
    "dcase2020",
    "deepspeech2",
    "sepformer",
    "zerospeech",
    "metricgan",
)
"""Family modules of :mod:`brainalign.models` whose ``SPECS`` are registered, in order."""

ALIASES: dict[str, str] = {"braindnn_spectemp_filters": "spectemp"}
"""The paper's key for a model registered under another name (the same spec, renamed)."""


@cache
def _registry() -> dict[str, ModelSpec]:
    out: dict[str, ModelSpec] = {}
    for family in FAMILY_MODULES:
        module = importlib.import_module(f"{MODELS_PACKAGE}.{family}")
        for spec in module.SPECS:
            if spec.name in out:
                raise ValueError(f"model {spec.name!r} registered twice")
            out[spec.name] = spec
    for alias, target in ALIASES.items():
        out[alias] = dataclasses.replace(out[target], name=alias)
    return out


def model_names() -> list[str]:
    """Names of all registered models (HEAR modules are addressed as ``hear:<module>``)."""
    return list(_registry())


def get_spec(name: str, where: str = "model") -> ModelSpec:
    """The spec of ``name``; an unknown name raises InputError suggesting the closest ones."""
    if name.startswith((HEAR_PREFIX, "hear-")):  # hear:<module> or its params key hear-<module>
        module, _, func = _HEAR_RESOLVER.partition(":")
        return getattr(importlib.import_module(module), func)(name, where)
    registry = _registry()
    if name in registry:
        return registry[name]
    close = difflib.get_close_matches(name, list(registry), n=3, cutoff=0.4)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise InputError(
        where,
        f"unknown model {name!r}; {hint}see `brainalign models` for the {len(registry)} "
        "registered ones (or 'hear:<module>' for a HEAR-API module)",
    )


def family_of(name: str) -> str:
    """The family module (``brainalign.models.<family>``) that builds ``name``."""
    return get_spec(name).module


def stage_dependencies(name: str, data_root: str = "data") -> dict[str, Any]:
    """The per-model DVC dependencies of ``extract@``/``downstream@`` (params.yaml ``models``).

    ``code``: the family module; ``frontend``: the shared front-end module it uses (the family
    module again when none); ``weights``: ``<data root>/weights/<model>`` for fetched
    checkpoints, else the family module (it pins a packaged file's sha256, or holds the seeded
    initialisation of an untrained model). Editing one family's module or one model's weights
    leaves every other model's stages up to date.
    """
    if name.startswith((HEAR_PREFIX, "hear-")):  # the module's own file when in the workspace
        module, _, func = _HEAR_DEPENDENCIES.partition(":")
        return getattr(importlib.import_module(module), func)(name, data_root)
    spec = get_spec(name)
    code = module_file(spec.module)
    frontend = module_file(spec.frontend) if spec.frontend else code
    weights = f"{data_root}/weights/{spec.name}" if spec.fetched else code
    return {"code": code, "frontend": frontend, "weights": weights}
