"""VGGish (Hershey et al. 2017), the torchvggish port, as Tuckute et al. 2023 tapped it.

(Module docstring to be completed with the implementation notes.)
"""

from __future__ import annotations

from brainalign.models.spec import BuildContext, ModelSpec

SAMPLE_RATE = 16_000
_MAXPOOL = "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)"
# The paper's layer_map lists the nine ReLUs first, then the four max-pools.
LAYERS = (*(f"ReLU_{i}" for i in range(9)), *(f"MaxPool_{i}" for i in range(4)))
PAPER_KEYS = {
    **{f"ReLU_{i}": f"ReLU(inplace=True)--{i}" for i in range(9)},
    **{f"MaxPool_{i}": f"{_MAXPOOL}--{i}" for i in range(4)},
}


def build(spec: ModelSpec, ctx: BuildContext):  # implemented below by the family's loader
    raise NotImplementedError(spec.name)


SPECS = [
    ModelSpec(
        name="braindnn_vggish", label="VGGish", family="Others", training="supervised",
        sample_rate=SAMPLE_RATE, layers=LAYERS, paper_keys=PAPER_KEYS,
        build="brainalign.models.vggish:build", fetched=True,
        description="VGGish, harritaylor/torchvggish release v0.1 weights",
    )
]
