"""The ZeroSpeech 2020 VQ-VAE encoder (van Niekerk et al., bshall/ZeroSpeech), 2019 English.

(Module docstring to be completed with the implementation notes.)
"""

from __future__ import annotations

from brainalign.models.spec import BuildContext, ModelSpec

SAMPLE_RATE = 16_000
LAYERS = tuple(f"ReLU_{i}" for i in range(1, 6))
PAPER_KEYS = {f"ReLU_{i}": f"ReLU(inplace=True)--{i - 1}" for i in range(1, 6)}


def build(spec: ModelSpec, ctx: BuildContext):  # implemented below by the family's loader
    raise NotImplementedError(spec.name)


SPECS = [
    ModelSpec(
        name="braindnn_zerospeech", label="Zerospeech", family="Others",
        training="self-supervised", sample_rate=SAMPLE_RATE, layers=LAYERS,
        paper_keys=PAPER_KEYS, build="brainalign.models.zerospeech:build", fetched=True,
        description="ZeroSpeech 2020 VQ-VAE encoder, 2019 English (bshall/ZeroSpeech v0.1)",
    )
]
