"""Any HEAR 2021 API module as a model: ``hear-<module>`` (``hear:<module>`` is accepted too).

The HEAR API (hearbenchmark.com): ``load_model(model_file_path="") -> model`` with attributes
``sample_rate``, ``scene_embedding_size``, ``timestamp_embedding_size``;
``get_scene_embeddings(audio (n, samples), model) -> (n, d)``;
``get_timestamp_embeddings(audio, model) -> ((n, frames, d), timestamps)``.
Layers: ``scene`` (the scene embedding as is) and ``timestamp`` (timestamp embeddings averaged
over frames). A module that exposes internal layers does so through the optional function
``get_layer_embeddings(audio, model) -> {name: (n, frames, d) or (n, d)}`` with the names listed
in ``model.layer_names``; each becomes a layer (frame outputs averaged over time). Build options
(params.yaml ``extract.options.hear-<module>``): ``model_file_path`` (passed to ``load_model``),
``layers``.

**Where the module is found.** An installed module, or a file ``<module>.py`` (or a package
folder ``<module>/``) in the workspace: the folder that ``brainalign`` and ``dvc repro`` run
in, holding params.yaml. That folder is appended to ``sys.path`` when a HEAR name is resolved,
so no PYTHONPATH is needed (an installed module of the same name wins).

**Model key.** ``brainalign add-model hear:<module>`` adds ``hear-<module>`` to params.yaml
``models``: every output is named by it (``build/activations/hear-<module>.npz``; no colon, which
some file systems and DVC stage addresses refuse). Its DVC dependencies
(:func:`stage_dependencies`): the module's own file (or package folder) when it lies in the
workspace, so editing it reruns its stages; for an installed module, this file.

**Optional module attributes** (read by :func:`hear_spec`):

- ``TRAINING``: ``self-supervised``, ``supervised``, ``untrained`` or ``unknown`` (the default):
  the training type in the tables and figures;
- ``LABEL``: the display name (default: the module name);
- ``SAMPLE_RATE``: the input rate listed by ``brainalign models`` before the model is loaded
  (default 16000); when given it must equal ``model.sample_rate``;
- ``MIN_SAMPLES``: the shortest input (at the model's rate) that gives every layer a frame;
  shorter sounds are zero-padded (default 1);
- ``__version__``: recorded in the activation file.

**Checks at extract.** Each function must return a tensor (or numpy array) with one row per
sound, the documented number of dimensions, the declared embedding size and finite values;
otherwise extraction stops with one error naming the module file, the function and what was
expected (a NaN embedding never reaches ``regress``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brainalign.errors import InputError
from brainalign.models.base import Runner
from brainalign.models.spec import HEAR_PREFIX, TRAINING_TYPES, BuildContext, ModelSpec

if TYPE_CHECKING:
    import torch

BASE_LAYERS = ("scene", "timestamp")
HEAR_KEY_PREFIX = "hear-"
"""The params.yaml key prefix of a HEAR module (file-name safe)."""
HEAR_PREFIXES = (HEAR_PREFIX, HEAR_KEY_PREFIX)
DEFAULT_TRAINING = "unknown"
DEFAULT_SAMPLE_RATE = 16_000
HEAR_CODE = "src/brainalign/models/hear.py"
_REQUIRED = ("load_model", "get_scene_embeddings", "get_timestamp_embeddings")


def is_hear(name: str) -> bool:
    """True for ``hear-<module>`` and ``hear:<module>``."""
    return name.startswith(HEAR_PREFIXES)


def model_key(name: str) -> str:
    """The params.yaml key of a model: ``hear:<module>`` -> ``hear-<module>``; others as given."""
    return HEAR_KEY_PREFIX + name[len(HEAR_PREFIX):] if name.startswith(HEAR_PREFIX) else name


def module_name(name: str) -> str:
    """The module of ``hear-<module>`` / ``hear:<module>`` (a bare module name as is)."""
    return name[len(HEAR_PREFIX):] if is_hear(name) else name


def workspace() -> Path:
    """The workspace root: the folder brainalign runs in (``dvc repro`` runs stages there)."""
    return Path.cwd()


def _ensure_workspace_on_path() -> None:
    root = str(workspace().resolve())
    if root not in (str(Path(p).resolve()) for p in sys.path if p):
        sys.path.append(root)
        importlib.invalidate_caches()


def _import(module: str, where: str) -> Any:
    if not module or not all(part.isidentifier() for part in module.split(".")):
        raise InputError(where, f"expected 'hear-<module>' with an importable module name, got "
                         f"{module!r}")
    _ensure_workspace_on_path()
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise InputError(where, f"cannot import HEAR module {module!r} ({exc}); expected an "
                         f"installed module or {module.replace('.', '/')}.py in the workspace "
                         f"{workspace()}") from None
    missing = [f for f in _REQUIRED if not callable(getattr(mod, f, None))]
    if missing:
        raise InputError(where, f"module {module!r} is not a HEAR-API module: lacks {missing}")
    return mod


def _module_where(mod: Any) -> str:
    """The module's file, relative to the workspace when inside it (for error messages)."""
    path = Path(getattr(mod, "__file__", "") or mod.__name__)
    try:
        return path.resolve().relative_to(workspace().resolve()).as_posix()
    except ValueError:
        return str(path)


