"""FCPE fast context-based pitch estimator, weights in torchfcpe==0.0.4 (``fcpe_c_v001.pt``).

The checkpoint is a plain dict (config + state dict) and loads with ``weights_only=True``.
Dropout is set to 0 as in ``torchfcpe.spawn_bundled_infer_model``. Input: 16 kHz audio, the
package's 128-bin log-mel (hop 160 = 10 ms). Layers: ``input_stack`` (conv front end, 512),
``encoder1``..``encoder6`` (the six conformer-style encoder layers, 512), ``norm`` (final
LayerNorm, 512) and ``output`` (the 360 sigmoid pitch-bin latents), each averaged over frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from brainalign.models.base import Runner, capture
from brainalign.models.spec import BuildContext, ModelSpec, WeightsSpec
from brainalign.models.weights import verify_packaged

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 16_000
LAYERS = ("input_stack", *(f"encoder{i}" for i in range(1, 7)), "norm", "output")


class FcpeRunner(Runner):
    """Mel front end -> CFNaiveMelPE, with hooks on its sub-modules."""

    def __init__(self, spec: ModelSpec, device: torch.device) -> None:
        import torch
        from torchfcpe.models_infer import InferCFNaiveMelPE
        from torchfcpe.tools import DotDict

        super().__init__(spec, device)
        path = verify_packaged(spec)
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        ckpt["config_dict"]["model"]["conv_dropout"] = 0.0
        ckpt["config_dict"]["model"]["atten_dropout"] = 0.0
        infer = InferCFNaiveMelPE(DotDict(ckpt["config_dict"]), ckpt["model"])
        self.infer = infer.to(device).eval()
        net = self.infer.model
        self.modules = {"input_stack": net.input_stack, "norm": net.norm}
        for i, layer in enumerate(net.net.encoder_layers, start=1):
            self.modules[f"encoder{i}"] = layer

    def latent(self, audio: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(batch, samples) -> per-frame pitch latents (B, T, 360) and the hooked outputs."""
        with capture(self.modules) as store:
            mel = self.infer.wav2mel(audio[..., None], SAMPLE_RATE)
            latent = self.infer.model(mel)
        return latent, dict(store)

    def forward(self, audio: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        latent, store = self.latent(audio)
        store["output"] = latent
        out = {}
        for key in layers:
            x = store[key]
            if key == "input_stack":  # Conv1d output: (B, C, T)
                out[key] = x.mean(dim=-1)
            else:  # (B, T, D)
                out[key] = x.mean(dim=1)
        return out


def build(spec: ModelSpec, ctx: BuildContext) -> Runner:
    """No options."""
    device = ctx.device
    return FcpeRunner(spec, device)


SPECS = [
    ModelSpec(
        name="fcpe", label="FCPE", family="FCPE", training="supervised",
        sample_rate=SAMPLE_RATE, layers=LAYERS, build="brainalign.models.fcpe:build",
        weights=WeightsSpec(
            source="pypi", package="torchfcpe", distribution="torchfcpe", version="0.0.4",
            path="assets/fcpe_c_v001.pt",
            sha256="b9aeaeb673436eeda50ceafd632aa681aa63417e52eae4207503d180c9b10015",
            license="MIT",
        ),
        min_samples=1024,
        description="FCPE (fcpe_c_v001), supervised pitch estimation on a mel spectrogram",
    )
]
