"""MetricGAN+ speech enhancement (speechbrain/metricgan-plus-voicebank), as Tuckute tapped it.

Our own port of the speechbrain generator and front end (speechbrain is not imported; the tests
check the port against speechbrain 0.5.16 on the same random weights).

Sources of the facts
- Architecture: speechbrain 0.5.10 (Tuckute's pin; PyPI wheel) ``lobes/models/MetricGAN.py``
  ``EnhancementGenerator``: ``blstm`` = ``nnet/RNN.py`` ``LSTM`` (torch ``nn.LSTM`` held as
  ``.rnn``, batch-first, inputs packed with relative lengths 1.0 = no padding) 257 -> 200,
  2 layers, bidirectional; ``linear1`` 400 -> 300 (hard-coded), LeakyReLU(0.3), ``linear2``
  300 -> 257, ``Learnable_sigmoid`` 1.2 * sigmoid(slope * x) (slope [257]). 0.5.16 differs only
  in writing the sigmoid as ``1.2 * torch.sigmoid``, after the taps.
- Front end: ``pretrained/interfaces.py`` ``SpectralMaskEnhancement.compute_features`` =
  ``compute_stft`` -> ``spectral_magnitude(power=0.5)`` -> log1p; ``processing/features.py``
  ``STFT`` (ms -> samples with round(sr/1000 * ms): win 512, hop 256; n_fft 512; the
  ``window_fn`` of the file, ``torch.hamming_window`` = periodic; center, pad 'constant',
  onesided, unnormalised) and ``spectral_magnitude`` (re^2 + im^2, + eps 1e-14 when power < 1,
  ** power). A 2-s clip gives (1, 126, 257).
- Checkpoint: HF ``speechbrain/metricgan-plus-voicebank`` at main, ``enhance_model.ckpt`` (flat
  state dict: ``blstm.rnn.*``, ``linear1.*``, ``linear2.*``, ``Learnable_sigmoid.slope``) and
  ``hyperparams.yaml`` (HyperPyYAML, read as data only with
  :func:`brainalign.models.hyperparams.read_hyperparams`).
- Taps: gretatuckute/speechbrain_activation_extraction @f211be9 ``run_models.py`` l.240-264,
  ``extractor_utils.detach_activations_metricGAN`` (paper-models.md section 3.15): the LSTM
  hook gets ``(packed output, (h_n, c_n))``; ``c_n[:2]`` flattened -> ``--l1--cell``,
  ``c_n[2:]`` -> ``--l2--cell``; Linear outputs are time means.

Layers
- ``LSTM_1`` / ``LSTM_2``: final cell states of layer 1 / 2, [forward at T-1 || backward at 0]
  -> 400. Option ``rnn_reduction``: ``final_state`` (default: her key suffixes) | ``time_mean``
  (time mean of that layer's outputs, 400).
- ``LeakyReLU_1`` (``Linear(400, 300)--0``): Tuckute made the LeakyReLU in-place, so her hook
  on linear1 saw POST-activation values. Option ``linear1``: ``post_activation`` (default) |
  ``pre_activation`` (stock speechbrain). Time mean -> 300.
- ``Linear_2`` (``Linear(300, 257)--0``): linear2 output before the learnable sigmoid, time
  mean -> 257.

Decisions: one clip at a time (the paper's loop); built on the meta device, the checkpoint's
tensors adopted (strict keys, ``torch.load(weights_only=True)``, mmap). For ``time_mean`` the
first layer is re-run alone with the same parameters (a single-layer view of ``blstm.rnn``).

Options (``extract.options.braindnn_metricgan``): ``rnn_reduction``, ``linear1`` (above).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from brainalign.errors import InputError
from brainalign.models.base import Runner
from brainalign.models.spec import BuildContext, ModelSpec

if TYPE_CHECKING:
    import torch

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
FILES = ("enhance_model.ckpt", "hyperparams.yaml")
OPTIONS = {"rnn_reduction": "final_state", "linear1": "post_activation"}
CHOICES = {"rnn_reduction": ("final_state", "time_mean"),
           "linear1": ("post_activation", "pre_activation")}
LEAKY_SLOPE = 0.3
MAG_EPS = 1e-14  # spectral_magnitude's eps (added because power < 1)
LINEAR1 = (400, 300)  # hard-coded in EnhancementGenerator
LINEAR2 = (300, 257)

STFT_CLASS = "speechbrain.processing.features.STFT"
MAG_FUNCTION = "speechbrain.processing.features.spectral_magnitude"
GENERATOR_CLASS = "speechbrain.lobes.models.MetricGAN.EnhancementGenerator"
STFT_DEFAULTS: dict[str, Any] = {
    "sample_rate": None, "win_length": 25, "hop_length": 10, "n_fft": 400,
    "window_fn": "torch.hamming_window", "normalized_stft": False, "center": True,
    "pad_mode": "constant", "onesided": True,
}
MAG_DEFAULTS: dict[str, Any] = {"power": 1, "log": False, "eps": MAG_EPS}
GENERATOR_DEFAULTS: dict[str, Any] = {"input_size": 257, "hidden_size": 200, "num_layers": 2,
                                      "dropout": 0}

CONFIG: dict[str, Any] = {
    "sample_rate": SAMPLE_RATE,
    "stft.sample_rate": SAMPLE_RATE, "stft.win_length": 32, "stft.hop_length": 16,
    "stft.n_fft": 512, "stft.window_fn": "torch.hamming_window", "stft.normalized_stft": False,
    "stft.center": True, "stft.pad_mode": "constant", "stft.onesided": True,
    "magnitude.power": 0.5, "magnitude.log": False, "magnitude.eps": MAG_EPS,
    "generator.input_size": 257, "generator.hidden_size": 200, "generator.num_layers": 2,
    "generator.dropout": 0,
}
"""The voicebank model's config (our flat key names for the hyperparams.yaml values)."""


