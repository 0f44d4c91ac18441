"""The ZeroSpeech 2020 VQ-VAE encoder (van Niekerk et al., bshall/ZeroSpeech), 2019 English.

**Sources** (ZS-fork = gretatuckute/ZeroSpeech @76a6fd524603dccfb793c45d8260eb365317d3b2, from
bshall/ZeroSpeech 0ef25e4):

- weights: release v0.1 ("Pretrained weights for the 2019 English and Indonesian datasets"),
  ``model.ckpt-500000.pt`` (``config/convert.yaml``: dataset 2019/english), taken from the
  release archive (registry entry ``downloads/zerospeech-2019english.zip``; the asset name is
  unverified). ``train.py`` ``save_checkpoint``: ``torch.save({encoder, decoder, optimizer, amp,
  scheduler, step})``; the scheduler is a ``MultiStepLR`` whose ``milestones`` is a
  ``collections.Counter`` (in torch's ``weights_only`` allowlist, as are OrderedDict and
  tensors). Made with "PyTorch 1.4 or greater" (README), so probably the legacy container
  (no mmap); a zip container loads the same way. Only ``encoder`` is used, loaded strictly into
  :func:`build_network` (``convert.py`` does ``encoder.load_state_dict(checkpoint["encoder"])``).
- architecture: ``model.py`` ``Encoder`` with ``config/model/default.yaml``: Conv1d(80, 768, 3,
  p 0, no bias) -> BN -> ReLU, Conv1d(768, 768, 3, p 1) -> BN -> ReLU, Conv1d(768, 768, 4, s 2,
  p 1) -> BN -> ReLU, 2 x (Conv1d(768, 768, 3, p 1) -> BN -> ReLU), Conv1d(768, 64, 1), all ReLUs
  ``nn.ReLU(True)``; then ``codebook`` (VQ-EMA, 512 x 64: buffers ``embedding``, ``ema_count``,
  ``ema_weight``) and ``jitter`` (buffer ``prob``, training only). The codebook and jitter
  buffers are part of the state dict, so they are built (and loaded) but never run: no tapped
  layer lies after the conv stack. Widths are read from the tensor shapes and checked against
  ``ModelSpec.config``.
- front end: ``convert.py`` l.117-145 with ``config/preprocessing/default.yaml``:
  ``librosa.load(sr=16000)`` -> ``wav / max|wav| * 0.999`` -> ``scipy.signal.lfilter([1, -0.97],
  [1], wav)`` -> ``librosa.feature.melspectrogram(sr=16000, n_fft=2048, win_length=400,
  hop_length=160, n_mels=80, fmin=50, power=1)`` (hann, centred, reflect, fmax 8000, Slaney mel,
  ``norm`` left at its default = Slaney area; librosa 0.7.2) -> ``amplitude_to_db(top_db=80)`` ->
  ``/ 80 + 1`` -> (1, 80, T) (:mod:`brainalign.models.frontends.librosa_legacy`).
- layer taps: ``extractor_utils.py`` ``SaveOutput``: hooks on every encoder ``nn.ReLU``, output
  (1, 768, T) squeezed and averaged over time (axis 1) -> 768; keys ``ReLU(inplace=True)--k``.
  The in-place ReLU outputs are not modified afterwards, so the hooked tensors are the ReLU
  outputs. Frames for 2 s: 201 -> 199 (ReLU_1, ReLU_2) -> 99 (ReLU_3..5).

**Decisions and build options** (``extract.options.braindnn_zerospeech``; paper-models §3.14):

- ``librosa_frontend``: ``original`` (default; librosa 0.7.2, reflect padding) or
  ``librosa_0.11`` (zero padding; the mel filters are the same, since the call keeps the default
  ``norm``, Slaney in both versions).
- A silent clip is left at zero instead of dividing by zero (upstream: NaN).
- ``min_samples`` = 480 (4 STFT frames: the k3/p0 and k4/s2 convs then leave one frame); the
  reflect padding follows numpy, so clips shorter than the 1024-sample pad work too.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from brainalign.errors import InputError
from brainalign.models.base import Runner
from brainalign.models.frontends import librosa_legacy as lr
from brainalign.models.spec import BuildContext, ModelSpec
from brainalign.models.weights import check_config, expect_keys, load_strict, safe_load, weight_file

if TYPE_CHECKING:
    import torch
    from torch import nn

SAMPLE_RATE = 16_000
WEIGHTS_FILE = "model.ckpt-500000.pt"
N_FFT = 2048
WIN_LENGTH = 400
HOP = 160
N_MELS = 80
FMIN = 50.0
PREEMPH = 0.97
TOP_DB = 80.0
PEAK = 0.999
CONFIG = {"in_channels": 80, "channels": 768, "n_embeddings": 512, "embedding_dim": 64}
"""config/model/default.yaml ``model.encoder`` (in_channels = preprocessing.n_mels)."""

LAYERS = tuple(f"ReLU_{i}" for i in range(1, 6))
PAPER_KEYS = {f"ReLU_{i}": f"ReLU(inplace=True)--{i - 1}" for i in range(1, 6)}
RELU_INDEX = {f"ReLU_{i + 1}": idx for i, idx in enumerate((2, 5, 8, 11, 14))}
"""Position of each tapped ReLU in ``encoder.encoder`` (the nn.Sequential)."""
OPTIONS = (lr.OPTION,)
# (kernel, stride, padding) of the convs before each tapped ReLU
_CONVS = ((3, 1, 0), (3, 1, 1), (4, 2, 1), (3, 1, 1), (3, 1, 1))


@functools.cache
def _modules() -> Any:
    import torch
    from torch import nn

    class VQEmbeddingEMA(nn.Module):
        """model.py VQEmbeddingEMA: the codebook buffers only (not run here)."""

        def __init__(self, n_embeddings: int, embedding_dim: int) -> None:
            super().__init__()
            self.register_buffer("embedding", torch.zeros(n_embeddings, embedding_dim))
            self.register_buffer("ema_count", torch.zeros(n_embeddings))
            self.register_buffer("ema_weight", torch.zeros(n_embeddings, embedding_dim))

    class Jitter(nn.Module):
        """model.py Jitter: a training-time time jitter; its ``prob`` buffer only."""

        def __init__(self, p: float = 0.5) -> None:
            super().__init__()
            self.register_buffer("prob", torch.tensor([p / 2, 1 - p, p / 2]))

    class Encoder(nn.Module):
        """model.py Encoder (conv stack, codebook, jitter), its state-dict names."""

        def __init__(self, in_channels: int, channels: int, n_embeddings: int,
                     embedding_dim: int) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            cin = in_channels
            for k, s, p in _CONVS:
                layers += [nn.Conv1d(cin, channels, k, s, p, bias=False),
                           nn.BatchNorm1d(channels), nn.ReLU(True)]
                cin = channels
            layers.append(nn.Conv1d(channels, embedding_dim, 1))
            self.encoder = nn.Sequential(*layers)
            self.codebook = VQEmbeddingEMA(n_embeddings, embedding_dim)
            self.jitter = Jitter(0.5)

    return Encoder


def build_network(config: Mapping[str, int] = CONFIG) -> nn.Module:
    """The VQ-VAE encoder with the given widths (default: the released model's)."""
    return _modules()(**{k: int(config[k]) for k in CONFIG})


def config_from_state(state: Mapping[str, Any], path: Any, model: str) -> dict[str, int]:
    """The encoder widths its state dict implies (the checkpoint stores no config)."""
    need = ("encoder.0.weight", "encoder.15.weight", "codebook.embedding")
    missing = [k for k in need if k not in state or not hasattr(state[k], "shape")]
    if missing:
        raise InputError(path, f"checkpoint does not fit model {model!r}: missing key "
                         f"{missing[0]!r} in 'encoder' (a ZeroSpeech encoder state dict)")
    return {"in_channels": int(state["encoder.0.weight"].shape[1]),
            "channels": int(state["encoder.0.weight"].shape[0]),
            "n_embeddings": int(state["codebook.embedding"].shape[0]),
            "embedding_dim": int(state["encoder.15.weight"].shape[0])}


def relu_keys(net: nn.Module) -> dict[str, str]:
    """Tuckute's hook names for our modules (str(module) + occurrence)."""
    seen: dict[str, int] = {}
    keys = {}
    for layer, idx in RELU_INDEX.items():
        base = str(net.encoder[idx])
        keys[layer] = f"{base}--{seen.get(base, 0)}"
        seen[base] = seen.get(base, 0) + 1
    return keys


def frames(n_samples: int) -> dict[str, int]:
    """Frames of each tapped layer for a clip of ``n_samples`` (mel frames included)."""
    t = lr.n_frames(n_samples, N_FFT, HOP)
    out = {"mel": t}
    for layer, (k, s, p) in zip(LAYERS, _CONVS, strict=True):
        t = (t + 2 * p - k) // s + 1 if t + 2 * p >= k else 0
        out[layer] = max(t, 0)
    return out


def _min_samples() -> int:
    n = 1
    while min(frames(n).values()) < 1:
        n += 1
    return n


MIN_SAMPLES = _min_samples()


class ZeroSpeechRunner(Runner):
    """Log-mel (librosa 0.7.2 style) -> VQ-VAE encoder conv stack; ReLU maps time-averaged."""

    def __init__(self, spec: ModelSpec, ctx: BuildContext, net: nn.Module | None = None) -> None:
        """Load the checkpoint, or wrap ``net`` (an already built network of ``spec.config``,
        e.g. the real-size architecture on the meta device for shape checks)."""
        import torch

        super().__init__(spec, ctx.device)
        opts = dict(ctx.options)
        lr.check_options(opts, OPTIONS, spec.name)
        self.frontend = lr.behaviour(opts, spec.name)
        self.weights_path = None
        self.step = None
        if net is None:
            path = self.weights_path = weight_file(spec, ctx, WEIGHTS_FILE)
            ckpt = safe_load(path)
            expect_keys(ckpt, ("encoder",), path, "ZeroSpeech checkpoint")
            state = ckpt["encoder"]
            if not isinstance(state, Mapping):
                raise InputError(path, f"'encoder' is not a state dict ({type(state).__name__})")
            self.step = ckpt.get("step")
            self.config = config_from_state(state, path, spec.name)
            check_config(self.config, spec.config, path=path, model=spec.name)
            with torch.device("meta"):
                net = build_network(self.config)
            load_strict(net, state, path=path, model=spec.name, assign=True)
        else:
            self.config = {k: int(spec.config[k]) for k in CONFIG}
        self.net = net.to(ctx.device).eval()
        basis = lr.mel_filters(SAMPLE_RATE, N_FFT, N_MELS, fmin=FMIN, fmax=None, htk=False,
                               norm="slaney")
        self.mel_basis = torch.from_numpy(basis).to(ctx.device)

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> (B, 80, T) log-mel scaled to [0, 1] as convert.py does."""
        wav = lr.peak_normalise(audio.float(), PEAK)
        pre = wav.clone()
        pre[:, 1:] -= PREEMPH * wav[:, :-1]
        mel = lr.mel_spectrogram(pre, self.mel_basis, n_fft=N_FFT, hop_length=HOP,
                                 win_length=WIN_LENGTH, window_name="hann", center=True,
                                 pad_mode=self.frontend.pad_mode, power=1.0)
        return lr.amplitude_to_db(mel, top_db=TOP_DB) / TOP_DB + 1

    def forward(self, audio: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        x = self.features(audio.to(self.device))
        last = max(RELU_INDEX[k] for k in layers)
        wanted = {RELU_INDEX[k]: k for k in layers}
        out = {}
        for i, module in enumerate(self.net.encoder):
            if i > last:
                break
            x = module(x)
            if i in wanted:
                out[wanted[i]] = x.mean(dim=-1)
        return out

    def info(self) -> dict[str, Any]:
        return {
            "config": dict(self.config),
            "checkpoint_step": self.step,
            "paper_keys_from_modules": relu_keys(self.net),
            "librosa_frontend": self.frontend.name,
            "frontend": f"wav/max|wav|*{PEAK} -> preemphasis {PREEMPH} -> mel (n_fft {N_FFT}, "
                        f"win {WIN_LENGTH}, hop {HOP}, hann, {N_MELS} mels from {FMIN:g} Hz, "
                        f"power 1, Slaney, pad {self.frontend.pad_mode}) -> "
                        f"amplitude_to_db(top_db={TOP_DB:g}) / {TOP_DB:g} + 1",
            "weights_file": self.weights_path.name if self.weights_path else None,
        }


def build(spec: ModelSpec, ctx: BuildContext) -> Runner:
    """Option: ``librosa_frontend``."""
    return ZeroSpeechRunner(spec, ctx)


SPECS = [
    ModelSpec(
        name="braindnn_zerospeech", label="Zerospeech", family="Others",
        training="self-supervised", sample_rate=SAMPLE_RATE, layers=LAYERS,
        paper_keys=PAPER_KEYS, build="brainalign.models.zerospeech:build", fetched=True,
        config=dict(CONFIG), frontend="brainalign.models.frontends.librosa_legacy",
        min_samples=MIN_SAMPLES, options={lr.OPTION: "original"},
        description="ZeroSpeech 2020 VQ-VAE encoder, 2019 English (bshall/ZeroSpeech v0.1)",
    )
]
