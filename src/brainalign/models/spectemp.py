"""SpectroTemporal baseline (Tuckute et al. 2023): modulation filter bank on a cochleagram.

The paper's model 36 (``braindnn_spectemp_filters``): an untrained model with one layer,
``avgpool``. This is our own implementation of the pipeline below; every parameter value is taken
from the public code named in brackets (jenellefeather/model_metamers_pytorch at commit
2dc5d610, "MMP"; jenellefeather/chcochleagram, "CHC").

Input [MMP analysis_scripts/measure_layer_activations_165_natural_sounds_pytorch.py]:
  20 kHz audio, 2 s (40000 samples; ``signal_size`` 40000 in MMP
  robustness/audio_functions/audio_input_representations.py, ``cochleagram_1``), mean removed
  and scaled to RMS 0.1.

Cochleagram: :mod:`brainalign.models.frontends.cochleagram` (``cochleagram_1``, the one
implementation shared with the CochDNNs).

Filter bank [MMP robustness/audio_models/spectemp_filts.py ``SpecTempFilterBank`` and
``SpectTempFilts``, filters from robustness/audio_models/spectemp.py]:
  - Cochleagram multiplied by ``coch_rescale_factor`` = 100.
  - Temporal modulation rates [0, 0.5, 1, 2, 4, 8, 16, 32, 64] Hz at sr_Hz = 200; spectral
    rates [0, 0.0625, 0.125, 0.25, 0.5, 1, 2] cycles/ERB at sr_erb = 6 channels per ERB.
  - ``low_and_highpass=True``: the lowest rate of each axis is low-pass and the highest high-pass
    (flat magnitude from the peak outwards). The lowest rate is 0 on both axes, whose filter is a
    delta at DC (only the mean passes), so in effect only the high-pass flags act
    (64 Hz and 2 cyc/ERB); this follows the original code.
  - Temporal filter: gammatone-like impulse response sin(2 pi t) t^2 exp(-3.5 t), t = n/sr*rate,
    over N_T samples, mean removed, zero-padded, FFT, magnitude normalised to max 1, phase kept.
  - Spectral filter: zero-phase R exp(-R), R = (f / rate)^2, normalised to max 1, Hermitian.
  - Both directions (upward/downward sweeps) for non-zero rate pairs: for sign -1, all 7 x 9
    pairs; for sign +1, the 6 x 8 non-zero pairs: 111 filters. Two quadrants of the 2-D
    spectrum are zeroed according to the sign (Nyquist rows/columns are kept).
  - Zero padding before the 2-D FFT: 2*N_T frames in time, N_F channels in frequency
    (``zero_pad = (N_T*2, N_F)``); output cropped back to (N_F, N_T).
  - Power: real part squared, clamped at 1e-8; ``avgpool``: mean over time
    (AdaptiveAvgPool2d((None, 1))), flattened filter-major -> 111 * 211 = 23421 features.

Implementation notes (ours): each 2-D filter is a temporal x spectral outer product with two
quadrants zeroed, i.e. a sum of three outer products, so the filtering is done separably (time
first, then the padded time samples are cropped, then frequency), in float64; this equals the
2-D FFT filtering of the reference (:func:`spectemp_power_direct`, tested) at a fraction of the
cost. Sounds of other lengths run with filters
built for that length (``fixed_samples: null``); the default (``fixed_samples: 40000``) pads or
crops to 2 s exactly as the reference does.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from brainalign.errors import InputError
from brainalign.models.base import Runner
from brainalign.models.frontends.cochleagram import (
    DOWNSAMPLE_TAPS,
    ENV_SR,
    SAMPLE_RATE,
    cochleagram,
    tuckute_level,
)
from brainalign.models.spec import BuildContext, ModelSpec

if TYPE_CHECKING:
    import torch

RESCALE = 100.0
TEMPORAL_RATES_HZ = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
SPECTRAL_RATES_CYC_PER_ERB = (0.0, 0.0625, 0.125, 0.25, 0.5, 1.0, 2.0)
CHANNELS_PER_ERB = 6.0
POWER_FLOOR = 1e-8
REFERENCE_SAMPLES = 40_000


# --------------------------------------------------------------------------- filter bank
def temporal_filter(
    rate: float, n: int, sr: float, pad: int, lowpass: bool = False, highpass: bool = False,
) -> np.ndarray:
    """Complex transfer function (length n + pad) of one temporal modulation filter."""
    if rate == 0:
        h = np.zeros(n + pad, dtype=complex)
        h[0] = 1.0
        return h
    t = np.arange(n) / sr * rate
    impulse = np.sin(2 * np.pi * t) * t**2 * np.exp(-3.5 * t)
    impulse = np.concatenate([impulse - impulse.mean(), np.zeros(pad)])
    spectrum = np.fft.fft(impulse)
    mag = np.abs(spectrum)
    mag /= mag.max()
    size = n + pad
    nyq = size // 2 if size % 2 == 0 else (size - 1) // 2
    if lowpass or highpass:
        peak_pos = int(np.argmax(mag[: nyq + 1]))
        peak_neg = int(np.argmax(mag[nyq + 1:])) + nyq + 1
        if lowpass:
            mag[:peak_pos] = 1.0
            mag[peak_neg:-1] = 1.0
        if highpass:
            mag[peak_pos:peak_neg] = 1.0
    return mag * np.exp(1j * np.angle(spectrum))


def spectral_filter(
    rate: float, n: int, sr: float, pad: int, lowpass: bool = False, highpass: bool = False,
) -> np.ndarray:
    """Real, zero-phase transfer function (length n + pad) of one spectral modulation filter."""
    size = n + pad
    if rate == 0:
        h = np.zeros(size)
        h[0] = 1.0
        return h
    nyq = size // 2 if size % 2 == 0 else (size - 1) // 2
    pos = sr * np.arange(nyq + 1) / size
    if rate > pos[-1]:
        raise InputError("spectemp", f"spectral rate {rate} exceeds the Nyquist rate {pos[-1]}")
    if lowpass:
        sigma = 0.5 / rate
        resp = np.exp(-(np.pi**2) * pos**2 * sigma**2)
    else:
        r = (pos / rate) ** 2
        resp = r * np.exp(-r)
    resp = resp / resp.max()
    peak = int(np.argmax(resp))
    if lowpass:
        resp[:peak] = 1.0
    if highpass:
        resp[peak:] = 1.0
    neg = resp[1: nyq + 1][::-1] if size % 2 else resp[1:nyq][::-1]
    return np.concatenate([resp, neg])


def filter_list() -> list[tuple[float, float]]:
    """(signed temporal rate Hz, spectral rate cyc/ERB) of the 111 filters, in output order."""
    out = []
    for sign in (-1, 1):
        for s in SPECTRAL_RATES_CYC_PER_ERB:
            if sign == 1 and s == 0:
                continue
            for t in TEMPORAL_RATES_HZ:
                if sign == 1 and t == 0:
                    continue
                out.append((sign * t, s))
    return out


def modulation_filterbank(n_freq: int, n_time: int) -> np.ndarray:
    """2-D transfer functions, (n_filters, 2*n_freq, 3*n_time) complex (freq x time axes)."""
    pad_t, pad_f = 2 * n_time, n_freq
    size_t, size_f = n_time + pad_t, n_freq + pad_f
    t_lo, t_hi = min(TEMPORAL_RATES_HZ), max(TEMPORAL_RATES_HZ)
    s_lo, s_hi = min(SPECTRAL_RATES_CYC_PER_ERB), max(SPECTRAL_RATES_CYC_PER_ERB)
    f_spec = np.fft.fftfreq(size_f)
    f_spec[size_f // 2 if size_f % 2 == 0 else (size_f - 1) // 2] = np.nan
    f_temp = np.fft.fftfreq(size_t)
    f_temp[size_t // 2 if size_t % 2 == 0 else (size_t - 1) // 2] = np.nan
    with np.errstate(invalid="ignore"):
        spec_sign = np.sign(f_spec)[None, :]
        temp_sign = np.sign(f_temp)[:, None]
    bank = []
    for t_rate, s_rate in filter_list():
        ht = temporal_filter(abs(t_rate), n_time, ENV_SR, pad_t,
                             lowpass=abs(t_rate) == t_lo, highpass=abs(t_rate) == t_hi
                             and abs(t_rate) != t_lo)
        hs = spectral_filter(s_rate, n_freq, CHANNELS_PER_ERB, pad_f,
                             lowpass=s_rate == s_lo, highpass=s_rate == s_hi and s_rate != s_lo)
        h2 = np.outer(ht, hs)  # (time, freq)
        direction = 1.0 if t_rate >= 0 else -1.0
        kill = ((temp_sign == -direction) & (spec_sign == 1)) | (
            (temp_sign == direction) & (spec_sign == -1))
        h2[kill] = 0
        bank.append(h2.T)
    return np.stack(bank)


@lru_cache(maxsize=2)
def _hermitian_half_bank(n_freq: int, n_time: int) -> Any:
    """Hermitian parts of the filters on the rfft2 grid, as a complex64 tensor."""
    import torch

    bank = modulation_filterbank(n_freq, n_time)
    mirrored = np.conj(np.roll(bank[:, ::-1, ::-1], shift=(1, 1), axis=(1, 2)))
    herm = 0.5 * (bank + mirrored)
    return torch.from_numpy(herm[:, :, : bank.shape[2] // 2 + 1].astype(np.complex64))


def spectemp_power_direct(coch: torch.Tensor, chunk: int = 37) -> torch.Tensor:
    """Reference path: 2-D FFT filtering with the full filter bank (slow; used in tests)."""
    import torch

    batch, n_freq, n_time = coch.shape
    herm = _hermitian_half_bank(n_freq, n_time).to(coch.device)
    x = torch.zeros((batch, 2 * n_freq, 3 * n_time), dtype=torch.float32, device=coch.device)
    x[:, :n_freq, :n_time] = coch * RESCALE
    xf = torch.fft.rfft2(x)
    out = []
    for start in range(0, herm.shape[0], chunk):
        h = herm[start: start + chunk]
        y = torch.fft.irfft2(xf[:, None] * h[None], s=(2 * n_freq, 3 * n_time))
        y = y[..., :n_freq, :n_time]
        out.append(torch.clamp(y**2, min=POWER_FLOOR).mean(dim=-1))
    return torch.cat(out, dim=1)


@lru_cache(maxsize=2)
def _separable_bank(n_freq: int, n_time: int) -> dict[str, Any]:
    """Temporal filters (full / positive / negative-frequency parts), spectral filters (half
    spectrum) and sign masks for :func:`spectemp_power`."""
    import torch

    size_t, size_f = 3 * n_time, 2 * n_freq
    f_temp, f_spec = np.fft.fftfreq(size_t), np.fft.fftfreq(size_f)
    f_temp[size_t // 2 if size_t % 2 == 0 else (size_t - 1) // 2] = np.nan
    f_spec[size_f // 2 if size_f % 2 == 0 else (size_f - 1) // 2] = np.nan
    with np.errstate(invalid="ignore"):
        t_pos, t_neg = np.sign(f_temp) == 1, np.sign(f_temp) == -1
        s_pos, s_neg = np.sign(f_spec) == 1, np.sign(f_spec) == -1
    t_lo, t_hi = min(TEMPORAL_RATES_HZ), max(TEMPORAL_RATES_HZ)
    s_lo, s_hi = min(SPECTRAL_RATES_CYC_PER_ERB), max(SPECTRAL_RATES_CYC_PER_ERB)
    temporal = []
    for rate in TEMPORAL_RATES_HZ:
        ht = temporal_filter(rate, n_time, ENV_SR, 2 * n_time, lowpass=rate == t_lo,
                             highpass=rate == t_hi and rate != t_lo)
        temporal.append(np.stack([ht, ht * t_pos, ht * t_neg]))
    spectral = [
        spectral_filter(rate, n_freq, CHANNELS_PER_ERB, n_freq, lowpass=rate == s_lo,
                        highpass=rate == s_hi and rate != s_lo)[: size_f // 2 + 1]
        for rate in SPECTRAL_RATES_CYC_PER_ERB
    ]
    # output order: (temporal rate index, direction index (0: -1, 1: +1), spectral rate index)
    order = [(TEMPORAL_RATES_HZ.index(abs(t)), 0 if t < 0 else 1,
              SPECTRAL_RATES_CYC_PER_ERB.index(sr)) for t, sr in filter_list()]
    return {
        "temporal": torch.from_numpy(np.stack(temporal)),  # (9, 3, size_t) complex128
        "spectral": torch.from_numpy(np.stack(spectral)),  # (7, size_f//2 + 1) float64
        "s_pos": torch.from_numpy(s_pos.astype(np.float64))[:, None],
        "s_neg": torch.from_numpy(s_neg.astype(np.float64))[:, None],
        "order": torch.tensor(order),
    }


def spectemp_power(coch: torch.Tensor) -> torch.Tensor:
    """Time-averaged filter power: (batch, n_freq, n_time) cochleagram -> (batch, 111, n_freq).

    Same result as 2-D FFT filtering of the zero-padded cochleagram (:func:`spectemp_power_direct`,
    tested) at a fraction of the cost. Each 2-D filter is Ht (x) Hs with two quadrants zeroed:
    Ht (x) Hs - Ht[t=-d] (x) Hs[f>0] - Ht[t=d] (x) Hs[f<0] for direction d. Because Hs[f>0] and
    Hs[f<0] are Hs on disjoint halves, this is Hs times a "directional map" that depends only
    on the temporal rate and direction. So: filter along time (27 filter parts), crop the padded
    time samples, FFT along frequency, form the 18 directional maps, keep their Hermitian part
    (only the real output is used and Hs is real and symmetric), then multiply by the 7 spectral
    filters and invert with ``irfft``. Temporal stage in float64, spectral stage in float32.
    """
    import torch

    batch, n_freq, n_time = coch.shape
    bank = {k: v.to(coch.device) for k, v in _separable_bank(n_freq, n_time).items()}
    size_t, size_f = 3 * n_time, 2 * n_freq
    half = size_f // 2 + 1
    x = coch.double() * RESCALE
    xt = torch.fft.fft(x, n=size_t, dim=-1)  # (B, F, size_t); padded rows are zero
    w = torch.fft.ifft(xt[:, None, None] * bank["temporal"][None, :, :, None, :], dim=-1)
    # the spectral stage runs in single precision (relative error ~1e-6)
    v = torch.fft.fft(w[..., :n_time].to(torch.complex64), n=size_f, dim=-2)  # (B,9,3,Fp,T)
    full, pos, neg = v[:, :, 0], v[:, :, 1], v[:, :, 2]
    s_pos, s_neg = bank["s_pos"].float(), bank["s_neg"].float()
    maps = torch.stack([full - s_pos * pos - s_neg * neg,  # downward (d = -1)
                        full - s_pos * neg - s_neg * pos], dim=2)  # upward (d = +1)
    mirror = (-torch.arange(half, device=coch.device)) % size_f
    herm = 0.5 * (maps[..., :half, :] + maps[..., mirror, :].conj())  # (B, 9, 2, half, T)
    out = []
    for s_idx in range(bank["spectral"].shape[0]):
        z = herm * bank["spectral"][s_idx].float()[:, None]
        y = torch.fft.irfft(z, n=size_f, dim=-2)[..., :n_freq, :]
        out.append(torch.clamp(y**2, min=POWER_FLOOR).mean(dim=-1))  # (B, 9, 2, F)
    power = torch.stack(out, dim=3)  # (B, 9, 2, 7, F)
    t_i, d_i, s_i = bank["order"].unbind(dim=1)
    return power[:, t_i, d_i, s_i].float()


class SpectroTemporalRunner(Runner):
    """Cochleagram -> modulation filter bank -> power -> time average (one layer, avgpool)."""

    def __init__(self, spec: ModelSpec, device: torch.device, fixed_samples: int | None) -> None:
        super().__init__(spec, device)
        self.fixed_samples = fixed_samples

    def forward(self, audio: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        import torch.nn.functional as F

        if self.fixed_samples is not None:
            n = audio.shape[1]
            if n < self.fixed_samples:
                audio = F.pad(audio, (0, self.fixed_samples - n))
            audio = audio[:, : self.fixed_samples]
        audio = tuckute_level(audio)
        import torch

        # one sound at a time: the 211-channel analytic signals are large
        power = [spectemp_power(cochleagram(audio[i: i + 1])) for i in range(audio.shape[0])]
        return {"avgpool": torch.cat(power).flatten(1)}

    def info(self) -> dict[str, Any]:
        return {"fixed_samples": self.fixed_samples, "n_filters": len(filter_list())}


def build(spec: ModelSpec, ctx: BuildContext) -> Runner:
    """Build the SpectroTemporal runner; option ``fixed_samples`` (int or None)."""
    device, options = ctx.device, dict(ctx.options)
    fixed = options.get("fixed_samples", REFERENCE_SAMPLES)
    if fixed is not None and (not isinstance(fixed, int) or fixed < spec.min_samples):
        raise InputError(
            "extract.options.spectemp.fixed_samples",
            f"expected null or an integer >= {spec.min_samples}, got {fixed!r}",
        )
    return SpectroTemporalRunner(spec, device, fixed)


SPECS = [
    ModelSpec(
        name="spectemp",
        label="SpectroTemporal",
        family="baseline",
        training="untrained",
        sample_rate=SAMPLE_RATE,
        layers=("avgpool",),
        build="brainalign.models.spectemp:build",
        frontend="brainalign.models.frontends.cochleagram",
        paper_keys={"avgpool": "braindnn_spectemp_filters_avgpool"},
        # one envelope frame needs 1001 samples; 8 frames keep the temporal filters defined
        min_samples=DOWNSAMPLE_TAPS + 7 * (SAMPLE_RATE // ENV_SR),
        description="Tuckute et al. 2023 spectrotemporal modulation filters on a cochleagram",
        options={"fixed_samples": REFERENCE_SAMPLES},
    )
]