def ms_to_samples(sample_rate: int, ms: float) -> int:
    """speechbrain's STFT conversion of a window/hop in ms to samples."""
    return int(round((sample_rate / 1000.0) * ms))


def n_frames(samples: int, hop: int = 256) -> int:
    """STFT frames of a centred transform (1 + samples // hop)."""
    return 1 + samples // hop


def _window_name(value: Any, where: str) -> str:
    from brainalign.models.hyperparams import HNode

    if isinstance(value, HNode) and value.kind == "name" and not value.args:
        return value.target
    if isinstance(value, str):
        return value
    raise InputError(where, f"expected window_fn: !name:<function>, got {value!r}")


def config_from_hyperparams(hp: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The flat config (``CONFIG`` keys) of a MetricGAN+ ``hyperparams.yaml`` (data only)."""
    from brainalign.models.hyperparams import HNode, new_args, resolve

    for key in ("compute_stft", "spectral_magnitude"):
        if key not in hp:
            raise InputError(where, f"expected a '{key}' entry (SpectralMaskEnhancement)")
    modules = hp.get("modules")
    generator = modules.get("enhance_model") if isinstance(modules, Mapping) else None
    if generator is None:
        generator = hp.get("enhance_model")
    if generator is None:
        raise InputError(where, "expected 'modules: enhance_model' (the generator)")
    stft = new_args(hp["compute_stft"], hp, STFT_CLASS, STFT_DEFAULTS, where)
    stft["window_fn"] = _window_name(stft["window_fn"], where)
    mag_node = resolve(hp["spectral_magnitude"], hp, where)
    if not (isinstance(mag_node, HNode) and mag_node.kind == "name"
            and mag_node.target == MAG_FUNCTION):
        raise InputError(where, f"expected spectral_magnitude: !name:{MAG_FUNCTION}")
    args = mag_node.args if isinstance(mag_node.args, Mapping) else {}
    unknown = sorted(set(args) - set(MAG_DEFAULTS))
    if unknown:
        raise InputError(where, f"spectral_magnitude has unknown arguments {unknown}")
    mag = {k: resolve(args.get(k, d), hp, where) for k, d in MAG_DEFAULTS.items()}
    gen = new_args(generator, hp, GENERATOR_CLASS, GENERATOR_DEFAULTS, where)
    cfg: dict[str, Any] = {"sample_rate": hp.get("sample_rate")}
    cfg.update({f"stft.{k}": v for k, v in stft.items()})
    cfg.update({f"magnitude.{k}": v for k, v in mag.items()})
    cfg.update({f"generator.{k}": v for k, v in gen.items()})
    return cfg


@functools.cache
def nets() -> SimpleNamespace:
    """The network classes (defined on first use: listing models never imports torch)."""
    import torch
    from torch import nn

    class BLSTM(nn.Module):
        """speechbrain.nnet.RNN.LSTM: torch's batch-first LSTM held as ``.rnn``."""

        def __init__(self, input_size: int, hidden_size: int, num_layers: int,
                     dropout: float) -> None:
            super().__init__()
            self.rnn = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True,
                               dropout=dropout, bidirectional=True)

    class LearnableSigmoid(nn.Module):
        def __init__(self, in_features: int = 257) -> None:
            super().__init__()
            self.slope = nn.Parameter(torch.ones(in_features))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 1.2 * torch.sigmoid(self.slope * x)

    class Generator(nn.Module):
        """EnhancementGenerator; ``taps`` returns every tapped tensor of one forward."""

        def __init__(self, cfg: Mapping[str, Any]) -> None:
            super().__init__()
            self.blstm = BLSTM(cfg["generator.input_size"], cfg["generator.hidden_size"],
                               cfg["generator.num_layers"], float(cfg["generator.dropout"]))
            self.linear1 = nn.Linear(*LINEAR1)
            self.linear2 = nn.Linear(*LINEAR2)
            self.Learnable_sigmoid = LearnableSigmoid(LINEAR2[1])
            self.activation = nn.LeakyReLU(negative_slope=LEAKY_SLOPE)

        def taps(self, feats: torch.Tensor) -> dict[str, Any]:
            """(B, T, 257) log1p magnitudes -> LSTM outputs/states, linear1/2, mask."""
            out, (h_n, c_n) = self.blstm.rnn(feats)
            lin1 = self.linear1(out)
            act = self.activation(lin1)
            lin2 = self.linear2(act)
            return {"lstm_out": out, "h_n": h_n, "c_n": c_n, "linear1": lin1,
                    "leaky": act, "linear2": lin2, "mask": self.Learnable_sigmoid(lin2)}

        def forward(self, feats: torch.Tensor) -> torch.Tensor:
            return self.taps(feats)["mask"]

    class Features(nn.Module):
        """compute_stft -> spectral_magnitude(power) -> log1p, as SpectralMaskEnhancement."""

        def __init__(self, cfg: Mapping[str, Any]) -> None:
            super().__init__()
            sr = cfg["stft.sample_rate"]
            self.n_fft = int(cfg["stft.n_fft"])
            self.win = ms_to_samples(sr, cfg["stft.win_length"])
            self.hop = ms_to_samples(sr, cfg["stft.hop_length"])
            self.center = bool(cfg["stft.center"])
            self.pad_mode = str(cfg["stft.pad_mode"])
            self.normalized = bool(cfg["stft.normalized_stft"])
            self.onesided = bool(cfg["stft.onesided"])
            self.power = float(cfg["magnitude.power"])
            self.eps = float(cfg["magnitude.eps"])
            self.register_buffer("window", torch.hamming_window(self.win), persistent=False)

        def forward(self, wav: torch.Tensor) -> torch.Tensor:
            """(B, samples) -> (B, frames, n_fft // 2 + 1)."""
            spec = torch.stft(wav, self.n_fft, self.hop, self.win, self.window.to(wav.device),
                              self.center, self.pad_mode, self.normalized, self.onesided,
                              return_complex=True)
            spec = torch.view_as_real(spec).pow(2).sum(-1)
            if self.power < 1:
                spec = spec + self.eps
            return torch.log1p(spec.pow(self.power)).transpose(1, 2)

    return SimpleNamespace(Generator=Generator, Features=Features)


