"""Any HEAR 2021 API module as a model: ``hear:<module name>``.

The HEAR API (hearbenchmark.com): ``load_model(model_file_path="") -> model`` with attributes
``sample_rate``, ``scene_embedding_size``, ``timestamp_embedding_size``;
``get_scene_embeddings(audio (n, samples), model) -> (n, d)``;
``get_timestamp_embeddings(audio, model) -> ((n, frames, d), timestamps)``.
Layers: ``scene`` (the scene embedding as is) and ``timestamp`` (timestamp embeddings averaged
over frames). A module that exposes internal layers does so through the optional function
``get_layer_embeddings(audio, model) -> {name: (n, frames, d) or (n, d)}`` with the names listed
in ``model.layer_names``; each becomes a layer (frame outputs averaged over time). Build options:
``model_file_path`` (passed to ``load_model``).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from brainalign.errors import InputError
from brainalign.models.base import Runner
from brainalign.models.spec import HEAR_PREFIX, TRAINING_TYPES, BuildContext, ModelSpec

if TYPE_CHECKING:
    import torch

BASE_LAYERS = ("scene", "timestamp")
_REQUIRED = ("load_model", "get_scene_embeddings", "get_timestamp_embeddings")


def _import(module_name: str, where: str) -> Any:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(where, f"cannot import HEAR module {module_name!r} ({exc})") from None
    missing = [f for f in _REQUIRED if not callable(getattr(module, f, None))]
    if missing:
        raise InputError(where, f"module {module_name!r} is not a HEAR-API module: lacks {missing}")
    return module


def hear_spec(module_name: str, where: str = "model") -> ModelSpec:
    """Spec of a HEAR module; its sample rate and extra layers are known once it is loaded."""
    if not module_name:
        raise InputError(where, "expected 'hear:<module name>'")
    module = _import(module_name, where)
    training = getattr(module, "TRAINING", "supervised")
    if training not in TRAINING_TYPES:
        raise InputError(where, f"{module_name}.TRAINING must be one of {TRAINING_TYPES}")
    return ModelSpec(
        name=HEAR_PREFIX + module_name,
        label=getattr(module, "LABEL", module_name),
        family="HEAR",
        training=training,
        sample_rate=int(getattr(module, "SAMPLE_RATE", 16_000)),
        layers=BASE_LAYERS,
        build="brainalign.models.hear:build",
        min_samples=int(getattr(module, "MIN_SAMPLES", 1)),
        description=(module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else "",
    )


class HearRunner(Runner):
    """Calls the module's API functions on each batch."""

    def __init__(self, spec: ModelSpec, device: torch.device, options: dict[str, Any]) -> None:
        super().__init__(spec, device)
        self.module = _import(spec.name[len(HEAR_PREFIX):], spec.name)
        self.model = self.module.load_model(options.get("model_file_path", ""))
        if hasattr(self.model, "to"):
            self.model = self.model.to(device)
        if hasattr(self.model, "eval"):
            self.model.eval()
        self.sample_rate = int(self.model.sample_rate)
        extra: tuple[str, ...] = ()
        if callable(getattr(self.module, "get_layer_embeddings", None)):
            extra = tuple(getattr(self.model, "layer_names", ()))
            clash = set(extra) & set(BASE_LAYERS)
            if clash:
                raise InputError(spec.name, f"layer names {sorted(clash)} are reserved")
        self.layers = BASE_LAYERS + extra

    def forward(self, audio: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if "scene" in layers:
            out["scene"] = self.module.get_scene_embeddings(audio, self.model)
        if "timestamp" in layers:
            emb, _ts = self.module.get_timestamp_embeddings(audio, self.model)
            out["timestamp"] = emb.mean(dim=1)
        internal = [k for k in layers if k not in BASE_LAYERS]
        if internal:
            got = self.module.get_layer_embeddings(audio, self.model)
            for key in internal:
                x = got[key]
                out[key] = x.mean(dim=1) if x.ndim == 3 else x.flatten(1)
        return {k: out[k] for k in layers}

    def info(self) -> dict[str, Any]:
        return {"hear_module": self.module.__name__,
                "module_version": str(getattr(self.module, "__version__", ""))}


def build(spec: ModelSpec, ctx: BuildContext) -> Runner:
    """Option ``model_file_path`` (default "")."""
    return HearRunner(spec, ctx.device, dict(ctx.options))
