"""MetricGAN+ speech enhancement (speechbrain/metricgan-plus-voicebank), as Tuckute tapped it.

(Module docstring to be completed with the implementation notes.)
"""

from __future__ import annotations

from brainalign.models.spec import BuildContext, ModelSpec

SAMPLE_RATE = 16_000
HF_REPO = "speechbrain/metricgan-plus-voicebank"
LAYERS = ("LSTM_1", "LSTM_2", "LeakyReLU_1", "Linear_2")
_LSTM = "LSTM(257, 200, num_layers=2, batch_first=True, bidirectional=True)"
PAPER_KEYS = {
    "LSTM_1": f"{_LSTM}--l1--cell",
    "LSTM_2": f"{_LSTM}--l2--cell",
    "LeakyReLU_1": "Linear(in_features=400, out_features=300, bias=True)--0",
    "Linear_2": "Linear(in_features=300, out_features=257, bias=True)--0",
}


def build(spec: ModelSpec, ctx: BuildContext):  # implemented below by the family's loader
    raise NotImplementedError(spec.name)


SPECS = [
    ModelSpec(
        name="braindnn_metricgan", label="MetricGAN", family="Others", training="supervised",
        sample_rate=SAMPLE_RATE, layers=LAYERS, paper_keys=PAPER_KEYS,
        build="brainalign.models.metricgan:build", fetched=True,
        description=f"MetricGAN+ speech enhancement, VoiceBank (HF {HF_REPO})",
    )
]
