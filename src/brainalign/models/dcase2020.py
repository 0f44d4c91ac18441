"""The DCASE 2020 audio-captioning baseline (Drossos et al.), as Tuckute et al. 2023 tapped it.

**Sources** (DCASE-fork = gretatuckute/dcase-2020-baseline
@35e3bec90464404abccb015f4f2089152ec47373):

- weights: ``models/dcase_model_baseline_pre_trained.pt`` (git blob 84992d7a; a copy of the
  Zenodo 10.5281/zenodo.3697687 release), a flat ``state_dict`` saved by torch 1.3.1
  (``environment_20220830.yml``), i.e. in the legacy non-zip container: read with
  ``torch.load(weights_only=True)`` without mmap, loaded strictly (no other key is tolerated);
- architecture: ``modules/encoder.py`` (three single-layer bidirectional batch-first GRUs
  64 -> 256, 512 -> 256, 512 -> 256, outputs [fwd || bwd] = 512, dropout 0.25, residual
  ``h + gru(h)`` when the widths agree, i.e. for gru_2 and gru_3), ``models/baseline_dcase.py``
  ``BaselineDCASE`` (the encoder's last step ``h[:, -1]`` repeated ``max_out_t_steps`` = 22
  times, ``settings/model_baseline.yaml``) and ``modules/decoder.py`` (dropout, GRU 512 -> 256,
  Linear 256 -> 4367, the Clotho vocabulary). Eval mode: dropout is the identity. The checkpoint
  has no config: the widths are read from its tensor shapes and checked against
  ``ModelSpec.config``;
- front end: ``feature_extraction`` in ``models/baseline_dcase.py`` with the values of its
  ``__main__`` (= ``settings/feature_extraction.yaml``): ``y / max|y|`` ->
  ``librosa.feature.melspectrogram(sr=44100, n_fft=1024, win_length=1024, hop_length=512,
  window='hann', center=True, power=1, n_mels=64, fmin=0, fmax=None, htk=False, norm=1)`` under
  librosa 0.7.1 -> transpose (T, 64) -> ``log(mel + np.finfo(float).eps)``, float32
  (:mod:`brainalign.models.frontends.librosa_legacy`);
- layer taps: ``models/extractor_utils.py`` ``SaveOutput``: forward hooks on every ``nn.GRU`` and
  ``nn.Linear``; a GRU's ``--hidden`` value is its ``h_n`` (num_directions, 1, 256) reshaped to
  [fwd@T-1 || bwd@0]; the Linear output (1, 22, 4367) is averaged over the 22 decoder steps.
  GRU_2 is gru_2's own state (before the residual sum), GRU_4 the decoder GRU's.

**Decisions and build options** (``extract.options.braindnn_dcase2020``; paper-models §1.2, §3.11):

- ``rnn_reduction``: ``final_state`` (default; the key suffix ``--hidden`` comes from Tuckute's
  final-state code) or ``time_mean`` (mean of each GRU's output sequence over its steps: 512 for
  the encoder GRUs, 256 over the 22 decoder steps for GRU_4). The Linear layer is always the mean
  over the decoder steps.
- ``input_rate``: ``resampled`` (default; the stimuli are resampled to 44.1 kHz, the model's own
  rate: 173 frames for 2 s) or ``native_as_44k`` (Tuckute's input: the samples at the sounds'
  native rate passed with ``sr=44100``, no resampling: 79 frames for 2 s at 20 kHz). The runner
  never sees the source rate, so for ``native_as_44k`` it declares its input rate to be
  ``native_rate`` (default 20000, the rate of the lab release of the 165 sounds): extraction then
  resamples each sound to that rate (a no-op for sounds already at it) and the front end treats
  the samples as 44.1 kHz.
- ``librosa_frontend``: ``original`` (default; librosa 0.7.1: reflect padding, ``norm=1`` =
  Slaney area) or ``librosa_0.11`` (the same call under BDN's librosa 0.11: zero padding,
  ``norm=1`` = per-filter L1 normalisation).
- A silent clip (max |y| = 0) is left at zero instead of dividing by zero (upstream: NaN).
- ``min_samples`` = 1: the centred STFT gives ``1 + n // 512`` >= 1 frame for any length.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from brainalign.errors import InputError
from brainalign.models.base import Runner
from brainalign.models.frontends import librosa_legacy as lr
from brainalign.models.spec import BuildContext, ModelSpec
from brainalign.models.weights import check_config, load_strict, safe_load, weight_file

if TYPE_CHECKING:
    import torch
    from torch import nn

SAMPLE_RATE = 44_100
WEIGHTS_FILE = "dcase_model_baseline_pre_trained.pt"
N_FFT = 1024
HOP = 512
N_MELS = 64
LOG_EPS = float(np.finfo(float).eps)
MAX_OUT_T_STEPS = 22
CONFIG = {"input_dim": 64, "hidden_dim": 256, "output_dim": 256, "decoder_dim": 256,
          "nb_classes": 4367}
"""The released model (settings/model_baseline.yaml; nb_classes = the Clotho vocabulary)."""

LAYERS = ("GRU_1", "GRU_2", "GRU_3", "GRU_4", "Linear")
PAPER_KEYS = {
    "GRU_1": "GRU(64, 256, batch_first=True, bidirectional=True)--0--hidden",
    "GRU_2": "GRU(512, 256, batch_first=True, bidirectional=True)--0--hidden",
    "GRU_3": "GRU(512, 256, batch_first=True, bidirectional=True)--1--hidden",
    "GRU_4": "GRU(512, 256, batch_first=True)--0--hidden",
    "Linear": "Linear(in_features=256, out_features=4367, bias=True)--0",
}
OPTIONS = ("rnn_reduction", "input_rate", "native_rate", lr.OPTION)
RNN_REDUCTIONS = ("final_state", "time_mean")
INPUT_RATES = ("resampled", "native_as_44k")
DEFAULT_NATIVE_RATE = 20_000


@functools.cache
def _modules() -> Any:
    from torch import nn

    class Encoder(nn.Module):
        """modules/encoder.py: three bidirectional GRUs with residual sums."""

        def __init__(self, input_dim: int, hidden_dim: int, output_dim: int,
                     dropout_p: float = 0.25) -> None:
            super().__init__()
            common = {"num_layers": 1, "bias": True, "batch_first": True, "bidirectional": True}
            self.dropout = nn.Dropout(p=dropout_p)
            self.gru_1 = nn.GRU(input_dim, hidden_dim, **common)
            self.gru_2 = nn.GRU(hidden_dim * 2, hidden_dim, **common)
            self.gru_3 = nn.GRU(hidden_dim * 2, output_dim, **common)

        def grus(self) -> list[nn.GRU]:
            return [self.gru_1, self.gru_2, self.gru_3]

        def forward_taps(self, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[Any, Any]]]:
            """(B, T, n_mels) -> encoder output (B, T, 2 * output_dim), [(out, h_n)] per GRU."""
            taps = []
            h = None
            for i, gru in enumerate(self.grus()):
                out, h_n = gru(x if i == 0 else h)
                taps.append((out, h_n))
                out = self.dropout(out)
                h = out if h is None or h.shape[-1] != out.shape[-1] else h + out
            return h, taps

    class Decoder(nn.Module):
        """modules/decoder.py: GRU + Linear classifier, no attention."""

        def __init__(self, input_dim: int, output_dim: int, nb_classes: int,
                     dropout_p: float = 0.25) -> None:
            super().__init__()
            self.dropout = nn.Dropout(p=dropout_p)
            self.rnn = nn.GRU(input_dim, output_dim, num_layers=1, batch_first=True,
                              bidirectional=False)
            self.classifier = nn.Linear(output_dim, nb_classes)

    class BaselineDCASE(nn.Module):
        """models/baseline_dcase.py: encoder -> last step x max_out_t_steps -> decoder."""

        def __init__(self, input_dim: int, hidden_dim: int, output_dim: int,
                     decoder_dim: int, nb_classes: int,
                     max_out_t_steps: int = MAX_OUT_T_STEPS) -> None:
            super().__init__()
            self.max_out_t_steps = max_out_t_steps
            self.encoder = Encoder(input_dim, hidden_dim, output_dim)
            self.decoder = Decoder(output_dim * 2, decoder_dim, nb_classes)

    return BaselineDCASE


def build_network(config: Mapping[str, int] = CONFIG) -> nn.Module:
    """The captioning network with the given widths (default: the released model's)."""
    cfg = {k: int(config[k]) for k in CONFIG}
    return _modules()(**cfg)


def config_from_state(state: Mapping[str, Any], path: Any, model: str) -> dict[str, int]:
    """The network widths a flat state dict implies (it carries no config of its own)."""
    need = ("encoder.gru_1.weight_ih_l0", "encoder.gru_1.weight_hh_l0",
            "encoder.gru_3.weight_hh_l0", "decoder.rnn.weight_hh_l0", "decoder.classifier.weight")
    missing = [k for k in need if k not in state or not hasattr(state[k], "shape")]
    if missing:
        raise InputError(path, f"checkpoint does not fit model {model!r}: missing key "
                         f"{missing[0]!r} (a flat DCASE baseline state dict was expected)")
    return {
        "input_dim": int(state["encoder.gru_1.weight_ih_l0"].shape[1]),
        "hidden_dim": int(state["encoder.gru_1.weight_hh_l0"].shape[1]),
        "output_dim": int(state["encoder.gru_3.weight_hh_l0"].shape[1]),
        "decoder_dim": int(state["decoder.rnn.weight_hh_l0"].shape[1]),
        "nb_classes": int(state["decoder.classifier.weight"].shape[0]),
    }


def gru_keys(net: nn.Module) -> dict[str, str]:
    """Tuckute's hook names for our modules (str(module) + occurrence + ``--hidden``)."""
    order = [*net.encoder.grus(), net.decoder.rnn, net.decoder.classifier]
    seen: dict[str, int] = {}
    keys = {}
    for layer, module in zip(LAYERS, order, strict=True):
        base = str(module)
        keys[layer] = f"{base}--{seen.get(base, 0)}" + ("--hidden" if layer != "Linear" else "")
        seen[base] = seen.get(base, 0) + 1
    return keys


def n_frames(n_samples: int) -> int:
    """Encoder steps for a clip of ``n_samples`` (centred STFT, hop 512)."""
    return lr.n_frames(n_samples, N_FFT, HOP)


def _final_state(h_n: torch.Tensor) -> torch.Tensor:
    """(num_directions, B, H) -> (B, num_directions * H) = [fwd@T-1 || bwd@0]."""
    return h_n.transpose(0, 1).reshape(h_n.shape[1], -1)


class DCASERunner(Runner):
    """Log-mel (44.1 kHz labels) -> encoder GRUs -> decoder GRU -> classifier."""

    def __init__(self, spec: ModelSpec, ctx: BuildContext, net: nn.Module | None = None) -> None:
        """Load the checkpoint, or wrap ``net`` (an already built network of ``spec.config``,
        e.g. the real-size architecture on the meta device for shape checks)."""
        import torch

        super().__init__(spec, ctx.device)
        opts = dict(ctx.options)
        lr.check_options(opts, OPTIONS, spec.name)
        self.rnn_reduction = lr.option_choice(opts, "rnn_reduction", RNN_REDUCTIONS, spec.name)
        self.input_rate = lr.option_choice(opts, "input_rate", INPUT_RATES, spec.name)
        self.frontend = lr.behaviour(opts, spec.name)
        native = opts.get("native_rate", DEFAULT_NATIVE_RATE)
        if isinstance(native, bool) or not isinstance(native, int) or native <= 0:
            raise InputError(f"extract.options.{spec.name}.native_rate",
                             f"expected a positive integer rate in Hz, got {native!r}")
        if "native_rate" in opts and self.input_rate != "native_as_44k":
            raise InputError(f"extract.options.{spec.name}.native_rate",
                             "only used with input_rate: native_as_44k")
        self.native_rate = native if self.input_rate == "native_as_44k" else None
        if self.native_rate is not None:
            self.sample_rate = self.native_rate

        self.weights_path = None
        if net is None:
            path = self.weights_path = weight_file(spec, ctx, WEIGHTS_FILE)
            state = safe_load(path)
            if not isinstance(state, Mapping):
                raise InputError(path, f"expected a flat state dict, got {type(state).__name__}")
            self.config = config_from_state(state, path, spec.name)
            check_config(self.config, spec.config, path=path, model=spec.name)
            with torch.device("meta"):
                net = build_network(self.config)
            load_strict(net, state, path=path, model=spec.name, assign=True)
        else:
            self.config = {k: int(spec.config[k]) for k in CONFIG}
        self.net = net.to(ctx.device).eval()
        basis = lr.mel_filters(SAMPLE_RATE, N_FFT, N_MELS, fmin=0.0, fmax=None, htk=False,
                               norm=lr.resolve_norm(1, self.frontend))
        self.mel_basis = torch.from_numpy(basis).to(ctx.device)

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> (B, T, 64) log mel energies (float32)."""
        import torch

        y = lr.peak_normalise(audio.float())
        mel = lr.mel_spectrogram(y, self.mel_basis, n_fft=N_FFT, hop_length=HOP,
                                 win_length=N_FFT, window_name="hann", center=True,
                                 pad_mode=self.frontend.pad_mode, power=1.0)
        return torch.log(mel.transpose(1, 2) + LOG_EPS)

    def forward(self, audio: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        net = self.net
        x = self.features(audio.to(self.device))
        h, taps = net.encoder.forward_taps(x)
        raw: dict[str, tuple[torch.Tensor, torch.Tensor]] = {
            f"GRU_{i + 1}": tap for i, tap in enumerate(taps)}
        if "GRU_4" in layers or "Linear" in layers:
            bridge = h[:, -1, :].unsqueeze(1).expand(-1, net.max_out_t_steps, -1)
            out, h_n = net.decoder.rnn(net.decoder.dropout(bridge))
            raw["GRU_4"] = (out, h_n)
        result = {}
        for key in layers:
            if key == "Linear":
                result[key] = net.decoder.classifier(raw["GRU_4"][0]).mean(dim=1)
            elif self.rnn_reduction == "final_state":
                result[key] = _final_state(raw[key][1])
            else:
                result[key] = raw[key][0].mean(dim=1)
        return result

    def info(self) -> dict[str, Any]:
        return {
            "config": {**self.config, "max_out_t_steps": MAX_OUT_T_STEPS},
            "paper_keys_from_modules": gru_keys(self.net),
            "rnn_reduction": self.rnn_reduction,
            "input_rate": self.input_rate,
            "native_rate": self.native_rate,
            "input_sample_rate": self.sample_rate,
            "frontend_sample_rate_label": SAMPLE_RATE,
            "librosa_frontend": self.frontend.name,
            "frontend": f"y/max|y| -> mel (n_fft {N_FFT}, hop {HOP}, hann, {N_MELS} mels, "
                        f"power 1, norm=1 -> {lr.resolve_norm(1, self.frontend)}, pad "
                        f"{self.frontend.pad_mode}) -> log(mel + {LOG_EPS:.3g})",
            "weights_file": self.weights_path.name if self.weights_path else None,
        }


def build(spec: ModelSpec, ctx: BuildContext) -> Runner:
    """Options: ``rnn_reduction``, ``input_rate``, ``native_rate``, ``librosa_frontend``."""
    return DCASERunner(spec, ctx)


SPECS = [
    ModelSpec(
        name="braindnn_dcase2020", label="DCASE2020", family="Others", training="supervised",
        sample_rate=SAMPLE_RATE, layers=LAYERS, paper_keys=PAPER_KEYS,
        build="brainalign.models.dcase2020:build", fetched=True, config=dict(CONFIG),
        frontend="brainalign.models.frontends.librosa_legacy", min_samples=1,
        options={"rnn_reduction": "final_state", "input_rate": "resampled",
                 lr.OPTION: "original"},
        description="DCASE 2020 task 6 captioning baseline (gretatuckute/dcase-2020-baseline)",
    )
]
