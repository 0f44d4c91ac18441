"""SepFormer trained on WHAMR! (speechbrain/sepformer-whamr), as Tuckute et al. 2023 tapped it.

(Module docstring to be completed with the implementation notes.)
"""

from __future__ import annotations

from brainalign.models.spec import BuildContext, ModelSpec

SAMPLE_RATE = 8_000
HF_REPO = "speechbrain/sepformer-whamr"
LAYERS = ("Embedding", *(f"Encoder_{i}" for i in range(1, 33)))
PAPER_KEYS = {
    "Embedding": "Conv1d(1, 256, kernel_size=(16,), stride=(8,), bias=False)--0",
    **{f"Encoder_{i}": f"Linear(in_features=1024, out_features=256, bias=True)--{i - 1}"
       for i in range(1, 33)},
}


def build(spec: ModelSpec, ctx: BuildContext):  # implemented below by the family's loader
    raise NotImplementedError(spec.name)


SPECS = [
    ModelSpec(
        name="braindnn_sepformer", label="Sepformer", family="Others", training="supervised",
        sample_rate=SAMPLE_RATE, layers=LAYERS, paper_keys=PAPER_KEYS,
        build="brainalign.models.sepformer:build", fetched=True,
        description=f"SepFormer speech separation, WHAMR! (HF {HF_REPO})",
    )
]
