"""AST (Gong et al. 2021), the AudioSet 0.4593 checkpoint, as Tuckute et al. 2023 tapped it.

(Module docstring to be completed with the implementation notes.)
"""

from __future__ import annotations

from brainalign.models.spec import BuildContext, ModelSpec

SAMPLE_RATE = 16_000
LAYERS = ("Embedding", *(f"Encoder_{i}" for i in range(1, 13)), "Final")
PAPER_KEYS = {
    "Embedding": "Conv2d(1, 768, kernel_size=(16, 16), stride=(10, 10))--0",
    **{f"Encoder_{i}": f"Linear(in_features=3072, out_features=768, bias=True)--{i - 1}"
       for i in range(1, 13)},
    "Final": "Final",
}


def build(spec: ModelSpec, ctx: BuildContext):  # implemented below by the family's loader
    raise NotImplementedError(spec.name)


SPECS = [
    ModelSpec(
        name="braindnn_ast", label="AST", family="Others", training="supervised",
        sample_rate=SAMPLE_RATE, layers=LAYERS, paper_keys=PAPER_KEYS,
        build="brainalign.models.ast:build", fetched=True,
        frontend="brainalign.models.frontends.kaldi",
        description="Audio Spectrogram Transformer, AudioSet 10-10 0.4593 (gretatuckute/ast)",
    )
]
