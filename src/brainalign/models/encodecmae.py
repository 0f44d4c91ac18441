"""EnCodecMAE (Pepino et al.): masked autoencoders predicting EnCodec tokens. 10 paper models.

(Module docstring to be completed with the implementation notes.)
"""

from __future__ import annotations

from brainalign.models.spec import BuildContext, ModelSpec

SAMPLE_RATE = 24_000
HF_REPO = "lpepino/encodecmae-v2"

# key, label, layer indices (the paper's layer_map), the input front end
_MODELS = (
    ("mel256-ec-base", "ECMAE (B)", tuple(range(10)), "mel"),
    ("mel256-ec-base-as", "ECMAE (AS)", tuple(range(10)), "mel"),
    ("mel256-ec-base-fma", "ECMAE (FMA)", tuple(range(10)), "mel"),
    ("mel256-ec-base-ll", "ECMAE (LL)", tuple(range(10)), "mel"),
    ("mel256-ec-small", "ECMAE (S)", tuple(range(5)), "mel"),
    ("mel256-ec-large", "ECMAE (L)", (*range(0, 20, 2), 19), "mel"),
    ("mel256-ec-base_st-nopn", "ECMAE (It 2)", tuple(range(10)), "mel"),
    ("mel256-ec-large_st-nopn", "ECMAE (L+It 3)", (*range(0, 20, 2), 19), "mel"),
    ("ec-ec-base", "ECMAE (EC)", tuple(range(10)), "encodec"),
    ("spec-ec-base", "ECMAE (Spec)", tuple(range(10)), "spec"),
)


def build(spec: ModelSpec, ctx: BuildContext):  # implemented below by the family's loader
    raise NotImplementedError(spec.name)


SPECS = [
    ModelSpec(
        name=key,
        label=label,
        family="EnCodecMAE",
        training="self-supervised",
        sample_rate=SAMPLE_RATE,
        layers=tuple(str(i) for i in layers),
        paper_keys={str(i): f"{key}_{i}" for i in layers},
        build="brainalign.models.encodecmae:build",
        fetched=True,
        frontend=None if frontend == "encodec" else "brainalign.models.frontends.kaldi",
        description=f"EnCodecMAE {key} ({frontend} input), HF {HF_REPO}/{key}.pt",
    )
    for key, label, layers, frontend in _MODELS
]
