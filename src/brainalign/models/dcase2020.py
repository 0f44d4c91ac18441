"""The DCASE 2020 audio-captioning baseline (Drossos et al.), as Tuckute et al. 2023 tapped it.

(Module docstring to be completed with the implementation notes.)
"""

from __future__ import annotations

from brainalign.models.spec import BuildContext, ModelSpec

SAMPLE_RATE = 44_100
LAYERS = ("GRU_1", "GRU_2", "GRU_3", "GRU_4", "Linear")
PAPER_KEYS = {
    "GRU_1": "GRU(64, 256, batch_first=True, bidirectional=True)--0--hidden",
    "GRU_2": "GRU(512, 256, batch_first=True, bidirectional=True)--0--hidden",
    "GRU_3": "GRU(512, 256, batch_first=True, bidirectional=True)--1--hidden",
    "GRU_4": "GRU(512, 256, batch_first=True)--0--hidden",
    "Linear": "Linear(in_features=256, out_features=4367, bias=True)--0",
}


def build(spec: ModelSpec, ctx: BuildContext):  # implemented below by the family's loader
    raise NotImplementedError(spec.name)


SPECS = [
    ModelSpec(
        name="braindnn_dcase2020", label="DCASE2020", family="Others", training="supervised",
        sample_rate=SAMPLE_RATE, layers=LAYERS, paper_keys=PAPER_KEYS,
        build="brainalign.models.dcase2020:build", fetched=True,
        description="DCASE 2020 task 6 captioning baseline (gretatuckute/dcase-2020-baseline)",
    )
]