def parameter_count_real() -> int:
    """Parameters of the voicebank generator, built on the meta device."""
    from brainalign.models.weights import parameter_count

    return parameter_count(lambda: nets().Generator(CONFIG))


def _validate_config(cfg: Mapping[str, Any], where: str) -> None:
    wrong = []
    if cfg["stft.window_fn"] != "torch.hamming_window":
        wrong.append(f"window_fn {cfg['stft.window_fn']!r} (this port: torch.hamming_window)")
    if cfg["magnitude.log"]:
        wrong.append("spectral_magnitude log=True")
    if 2 * cfg["generator.hidden_size"] != LINEAR1[0]:
        wrong.append("2 x hidden_size must be 400 (linear1 is hard-coded 400 -> 300)")
    if cfg["stft.n_fft"] // 2 + 1 != cfg["generator.input_size"] or LINEAR2[1] != \
            cfg["generator.input_size"]:
        wrong.append("input_size must be n_fft // 2 + 1 = 257 (the mask multiplies the input)")
    if cfg["generator.num_layers"] != 2:
        wrong.append("num_layers must be 2 (LSTM_1, LSTM_2)")
    if wrong:
        raise InputError(where, "unsupported MetricGAN config: " + "; ".join(wrong))


class MetricGanRunner(Runner):
    """16-kHz audio -> log1p STFT magnitudes -> the generator's four taps, one clip at a time."""

    def __init__(self, spec: ModelSpec, ctx: BuildContext, cfg: Mapping[str, Any],
                 generator: Any, options: Mapping[str, Any]) -> None:
        super().__init__(spec, ctx.device)
        self.cfg = dict(cfg)
        self.options = dict(options)
        self.generator = generator.to(ctx.device).eval()
        self.features = nets().Features(cfg).to(ctx.device)
        self.first_layer = None
        if self.options["rnn_reduction"] == "time_mean":
            self.first_layer = self._first_layer_view()

    def _first_layer_view(self) -> Any:
        """A one-layer bidirectional LSTM sharing blstm.rnn's layer-0 parameters."""
        import torch
        from torch import nn

        rnn = self.generator.blstm.rnn
        with torch.device("meta"):
            view = nn.LSTM(rnn.input_size, rnn.hidden_size, 1, batch_first=True,
                           bidirectional=True)
        for name in view._flat_weights_names:
            setattr(view, name, getattr(rnn, name))
        return view.eval()

    def _one(self, wav: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        feats = self.features(wav)
        taps = self.generator.taps(feats)
        out: dict[str, torch.Tensor] = {}
        final = self.options["rnn_reduction"] == "final_state"
        for layer, idx in (("LSTM_1", 0), ("LSTM_2", 1)):
            if layer not in layers:
                continue
            if final:  # c_n rows: [l0 fwd, l0 bwd, l1 fwd, l1 bwd]
                cell = taps["c_n"][2 * idx: 2 * idx + 2]
                out[layer] = cell.permute(1, 0, 2).reshape(wav.shape[0], -1)
            elif idx == 1:
                out[layer] = taps["lstm_out"].mean(dim=1)
            else:
                out[layer] = self.first_layer(feats)[0].mean(dim=1)
        if "LeakyReLU_1" in layers:
            post = self.options["linear1"] == "post_activation"
            out["LeakyReLU_1"] = (taps["leaky"] if post else taps["linear1"]).mean(dim=1)
        if "Linear_2" in layers:
            out["Linear_2"] = taps["linear2"].mean(dim=1)
        return out

    def forward(self, audio: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        import torch

        rows = [self._one(clip[None], layers) for clip in audio]
        return {k: torch.cat([r[k] for r in rows]) for k in layers}

    def info(self) -> dict[str, Any]:
        return {"config": self.cfg, "options": self.options,
                "frames_per_2s": n_frames(2 * SAMPLE_RATE, self.features.hop)}


def _options(spec: ModelSpec, ctx: BuildContext) -> dict[str, Any]:
    opts = {**OPTIONS, **dict(spec.options), **dict(ctx.options)}
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise InputError(f"extract.options.{spec.name}.{unknown[0]}",
                         f"unknown option (known: {sorted(OPTIONS)})")
    for key, choices in CHOICES.items():
        if opts[key] not in choices:
            raise InputError(f"extract.options.{spec.name}.{key}",
                             f"expected one of {list(choices)}, got {opts[key]!r}")
    return opts


def build(spec: ModelSpec, ctx: BuildContext) -> Runner:
    """Read hyperparams.yaml (data only), check it, build on meta, adopt the checkpoint."""
    import torch

    from brainalign.models.hyperparams import read_hyperparams
    from brainalign.models.weights import check_config, load_strict, safe_load, weight_file

    options = _options(spec, ctx)
    hp_path = weight_file(spec, ctx, "hyperparams.yaml")
    ckpt = weight_file(spec, ctx, "enhance_model.ckpt")
    cfg = config_from_hyperparams(read_hyperparams(hp_path), str(hp_path))
    check_config(cfg, spec.config, path=hp_path, model=spec.name)
    _validate_config(cfg, str(hp_path))
    with torch.device("meta"):
        generator = nets().Generator(cfg)
    load_strict(generator, safe_load(ckpt, mmap=True), path=ckpt, model=spec.name, assign=True)
    return MetricGanRunner(spec, ctx, cfg, generator, options)


SPECS = [
    ModelSpec(
        name="braindnn_metricgan", label="MetricGAN", family="Others", training="supervised",
        sample_rate=SAMPLE_RATE, layers=LAYERS, paper_keys=PAPER_KEYS,
        build="brainalign.models.metricgan:build", fetched=True, config=CONFIG,
        frontend="brainalign.models.hyperparams",
        min_samples=1, options=dict(OPTIONS),
        description=f"MetricGAN+ speech enhancement, VoiceBank (HF {HF_REPO}); LSTM final "
                    "cell states, linear1 post-LeakyReLU, linear2 pre-sigmoid (time means)",
    )
]
