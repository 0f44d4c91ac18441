"""DeepSpeech2 (deepspeech.pytorch V3.0, LibriSpeech), as Tuckute et al. 2023 tapped it.

(Module docstring to be completed with the implementation notes.)
"""

from __future__ import annotations

from brainalign.models.spec import BuildContext, ModelSpec

SAMPLE_RATE = 16_000
LAYERS = ("HardTanh_1", "HardTanh_2", "LSTM_1", "LSTM_2", "LSTM_3", "LSTM_4", "LSTM_5")
PAPER_KEYS = {
    "HardTanh_1": "Hardtanh(min_val=0, max_val=20)--0",
    "HardTanh_2": "Hardtanh(min_val=0, max_val=20)--1",
    "LSTM_1": "LSTM(1312, 1024, bidirectional=True)--0--cell",
    **{f"LSTM_{i}": f"LSTM(1024, 1024, bidirectional=True)--{i - 2}--cell" for i in range(2, 6)},
}


def build(spec: ModelSpec, ctx: BuildContext):  # implemented below by the family's loader
    raise NotImplementedError(spec.name)


SPECS = [
    ModelSpec(
        name="braindnn_deepspeech", label="Deepspeech", family="Others", training="supervised",
        sample_rate=SAMPLE_RATE, layers=LAYERS, paper_keys=PAPER_KEYS,
        build="brainalign.models.deepspeech2:build", fetched=True,
        description="DeepSpeech2 librispeech_pretrained_v3 (SeanNaren/deepspeech.pytorch V3.0)",
    )
]
