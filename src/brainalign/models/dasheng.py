"""Dasheng (Dinkel et al. 2024): deep audio-signal holistic embeddings, masked autoencoders.

(Module docstring to be completed with the implementation notes.)
"""

from __future__ import annotations

from brainalign.models.spec import BuildContext, ModelSpec

SAMPLE_RATE = 16_000

# key, label, training, layer indices (the paper's layer_map)
_MODELS = (
    ("dasheng_base", "Dasheng (B)", "self-supervised", tuple(range(12))),
    ("dasheng_06B", "Dasheng (XL)", "self-supervised", (*range(0, 31, 3), 31)),
    ("dasheng_12B", "Dasheng (XXL)", "self-supervised", (*range(0, 37, 4), 39)),
    ("dasheng_base_ft-as", "Dasheng (FT)", "supervised", tuple(range(12))),
)


def build(spec: ModelSpec, ctx: BuildContext):  # implemented below by the family's loader
    raise NotImplementedError(spec.name)


SPECS = [
    ModelSpec(
        name=key, label=label, family="Dasheng", training=training, sample_rate=SAMPLE_RATE,
        layers=tuple(str(i) for i in layers), paper_keys={str(i): f"{key}_{i}" for i in layers},
        build="brainalign.models.dasheng:build", fetched=True,
        description=f"Dasheng {key} (Zenodo)",
    )
    for key, label, training, layers in _MODELS
]
