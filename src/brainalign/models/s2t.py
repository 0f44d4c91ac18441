"""Speech2Text large, LibriSpeech ASR (facebook/s2t-large-librispeech-asr), via transformers.

(Module docstring to be completed with the implementation notes.)
"""

from __future__ import annotations

from brainalign.models.spec import BuildContext, ModelSpec

SAMPLE_RATE = 16_000
HF_REPO = "facebook/s2t-large-librispeech-asr"
LAYERS = ("Embedding", *(f"Encoder_{i}" for i in range(1, 13)))


def build(spec: ModelSpec, ctx: BuildContext):  # implemented below by the family's loader
    raise NotImplementedError(spec.name)


SPECS = [
    ModelSpec(
        name="braindnn_s2t", label="S2T", family="Others", training="supervised",
        sample_rate=SAMPLE_RATE, layers=LAYERS, paper_keys={k: k for k in LAYERS},
        build="brainalign.models.s2t:build", fetched=True,
        frontend="brainalign.models.frontends.kaldi",
        description=f"Speech2Text large ASR encoder (HF {HF_REPO})",
    )
]
