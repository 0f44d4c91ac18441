"""The cochleagram of Tuckute et al. 2023 (``cochleagram_1``), shared by every model that uses it.

One implementation for the SpectroTemporal baseline and the CochDNNs (CochResNet50, CochCNN9).
Every value is taken from the public code named in brackets (jenellefeather/cochdnn @8702294,
"CDN", ``robustness/audio_functions/audio_input_representations.py``; jenellefeather/
chcochleagram @c634ca8, "CHC": cochlear_filters.py, helpers/erb_filters.py,
envelope_extraction.py, downsampling.py, compression.py):

- Input: 2 s at 20 kHz (``signal_size`` 40000, ``sr`` 20000), mean removed, RMS 0.1
  (:func:`tuckute_level`), clamped to [-1, 1] for the CochDNNs (``InputNormalize`` with
  ``include_rep_in_model``).
- ERB-spaced half-cosine filters, n=50, low_lim=50 Hz, high_lim=10000 Hz, sample_factor=4, no
  padding, on the rfft grid: 4*(50+1)-1 = 203 band-pass + 4 low-pass + 4 high-pass = 211
  channels, divided by sqrt(4). ERB number = 9.265 ln(1 + f / (24.7 * 9.265)).
- Envelope: the filtered positive-frequency spectrum zero-filled to the signal length, complex
  inverse FFT, magnitude sqrt(max(re^2 + im^2, 1e-16)) (CHC HilbertEnvelopeExtraction with
  use_rfft; positive frequencies are not doubled).
- Downsampling to env_sr = 200 Hz: a 1001-tap sinc (cutoff 1/100) times a Kaiser window
  (beta 5), taps at t = -500.5 ... 499.5, strided "valid" cross-correlation -> 390 frames.
- Compression ``coch_p3``: (max(x, 0) + 1e-8) ** 0.3.

Checked against CHC's published example (``examples/example_q63_cochleagram_1.pckl``) in the
tests.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.signal.windows import kaiser

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 20_000
ENV_SR = 200
SIGNAL_SAMPLES = 40_000
COCH_N, COCH_LOW, COCH_HIGH, COCH_FACTOR = 50, 50.0, 10_000.0, 4
N_CHANNELS = COCH_FACTOR * (COCH_N + 1) - 1 + 2 * COCH_FACTOR
DOWNSAMPLE_TAPS = 1001
KAISER_BETA = 5.0
COMPRESSION_OFFSET, COMPRESSION_POWER = 1e-8, 0.3
INPUT_RMS = 0.1
_CHANNEL_CHUNK = 16


def tuckute_level(audio: torch.Tensor, clamp: bool = False) -> torch.Tensor:
    """(batch, samples): mean removed, scaled to RMS 0.1, optionally clamped to [-1, 1].

    Tuckute's ``preproc_sound_np`` (CDN robustness/tools/audio_helpers.py); the clamp is the
    CochDNNs' ``InputNormalize`` (CDN robustness/tools/helpers.py).
    """
    audio = audio - audio.mean(dim=-1, keepdim=True)
    rms = audio.pow(2).mean(dim=-1, keepdim=True).sqrt()
    audio = audio / rms.clamp(min=1e-12) * INPUT_RMS
    return audio.clamp(-1.0, 1.0) if clamp else audio


def n_frames(n_samples: int) -> int:
    """Envelope frames for ``n_samples`` at 20 kHz (390 for 2 s)."""
    factor = SAMPLE_RATE // ENV_SR
    return 0 if n_samples < DOWNSAMPLE_TAPS else (n_samples - DOWNSAMPLE_TAPS) // factor + 1


def freq_to_erb(freq: np.ndarray | float) -> np.ndarray:
    """ERB number of a frequency in Hz (Glasberg & Moore)."""
    return 9.265 * np.log1p(np.asarray(freq, dtype=np.float64) / (24.7 * 9.265))


def erb_to_freq(erb: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`freq_to_erb`."""
    return 24.7 * 9.265 * np.expm1(np.asarray(erb, dtype=np.float64) / 9.265)


