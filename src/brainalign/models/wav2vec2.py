"""wav2vec 2.0 base fine-tuned on LibriSpeech 960 h (facebook/wav2vec2-base-960h), via transformers.

(Module docstring to be completed with the implementation notes.)
"""

from __future__ import annotations

from brainalign.models.spec import BuildContext, ModelSpec

SAMPLE_RATE = 16_000
HF_REPO = "facebook/wav2vec2-base-960h"
LAYERS = ("Embedding", *(f"Encoder_{i}" for i in range(1, 13)))


def build(spec: ModelSpec, ctx: BuildContext):  # implemented below by the family's loader
    raise NotImplementedError(spec.name)


SPECS = [
    ModelSpec(
        name="braindnn_wav2vec2", label="Wav2Vec 2.0", family="Others", training="supervised",
        sample_rate=SAMPLE_RATE, layers=LAYERS, paper_keys={k: k for k in LAYERS},
        build="brainalign.models.wav2vec2:build", fetched=True,
        description=f"wav2vec 2.0 base, CTC fine-tuned (HF {HF_REPO})",
    )
]
