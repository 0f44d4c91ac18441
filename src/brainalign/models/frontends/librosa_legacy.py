"""librosa-style STFT, mel filters and dB scaling as the families' pinned librosa versions ran them.

Used by DCASE2020 (librosa 0.7.1), ZeroSpeech (librosa 0.7.2) and DeepSpeech2 (librosa of early
2021, < 0.10). Their calls, as those versions executed them:

- ``librosa.stft(..., center=True)``: the signal is padded by ``n_fft // 2`` on both sides with
  ``pad_mode='reflect'`` (numpy's even reflection, which also works for signals shorter than the
  pad), the periodic window (``scipy.signal.get_window(..., fftbins=True)``) is zero-padded to
  ``n_fft`` around the centre, frames are ``1 + len // hop``, one-sided FFT, no scaling;
- ``librosa.filters.mel(..., norm=1)`` (also the default of 0.7.x): Slaney's mel scale
  (``htk=False``: linear below 1 kHz, logarithmic above) and Slaney's *area* normalisation,
  each triangle scaled by ``2 / (f[i+2] - f[i])``;
- ``melspectrogram(power=1)``: the mel basis applied to the STFT magnitude;
- ``amplitude_to_db(S, ref=1, amin=1e-5, top_db=80)``: ``20 log10(max(S, amin))`` (computed
  as ``10 log10(max(S**2, amin**2))``), floored at the clip's maximum minus ``top_db``.

**The same calls under librosa 0.11** (BDN's pin) behave differently in two places, which the
option ``librosa_frontend: librosa_0.11`` of each family reproduces (default ``original``):

- ``stft`` pads with zeros (``pad_mode='constant'``, the default since librosa 0.10);
- a *numeric* ``norm=1`` now means per-filter L1 normalisation (``librosa.util.normalize``):
  Slaney's area normalisation is spelt ``norm='slaney'`` since 0.8. The default ``norm`` of
  0.11 is ``'slaney'``, so a call that leaves ``norm`` out (ZeroSpeech) is unchanged.

In librosa 0.11 the original filters are ``librosa.filters.mel(..., norm='slaney')`` (equal
to ours within 6e-8). The original STFT is *nearly* ``librosa.stft(..., pad_mode='reflect')``:
0.11 pads the head and the tail separately and its last frame differs from 0.7's whole-signal
``np.pad`` (measured 3.9e-4 of a 3.9 peak for a 2-s 320-point hamming STFT; invisible with a
hann window, which is ~0 at the frame edges). The tests therefore compare ``original`` with
``np.pad(reflect)`` + ``librosa.util.frame`` + ``np.fft.rfft`` (0.7's algorithm) and
``librosa_0.11`` with librosa 0.11 itself.

Everything runs in torch float32 on the input's device; the filters are built in float64 with
numpy and stored as float32, as librosa does. All reductions (peak, top_db) are per clip.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from brainalign.errors import InputError

if TYPE_CHECKING:
    import torch

OPTION = "librosa_frontend"
"""The build option every family using this module exposes."""


@dataclass(frozen=True)
class LibrosaBehaviour:
    """What a librosa version does with the families' calls."""

    name: str
    pad_mode: str
    """``stft(center=True)`` padding: ``reflect`` (< 0.10) or ``constant`` (zeros, >= 0.10)."""
    numeric_norm: str
    """What the mel filter argument ``norm=1`` means: ``slaney`` (area, <= 0.7) or ``l1``."""
    description: str


BEHAVIOURS: Mapping[str, LibrosaBehaviour] = {
    "original": LibrosaBehaviour(
        "original", "reflect", "slaney",
        "the families' pinned librosa (0.7.x; < 0.10 for DeepSpeech2): reflect-padded centred "
        "STFT, norm=1 = Slaney area normalisation"),
    "librosa_0.11": LibrosaBehaviour(
        "librosa_0.11", "constant", "l1",
        "the same calls under librosa 0.11: zero-padded centred STFT, numeric norm=1 = per-filter "
        "L1 normalisation"),
}


