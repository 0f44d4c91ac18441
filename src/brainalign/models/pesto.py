"""PESTO self-supervised pitch estimator (Riou et al. 2023), weights in pesto-pitch==2.0.1.

The shipped checkpoint ``mir-1k_g7`` is a pickle holding omegaconf objects, so it is opened with
full unpickling by ``pesto.load_model`` -- only after its sha256 matched the pinned value. Input:
16 kHz audio (PESTO accepts any rate; 16 kHz is MIR-1K's), a harmonic CQT every ``hop_ms``
(10 ms). Layers, all read from the package's own forward pass by hooks: ``conv1`` and
``prefilt1``/``prefilt2`` (40 channels x 219 CQT bins after LeakyReLU), ``pointwise1``..
``pointwise4`` (the 1x1 conv activations: 30, 30, 10, 3 channels x 219 bins), ``fc`` (the 384
Toeplitz-layer logits) and ``output`` (the 384 softmax pitch probabilities, shifted to absolute
pitch as PESTO does). CNN maps are flattened channel x frequency; everything is averaged over
frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from brainalign.errors import InputError
from brainalign.models.base import Runner, capture
from brainalign.models.spec import BuildContext, ModelSpec, WeightsSpec
from brainalign.models.weights import verify_packaged

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 16_000
LAYERS = ("conv1", "prefilt1", "prefilt2", "pointwise1", "pointwise2", "pointwise3",
          "pointwise4", "fc", "output")


class PestoRunner(Runner):
    """Runs ``pesto.PESTO.forward`` and reads the encoder's layers by forward hooks."""

    def __init__(self, spec: ModelSpec, device: torch.device, hop_ms: float) -> None:
        from pesto import load_model

        super().__init__(spec, device)
        path = verify_packaged(spec)  # before the (trusted) unpickling inside load_model
        self.model = load_model(str(path), step_size=hop_ms, sampling_rate=SAMPLE_RATE)
        self.model = self.model.to(device).eval()
        self.hop_ms = hop_ms
        enc = self.model.encoder
        self.modules = {"conv1": enc.conv1, "prefilt1": enc.prefilt_layers[0],
                        "prefilt2": enc.prefilt_layers[1], "fc": enc.fc}
        for i, idx in enumerate((1, 4, 7, 10), start=1):
            self.modules[f"pointwise{i}"] = enc.conv_layers[idx]

    def forward(self, audio: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        batch = audio.shape[0]
        wanted = {k: m for k, m in self.modules.items() if k in layers}
        with capture(wanted) as store:
            _, _, _, probs = self.model(audio, sr=SAMPLE_RATE, return_activations=True)
        out = {}
        for key in layers:
            if key == "output":
                out[key] = probs.reshape(batch, -1, probs.shape[-1]).mean(dim=1)
                continue
            x = store[key]
            x = x.reshape(batch, -1, *x.shape[1:])  # (B, frames, C, bins) or (B, frames, D)
            out[key] = x.mean(dim=1).flatten(1)
        return out

    def info(self) -> dict[str, Any]:
        return {"hop_ms": self.hop_ms, "checkpoint": "mir-1k_g7"}


def build(spec: ModelSpec, ctx: BuildContext) -> Runner:
    """Option ``hop_ms`` (CQT hop, default 10)."""
    device, options = ctx.device, dict(ctx.options)
    hop_ms = options.get("hop_ms", 10.0)
    if not isinstance(hop_ms, int | float) or hop_ms <= 0:
        raise InputError(f"extract.options.{spec.name}.hop_ms", f"expected > 0, got {hop_ms!r}")
    return PestoRunner(spec, device, float(hop_ms))


SPECS = [
    ModelSpec(
        name="pesto", label="PESTO", family="PESTO", training="self-supervised",
        sample_rate=SAMPLE_RATE, layers=LAYERS, build="brainalign.models.pesto:build",
        weights=WeightsSpec(
            source="pypi", package="pesto", distribution="pesto-pitch", version="2.0.1",
            path="weights/mir-1k_g7.ckpt",
            sha256="16c32e06ddd950e3e4866dfa3c7f8a87c4988f8adf43e57977b189f031f26f3e",
            license="LGPL-3.0", trusted_pickle=True,
        ),
        min_samples=SAMPLE_RATE // 10,
        options={"hop_ms": 10.0},
        description="PESTO (mir-1k_g7), self-supervised pitch estimation on a CQT",
    )
]
