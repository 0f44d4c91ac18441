"""Resemblyzer GE2E speaker encoder (Wan et al. 2018), weights in resemblyzer==0.1.4.

The package's single ``nn.LSTM(40, 256, num_layers=3)`` is split into three one-layer LSTMs with
copied weights so every layer can be read; the third layer's outputs equal the original
three-layer LSTM's outputs. Input: 16 kHz audio, the package's 40-band mel spectrogram (25-ms
window, 10-ms hop; ``resemblyzer.audio.wav_to_mel_spectrogram``). The package's voice-activity
trimming (``preprocess_wav``) is not applied: it targets speech and would delete most of a
non-speech sound. Layers ``lstm1``..``lstm3``: hidden states over the whole sound, averaged over
frames (256 each). ``embedding``: the package's utterance embedding, computed exactly as
``VoiceEncoder.embed_utterance`` (1.6-s partials at 1.3 per second, final hidden state ->
linear -> ReLU -> L2 norm, averaged and renormalised), using the split LSTMs.
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

SAMPLE_RATE = 16_000
LAYERS = ("lstm1", "lstm2", "lstm3", "embedding")
HIDDEN = 256


class GE2ERunner(Runner):
    """Mel -> three one-layer LSTMs (+ the package's partial-utterance embedding)."""

    def __init__(self, spec: ModelSpec, device: torch.device) -> None:
        import torch

        super().__init__(spec, device)
        path = verify_packaged(spec)
        state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
        self.lstms = torch.nn.ModuleList()
        for i in range(3):
            lstm = torch.nn.LSTM(40 if i == 0 else HIDDEN, HIDDEN, num_layers=1, batch_first=True)
            lstm.load_state_dict({f"{name}_l0": state[f"lstm.{name}_l{i}"]
                                  for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
            self.lstms.append(lstm)
        self.linear = torch.nn.Linear(HIDDEN, HIDDEN)
        self.linear.load_state_dict(
            {"weight": state["linear.weight"], "bias": state["linear.bias"]})
        self.lstms.to(device).eval()
        self.linear.to(device).eval()

    @staticmethod
    def mel(wav: np.ndarray) -> np.ndarray:
        """The package's mel spectrogram (frames, 40)."""
        from resemblyzer.audio import wav_to_mel_spectrogram

        return wav_to_mel_spectrogram(np.asarray(wav, dtype=np.float32))

    def layer_outputs(self, mels: torch.Tensor) -> list[torch.Tensor]:
        """(batch, frames, 40) -> per-layer hidden sequences [(batch, frames, 256)] * 3."""
        outs = []
        x = mels
        for lstm in self.lstms:
            x, _ = lstm(x)
            outs.append(x)
        return outs

    def embed_utterance(self, wav: np.ndarray) -> np.ndarray:
        """``VoiceEncoder.embed_utterance`` reproduced with the split LSTMs."""
        import torch
        from resemblyzer import VoiceEncoder

        wav_slices, mel_slices = VoiceEncoder.compute_partial_slices(len(wav), 1.3, 0.75)
        if wav_slices[-1].stop >= len(wav):
            wav = np.pad(wav, (0, wav_slices[-1].stop - len(wav)))
        mel = self.mel(wav)
        partials = torch.from_numpy(np.array([mel[s] for s in mel_slices])).to(self.device)
        last = self.layer_outputs(partials)[-1][:, -1]
        raw = torch.relu(self.linear(last))
        partial_embeds = (raw / torch.norm(raw, dim=1, keepdim=True)).cpu().numpy()
        mean = partial_embeds.mean(axis=0)
        return mean / np.linalg.norm(mean, 2)

    def forward(self, audio: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        import torch

        wavs = audio.detach().cpu().numpy()
        out: dict[str, torch.Tensor] = {}
        if any(k != "embedding" for k in layers):
            mels = torch.from_numpy(np.stack([self.mel(w) for w in wavs])).to(self.device)
            seqs = self.layer_outputs(mels)
            for i, key in enumerate(("lstm1", "lstm2", "lstm3")):
                if key in layers:
                    out[key] = seqs[i].mean(dim=1)
        if "embedding" in layers:
            emb = np.stack([self.embed_utterance(w) for w in wavs])
            out["embedding"] = torch.from_numpy(emb).to(self.device)
        return {k: out[k] for k in layers}


def build(spec: ModelSpec, ctx: BuildContext) -> Runner:
    """No options."""
    device = ctx.device
    return GE2ERunner(spec, device)


SPECS = [
    ModelSpec(
        name="resemblyzer", label="Resemblyzer", family="GE2E", training="supervised",
        sample_rate=SAMPLE_RATE, layers=LAYERS, build="brainalign.models.resemblyzer_ge2e:build",
        weights=WeightsSpec(
            source="pypi", package="resemblyzer", distribution="resemblyzer", version="0.1.4",
            path="pretrained.pt",
            sha256="39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e",
            license="Apache-2.0",
        ),
        min_samples=400,
        description="GE2E speaker encoder (3-layer LSTM), supervised speaker verification",
    )
]