def behaviour(options: Mapping[str, Any], model: str) -> LibrosaBehaviour:
    """The ``librosa_frontend`` build option of ``model`` (default ``original``), validated."""
    value = options.get(OPTION, "original")
    if value not in BEHAVIOURS:
        raise InputError(f"extract.options.{model}.{OPTION}",
                         f"expected one of {list(BEHAVIOURS)}, got {value!r}")
    return BEHAVIOURS[value]


def resolve_norm(norm: Any, how: LibrosaBehaviour) -> str | None:
    """The filter normalisation a call's ``norm`` argument means under ``how``."""
    if norm is None:
        return None
    if norm == "slaney":
        return "slaney"
    if norm == 1:
        return how.numeric_norm
    raise ValueError(f"unsupported mel norm {norm!r}")


# --------------------------------------------------------------------------- signal
def reflect_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad the last axis by ``pad`` on both sides as ``np.pad(mode='reflect')`` does.

    Unlike ``torch.nn.functional.pad`` this accepts pads longer than the signal (numpy keeps
    reflecting: the signal extended with period ``2 (n - 1)``); a one-sample signal repeats.
    """
    import torch

    n = x.shape[-1]
    if pad == 0:
        return x
    if n == 1:
        return x.expand(*x.shape[:-1], 1 + 2 * pad)
    idx = torch.arange(-pad, n + pad, device=x.device)
    period = 2 * (n - 1)
    idx = torch.remainder(idx, period)
    idx = torch.where(idx >= n, period - idx, idx)
    return x.index_select(-1, idx)


def pad_signal(x: torch.Tensor, pad: int, mode: str) -> torch.Tensor:
    """``reflect`` (numpy semantics) or ``constant`` (zeros) padding of the last axis."""
    import torch.nn.functional as F

    if mode == "reflect":
        return reflect_pad(x, pad)
    if mode == "constant":
        return F.pad(x, (pad, pad))
    raise ValueError(f"unsupported pad mode {mode!r}")


def window(name: str, length: int) -> np.ndarray:
    """Periodic window as ``scipy.signal.get_window(name, length, fftbins=True)`` (float64)."""
    n = np.arange(length, dtype=np.float64)
    phase = 2.0 * np.pi * n / length
    if name in ("hann", "hanning"):
        return 0.5 - 0.5 * np.cos(phase)
    if name == "hamming":
        return 0.54 - 0.46 * np.cos(phase)
    raise ValueError(f"unsupported window {name!r}")


def centred_window(name: str, win_length: int, n_fft: int) -> np.ndarray:
    """The window zero-padded to ``n_fft`` around the centre (``librosa.util.pad_center``)."""
    w = window(name, win_length)
    left = (n_fft - win_length) // 2
    return np.pad(w, (left, n_fft - win_length - left))


def n_frames(n_samples: int, n_fft: int, hop_length: int, center: bool = True) -> int:
    """STFT frames of a signal of ``n_samples``."""
    if center:
        return 1 + n_samples // hop_length
    return 0 if n_samples < n_fft else 1 + (n_samples - n_fft) // hop_length


def stft(x: torch.Tensor, n_fft: int, hop_length: int, win_length: int | None = None,
         window_name: str = "hann", center: bool = True,
         pad_mode: str = "reflect") -> torch.Tensor:
    """(batch, samples) float -> complex (batch, 1 + n_fft // 2, frames), as ``librosa.stft``."""
    import torch

    win_length = win_length or n_fft
    x = x.float()
    if center:
        x = pad_signal(x, n_fft // 2, pad_mode)
    w = torch.from_numpy(centred_window(window_name, win_length, n_fft).astype(np.float32))
    return torch.stft(x, n_fft=n_fft, hop_length=hop_length, win_length=n_fft,
                      window=w.to(x.device), center=False, onesided=True,
                      return_complex=True)


# --------------------------------------------------------------------------- mel filters
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(freqs: np.ndarray | float, htk: bool = False) -> np.ndarray:
    """Hz -> mel: Slaney's scale (``htk=False``) or HTK's ``2595 log10(1 + f / 700)``."""
    f = np.asanyarray(freqs, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    mels = f / _F_SP
    log_t = f >= _MIN_LOG_HZ
    return np.where(log_t, _MIN_LOG_MEL + np.log(np.maximum(f, _MIN_LOG_HZ) / _MIN_LOG_HZ)
                    / _LOGSTEP, mels)


def mel_to_hz(mels: np.ndarray | float, htk: bool = False) -> np.ndarray:
    """mel -> Hz, the inverse of :func:`hz_to_mel`."""
    m = np.asanyarray(mels, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    freqs = _F_SP * m
    log_t = m >= _MIN_LOG_MEL
    return np.where(log_t, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL)), freqs)


def mel_filters(sr: float, n_fft: int, n_mels: int, fmin: float = 0.0,
                fmax: float | None = None, htk: bool = False,
                norm: str | None = "slaney") -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) float32 triangular filters, as ``librosa.filters.mel``.

    ``norm``: ``slaney`` (area), ``l1`` (each filter sums to 1) or None.
    """
    if fmax is None:
        fmax = float(sr) / 2
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    fftfreqs = np.linspace(0, float(sr) / 2, 1 + n_fft // 2)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n_mels + 2), htk)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    if norm == "slaney":
        enorm = 2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels])
        weights *= enorm[:, np.newaxis]
    elif norm == "l1":
        length = np.sum(np.abs(weights), axis=-1, keepdims=True)
        length[length < np.finfo(weights.dtype).tiny] = 1.0
        weights = weights / length
    elif norm is not None:
        raise ValueError(f"unsupported mel norm {norm!r}")
    return weights


def mel_spectrogram(x: torch.Tensor, basis: torch.Tensor, *, n_fft: int, hop_length: int,
                    win_length: int | None = None, window_name: str = "hann",
                    center: bool = True, pad_mode: str = "reflect",
                    power: float = 1.0) -> torch.Tensor:
    """(batch, samples) -> (batch, n_mels, frames): ``basis @ |stft| ** power``."""
    import torch

    spec = stft(x, n_fft, hop_length, win_length, window_name, center, pad_mode).abs()
    if power != 1.0:
        spec = spec ** power
    return torch.matmul(basis.to(spec.device, spec.dtype), spec)


def amplitude_to_db(s: torch.Tensor, ref: float = 1.0, amin: float = 1e-5,
                    top_db: float | None = 80.0) -> torch.Tensor:
    """``librosa.amplitude_to_db`` per clip: (batch, ...) magnitudes -> dB."""
    import torch

    power = s.abs() ** 2
    db = 10.0 * torch.log10(torch.clamp(power, min=amin ** 2))
    db = db - 10.0 * math.log10(max(amin ** 2, abs(ref) ** 2))
    if top_db is not None:
        peak = db.flatten(1).amax(dim=1).reshape(-1, *([1] * (db.dim() - 1)))
        db = torch.maximum(db, peak - top_db)
    return db


def peak_normalise(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``x / max|x| * scale`` per clip; a silent clip stays zero (upstream would divide by 0)."""
    import torch

    peak = x.abs().amax(dim=-1, keepdim=True)
    return torch.where(peak > 0, x / torch.where(peak > 0, peak, torch.ones_like(peak)) * scale,
                       x)


# --------------------------------------------------------------------------- build options
def check_options(options: Mapping[str, Any], known: tuple[str, ...], model: str) -> None:
    """Refuse option names a family does not have (one error listing the known ones)."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise InputError(f"extract.options.{model}",
                         f"unknown option(s) {unknown}; {model} has {list(known)}")


def option_choice(options: Mapping[str, Any], name: str, choices: tuple[str, ...],
                  model: str) -> str:
    """The value of option ``name`` (default: the first choice), one of ``choices``."""
    value = options.get(name, choices[0])
    if value not in choices:
        raise InputError(f"extract.options.{model}.{name}",
                         f"expected one of {list(choices)}, got {value!r}")
    return str(value)