def hear_spec(name: str, where: str = "model") -> ModelSpec:
    """Spec of a HEAR module; its sample rate and extra layers are known once it is loaded.

    ``name`` is ``hear-<module>``, ``hear:<module>`` (kept as spelled: it is the model's name)
    or a bare module name (named ``hear:<module>``).
    """
    module = module_name(name)
    if not module:
        raise InputError(where, "expected 'hear-<module name>'")
    mod = _import(module, where)
    training = getattr(mod, "TRAINING", DEFAULT_TRAINING)
    if training not in TRAINING_TYPES:
        raise InputError(_module_where(mod), f"TRAINING must be one of {list(TRAINING_TYPES)}, "
                         f"got {training!r}")
    values = {}
    for attr, default in (("SAMPLE_RATE", DEFAULT_SAMPLE_RATE), ("MIN_SAMPLES", 1)):
        value = getattr(mod, attr, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(_module_where(mod), f"{attr} must be an integer >= 1, got {value!r}")
        values[attr] = value
    label = getattr(mod, "LABEL", module)
    if not isinstance(label, str) or not label:
        raise InputError(_module_where(mod), f"LABEL must be a non-empty string, got {label!r}")
    return ModelSpec(
        name=name if is_hear(name) else HEAR_PREFIX + module,
        label=label,
        family="HEAR",
        training=training,
        sample_rate=values["SAMPLE_RATE"],
        layers=BASE_LAYERS,
        build="brainalign.models.hear:build",
        min_samples=values["MIN_SAMPLES"],
        description=(mod.__doc__ or "").strip().splitlines()[0] if mod.__doc__ else "",
    )


def module_source(name: str) -> str:
    """The DVC dependency that holds a HEAR module's code: its file (a package: its folder)
    relative to the workspace when it lies there, else this module's file."""
    mod = _import(module_name(name), name)
    path = Path(getattr(mod, "__file__", "") or "")
    if path.name == "__init__.py":
        path = path.parent
    try:
        return path.resolve().relative_to(workspace().resolve()).as_posix()
    except ValueError:
        return HEAR_CODE


def stage_dependencies(name: str, data_root: str = "data") -> dict[str, str]:
    """params.yaml ``models.hear-<module>``: code and weights = :func:`module_source`, front
    end = this file (the API adapter)."""
    source = module_source(name)
    return {"code": source, "frontend": HEAR_CODE, "weights": source}


class HearRunner(Runner):
    """Calls the module's API functions on each batch, checking what they return."""

    def __init__(self, spec: ModelSpec, device: torch.device, options: dict[str, Any]) -> None:
        super().__init__(spec, device)
        self.module = _import(module_name(spec.name), spec.name)
        self.where = _module_where(self.module)
        self.model = self.module.load_model(options.get("model_file_path", ""))
        if hasattr(self.model, "to"):
            self.model = self.model.to(device)
        if hasattr(self.model, "eval"):
            self.model.eval()
        rate = getattr(self.model, "sample_rate", None)
        if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
            raise InputError(self.where, f"load_model() returned a model whose sample_rate is "
                             f"{rate!r}; expected a positive integer (HEAR API)")
        if hasattr(self.module, "SAMPLE_RATE") and rate != spec.sample_rate:
            raise InputError(self.where, f"SAMPLE_RATE is {spec.sample_rate} but the model's "
                             f"sample_rate is {rate}; expected them equal")
        self.sample_rate = rate
        extra: tuple[str, ...] = ()
        if callable(getattr(self.module, "get_layer_embeddings", None)):
            extra = tuple(getattr(self.model, "layer_names", ()))
            clash = set(extra) & set(BASE_LAYERS)
            if clash:
                raise InputError(spec.name, f"layer names {sorted(clash)} are reserved")
        self.layers = BASE_LAYERS + extra

    def _check(self, x: Any, what: str, n: int, ndims: tuple[int, ...], size: Any) -> torch.Tensor:
        """``x`` as a tensor of ``ndims`` dimensions, ``n`` rows, finite; else one InputError."""
        import numpy as np
        import torch

        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        shapes = " or ".join({2: "(n_sounds, d)", 3: "(n_sounds, frames, d)"}[k] for k in ndims)
        if not isinstance(x, torch.Tensor):
            raise InputError(self.where, f"{what} returned a {type(x).__name__}; expected a "
                             f"tensor of shape {shapes}")
        if x.ndim not in ndims or x.shape[0] != n or 0 in x.shape:
            raise InputError(self.where, f"{what} returned shape {tuple(x.shape)} for {n} sounds; "
                             f"expected {shapes} with n_sounds = {n}")
        if isinstance(size, int) and x.shape[-1] != size:
            raise InputError(self.where, f"{what} returned embeddings of size {x.shape[-1]}; "
                             f"expected the model's declared size {size}")
        bad = ~torch.isfinite(x.float()).reshape(n, -1).all(dim=1)
        if bool(bad.any()):
            raise InputError(self.where, f"{what} returned NaN or infinite values for "
                             f"{int(bad.sum())} of {n} sounds; expected finite embeddings")
        return x

    def forward(self, audio: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        n = int(audio.shape[0])
        out: dict[str, torch.Tensor] = {}
        if "scene" in layers:
            out["scene"] = self._check(self.module.get_scene_embeddings(audio, self.model),
                                       "get_scene_embeddings", n, (2,),
                                       getattr(self.model, "scene_embedding_size", None))
        if "timestamp" in layers:
            got = self.module.get_timestamp_embeddings(audio, self.model)
            if not isinstance(got, tuple | list) or len(got) != 2:
                raise InputError(self.where, "get_timestamp_embeddings returned "
                                 f"{type(got).__name__}; expected (embeddings, timestamps)")
            emb = self._check(got[0], "get_timestamp_embeddings", n, (3,),
                              getattr(self.model, "timestamp_embedding_size", None))
            out["timestamp"] = emb.mean(dim=1)
        internal = [k for k in layers if k not in BASE_LAYERS]
        if internal:
            got = self.module.get_layer_embeddings(audio, self.model)
            if not isinstance(got, dict):
                raise InputError(self.where, f"get_layer_embeddings returned "
                                 f"{type(got).__name__}; expected a dict layer name -> tensor")
            for key in internal:
                if key not in got:
                    raise InputError(self.where, f"get_layer_embeddings returned no layer "
                                     f"{key!r}; expected every name of model.layer_names")
                x = self._check(got[key], f"get_layer_embeddings[{key!r}]", n, (2, 3), None)
                out[key] = x.mean(dim=1) if x.ndim == 3 else x
        return {k: out[k] for k in layers}

    def info(self) -> dict[str, Any]:
        return {"hear_module": self.module.__name__, "module_file": self.where,
                "module_version": str(getattr(self.module, "__version__", ""))}


def build(spec: ModelSpec, ctx: BuildContext) -> Runner:
    """Option ``model_file_path`` (default "")."""
    return HearRunner(spec, ctx.device, dict(ctx.options))