def cochlear_filters(
    n_samples: int, sr: int = SAMPLE_RATE, n: int = COCH_N, low: float = COCH_LOW,
    high: float = COCH_HIGH, factor: int = COCH_FACTOR,
) -> tuple[np.ndarray, np.ndarray]:
    """Half-cosine ERB filters on the rfft grid: (n_channels, n_samples//2 + 1) and centre Hz.

    Channel order: ``factor`` low-pass, the band-pass filters low to high, ``factor`` high-pass.
    """
    freqs = np.fft.rfftfreq(n_samples, 1.0 / sr)
    f_erb = freq_to_erb(freqs)
    n_band = factor * (n + 1) - 1
    edges, step = np.linspace(freq_to_erb(low), freq_to_erb(high), n_band + 2, retstep=True)
    centres = edges[1:-1]
    bank = np.zeros((n_band + 2 * factor, freqs.size))
    half_width = factor * step
    for i, c in enumerate(centres):
        lo, hi = c - half_width, c + half_width
        inside = (f_erb > lo) & (f_erb < hi)
        bank[factor + i, inside] = np.cos((f_erb[inside] - c) / (hi - lo) * np.pi)
    for i in range(factor):
        # low-pass up to the peak of the i-th band-pass filter, complementary in power
        top = np.flatnonzero(freqs < erb_to_freq(centres[i])).max()
        bank[i, : top + 1] = np.sqrt(1.0 - bank[factor + i, : top + 1] ** 2)
        # high-pass down to the peak of the i-th band-pass filter from the top
        bottom = np.flatnonzero(freqs > erb_to_freq(centres[-1 - i])).min()
        bank[-1 - i, bottom:] = np.sqrt(1.0 - bank[-1 - factor - i, bottom:] ** 2)
    bank /= np.sqrt(factor)
    cf = np.concatenate([centres[:factor] - half_width, centres, centres[-factor:] + half_width])
    cf_hz = erb_to_freq(cf)
    cf_hz[cf_hz < 0] = 1.0
    return bank.astype(np.float32), cf_hz


def downsample_taps(factor: int, taps: int = DOWNSAMPLE_TAPS) -> np.ndarray:
    """Kaiser-windowed sinc anti-aliasing filter (taps at -taps/2 ... taps/2 - 1)."""
    t = np.arange(-taps / 2, int(taps / 2))
    return (np.sinc(t / factor) / factor * kaiser(taps, KAISER_BETA)).astype(np.float32)


@lru_cache(maxsize=4)
def _cochlear_bank_tensor(n_samples: int) -> Any:
    import torch

    return torch.from_numpy(cochlear_filters(n_samples)[0])


def cochleagram(audio: torch.Tensor) -> torch.Tensor:
    """(batch, samples) 20-kHz audio -> compressed cochleagram (batch, 211, frames) at 200 Hz."""
    import torch
    import torch.nn.functional as F

    batch, n = audio.shape
    bank = _cochlear_bank_tensor(n).to(audio.device)
    spec = torch.fft.rfft(audio.double(), dim=-1).to(torch.complex64)
    factor = SAMPLE_RATE // ENV_SR
    taps = torch.from_numpy(downsample_taps(factor)).to(audio.device)[None, None]
    out = []
    # Channels in chunks: the complex analytic signals of all 211 channels would need ~70 MB
    # per 2-s clip; ``ifft(n=n)`` zero-fills the negative frequencies itself (same values).
    for start in range(0, bank.shape[0], _CHANNEL_CHUNK):
        sub = spec[:, None, :] * bank[None, start:start + _CHANNEL_CHUNK]  # (B, c, n//2+1)
        analytic = torch.fft.ifft(sub, n=n, dim=-1)
        env = analytic.abs().clamp(min=1e-8)  # = sqrt(max(re^2 + im^2, 1e-16))
        down = F.conv1d(env.reshape(-1, 1, n), taps, stride=factor)
        out.append(down.reshape(batch, sub.shape[1], -1))
    down = torch.cat(out, dim=1)
    return torch.pow(torch.relu(down) + COMPRESSION_OFFSET, COMPRESSION_POWER)
