"""Kaldi-compatible log-mel filter banks (``torchaudio.compliance.kaldi.fbank``), per family.

Each preset states the settings the family's own code passes and the normalisation it applies
afterwards; everything not listed keeps torchaudio's (= Kaldi's) default: povey window,
pre-emphasis 0.97, DC removal, ``snip_edges``, power spectrum, ``round_to_power_of_two``,
log with an epsilon floor, dither 0 (torchaudio's default, also where a family's code passes 0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class FbankPreset:
    """Settings of one family's Kaldi fbank and the normalisation after it.

    ``input_scale`` multiplies the float waveform first (BEATs and Speech2Text feed int16-range
    samples); the output is ``(fbank - mean) / std`` with the family's constants, or per-bin
    utterance mean/variance normalisation when ``utterance_cmvn`` is set.
    """

    sample_frequency: float
    num_mel_bins: int
    frame_length: float = 25.0
    frame_shift: float = 10.0
    low_freq: float = 20.0
    high_freq: float = 0.0
    window_type: str = "povey"
    htk_compat: bool = False
    use_energy: bool = False
    dither: float = 0.0
    input_scale: float = 1.0
    mean: float = 0.0
    std: float = 1.0
    utterance_cmvn: bool = False
    source: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)

    def fbank_kwargs(self) -> dict[str, Any]:
        keep = ("sample_frequency", "num_mel_bins", "frame_length", "frame_shift", "low_freq",
                "high_freq", "window_type", "htk_compat", "use_energy", "dither")
        d = asdict(self)
        return {k: d[k] for k in keep} | dict(self.kwargs)

    def n_frames(self, n_samples: int) -> int:
        """Frames for ``n_samples`` (snip_edges): 1 + (n - window) // shift, or 0."""
        window = int(self.sample_frequency * self.frame_length * 0.001)
        shift = int(self.sample_frequency * self.frame_shift * 0.001)
        return 0 if n_samples < window else 1 + (n_samples - window) // shift


def fbank(wave: torch.Tensor, preset: FbankPreset) -> torch.Tensor:
    """(samples,) float waveform -> normalised (frames, num_mel_bins) log-mel, float32."""
    import torchaudio.compliance.kaldi as kaldi

    x = wave.float()
    if preset.input_scale != 1.0:
        x = x * preset.input_scale
    feats = kaldi.fbank(x.unsqueeze(0), **preset.fbank_kwargs())
    if preset.utterance_cmvn:
        mean = feats.mean(dim=0, keepdim=True)
        std = feats.std(dim=0, keepdim=True, unbiased=False)
        return (feats - mean) / std.clamp(min=1e-10)
    return (feats - preset.mean) / preset.std


ENCODECMAE_MEL256 = FbankPreset(
    sample_frequency=24_000, num_mel_bins=256, frame_length=26.56, frame_shift=13.28,
    low_freq=20.0, high_freq=0.0, window_type="hanning", htk_compat=True, use_energy=False,
    mean=-6.12, std=4.82,
    source="habla-liaa/encodecmae configs/features/mel.gin, MelspectrogramProcessor "
           "(norm_stats [-6.12, 4.82]: (mel + 6.12) / 4.82)",
)
"""EnCodecMAE mel256. These values are the mel models' ``ModelSpec.config``: the loader
refuses a checkpoint whose gin config says otherwise (upstream does not forward the gin's
dither; torchaudio's default 0 applies)."""

BEATS = FbankPreset(
    sample_frequency=16_000, num_mel_bins=128, frame_length=25.0, frame_shift=10.0,
    input_scale=2.0**15, mean=15.41663, std=2 * 6.55582,
    source="microsoft/unilm beats/BEATs.py preprocess: fbank of waveform * 2^15, "
           "(fbank - 15.41663) / (2 * 6.55582)",
)

AST = FbankPreset(
    sample_frequency=16_000, num_mel_bins=128, frame_shift=10.0, window_type="hanning",
    htk_compat=True, use_energy=False, mean=-4.2677393, std=2 * 4.5689974,
    source="gretatuckute/ast src/run_model.py make_features (after padding to 1024 frames: "
           "(fbank + 4.2677393) / (4.5689974 * 2))",
)
"""AST: note the normalisation is applied after padding/cutting to 1024 frames (the AST
loader pads with zeros first, then applies ``(x - mean) / std``)."""

S2T = FbankPreset(
    sample_frequency=16_000, num_mel_bins=80, input_scale=2.0**15, utterance_cmvn=False,
    source="transformers 4.56.1 Speech2TextFeatureExtractor (fbank of waveform * 2^15, 80 bins, "
           "dither 0); its utterance CMVN follows in brainalign.models.s2t.utterance_cmvn, "
           "in the extractor's own numpy float32 operations (a torch float32 CMVN differs "
           "from it by up to ~4e-4)",
)
"""Speech2Text: the raw fbank; the per-utterance CMVN is applied by the S2T loader."""
