"""aiSFX sound-effects embedding CNN (Ma et al., ISMIR 2022), weights in aisfx==0.1.2.

``models/checkpoint.pth`` is a pickle of (state dict, dataset dict) holding numpy scalars, so it
is opened with ``torch.load(weights_only=False)`` -- only after its sha256 matched. Input:
44.1 kHz audio, peak-normalised, the package's librosa mel spectrogram (96 HTK mel bands,
2048-sample window, 1024 hop, power 2), log10(10^4 x + 1), min-max normalised with the paper's
constants (0, 9.4578). The whole sound is one block (the CNN is fully convolutional). Layers
``block<i>_conv<j>``: ReLU(BatchNorm(conv)) of the two convs in each of the four conv blocks,
maps (channels x mel bins) averaged over time and flattened (6144 each); ``embedding``: the
package's 512-d embedding (mean over mel bins, max over time of block 4). The random-init
control ``aisfx-random`` uses the package's own initialisation (Kaiming uniform) under the
extraction seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from brainalign.models.base import Runner
from brainalign.models.spec import BuildContext, ModelSpec, WeightsSpec
from brainalign.models.weights import verify_packaged

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 44_100
N_MELS, WIN, HOP = 96, 2048, 1024
SPEC_MAX = 9.457798957824707
LAYERS = (*(f"block{b}_conv{c}" for b in range(1, 5) for c in (1, 2)), "embedding")


def log_mel(wav: np.ndarray) -> np.ndarray:
    """The package's input representation, (frames, 96) float32."""
    import librosa

    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    y = wav / (peak if peak > 0 else 1.0)
    spec = librosa.feature.melspectrogram(
        y=y.astype(np.float32), sr=SAMPLE_RATE, n_mels=N_MELS, norm=1.0, fmin=0.0,
        fmax=SAMPLE_RATE / 2, htk=True, power=2.0, hop_length=HOP, win_length=WIN,
    )
    return (np.log10(spec * 10000.0 + 1) / SPEC_MAX).T.astype(np.float32)


class AisfxRunner(Runner):
    """Mel -> EmbeddingNet's four conv blocks, every conv read out."""

    def __init__(self, spec: ModelSpec, device: torch.device) -> None:
        import torch
        from aisfx.models.cnn2d import EmbeddingNet

        super().__init__(spec, device)
        net = EmbeddingNet("max", 3, 1, 64)  # the package's best model (X-Sequential-CE)
        if spec.weights is not None:
            path = verify_packaged(spec)  # before the trusted unpickling below
            weights, _ = torch.load(path, map_location="cpu", weights_only=False)
            prefix = "embedding_net."
            net.load_state_dict({k[len(prefix):]: v for k, v in weights.items()
                                 if k.startswith(prefix)})
        self.net = net.to(device).eval()

    def forward(self, audio: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        import torch
        import torch.nn.functional as F

        mels = np.stack([log_mel(w) for w in audio.detach().cpu().numpy()])
        x = torch.from_numpy(mels).to(self.device)[:, None]  # (B, 1, T, F)
        out = {}
        for b in range(1, 5):
            block = getattr(self.net, f"conv_block{b}")
            x = F.relu(block.bn1(block.conv1(x)))
            out[f"block{b}_conv1"] = x.mean(dim=2).flatten(1)
            x = F.relu(block.bn2(block.conv2(x)))
            out[f"block{b}_conv2"] = x.mean(dim=2).flatten(1)
            if b < 4:
                x = F.max_pool2d(x, kernel_size=(2, 2))
        out["embedding"] = x.mean(dim=3).max(dim=2).values
        return {k: out[k] for k in layers}


def build(spec: ModelSpec, ctx: BuildContext) -> Runner:
    """No options."""
    device = ctx.device
    return AisfxRunner(spec, device)


_COMMON = dict(family="aiSFX", sample_rate=SAMPLE_RATE, layers=LAYERS,
               build="brainalign.models.aisfx_cnn:build", min_samples=8 * HOP)

SPECS = [
    ModelSpec(
        name="aisfx", label="aiSFX", training="supervised",
        weights=WeightsSpec(
            source="pypi", package="aisfx", distribution="aisfx", version="0.1.2",
            path="models/checkpoint.pth",
            sha256="499ea75909c932a2f94c35fa722fa4fabc5bcb7e84917209cc5f7402627b7eb5",
            license="code MIT, model CC BY 4.0", trusted_pickle=True,
        ),
        description="aiSFX 9-layer CNN, supervised sound-effect classification", **_COMMON,
    ),
    ModelSpec(name="aisfx-random", label="aiSFX (random)", training="untrained", random_init=True,
              description="aiSFX architecture, seeded random initialisation", **_COMMON),
]
