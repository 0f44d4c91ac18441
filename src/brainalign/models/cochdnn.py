"""The CochDNNs of Tuckute et al. 2023: CochResNet50 and CochCNN9 on a cochleagram.

(Module docstring to be completed with the implementation notes.)
"""

from __future__ import annotations

from brainalign.models.spec import BuildContext, ModelSpec

SAMPLE_RATE = 20_000
RESNET50_LAYERS = ("conv1_relu1", "maxpool1", "layer1", "layer2", "layer3", "layer4", "avgpool")
KELL2018_LAYERS = ("relu0", "maxpool0", "relu1", "maxpool1", "relu2", "relu3", "relu4",
                   "avgpool", "relufc")
TASKS = (("word", "Word"), ("speaker", "Spk"), ("audioset", "AS"),
         ("word_speaker_audioset", "MT"))


def build(spec: ModelSpec, ctx: BuildContext):  # implemented below by the family's loader
    raise NotImplementedError(spec.name)


SPECS = [
    ModelSpec(
        name=f"braindnn_{arch}_{task}", label=f"{short} ({label})", family=family,
        training="supervised", sample_rate=SAMPLE_RATE, layers=layers,
        paper_keys={layer: f"braindnn_{arch}_{task}_{layer}" for layer in layers},
        build="brainalign.models.cochdnn:build", fetched=True,
        frontend="brainalign.models.frontends.cochleagram",
        description=f"Tuckute et al. 2023 {family} trained on {task} (cochdnn checkpoints tar)",
    )
    for arch, short, family, layers in (
        ("resnet50", "CRN50", "CochResNet50", RESNET50_LAYERS),
        ("kell2018", "CNN9", "CochCNN9", KELL2018_LAYERS),
    )
    for task, label in TASKS
]
