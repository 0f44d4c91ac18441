"""BEATs (Chen et al. 2023, microsoft/unilm): audio pre-training with acoustic tokenizers.

(Module docstring to be completed with the implementation notes.)
"""

from __future__ import annotations

from brainalign.models.spec import BuildContext, ModelSpec

SAMPLE_RATE = 16_000
HF_REPO = "lpepino/beats_ckpts"
LAYERS = tuple(str(i) for i in range(13))  # 0 = input to block 0, 1..12 = block outputs

_MODELS = (
    ("BEATs_iter1", "BEATs (B)", "self-supervised"),
    ("BEATs_iter2", "BEATs (It 2)", "self-supervised"),
    ("BEATs_iter3", "BEATs (It 3)", "self-supervised"),
    ("BEATs_iter3_finetuned_on_AS2M_cpt1", "BEATs (FT)", "supervised"),
)


def build(spec: ModelSpec, ctx: BuildContext):  # implemented below by the family's loader
    raise NotImplementedError(spec.name)


SPECS = [
    ModelSpec(
        name=key, label=label, family="BEATs", training=training, sample_rate=SAMPLE_RATE,
        layers=LAYERS, paper_keys={i: f"{key}_{i}" for i in LAYERS},
        build="brainalign.models.beats:build", fetched=True,
        frontend="brainalign.models.frontends.kaldi",
        description=f"BEATs {key}, HF {HF_REPO}/{key}.pt (the authors' mirror of the UNILM files)",
    )
    for key, label, training in _MODELS
]
