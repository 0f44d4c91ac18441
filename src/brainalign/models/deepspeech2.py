"""DeepSpeech2 (deepspeech.pytorch V3.0, LibriSpeech), as Tuckute et al. 2023 tapped it.

**Sources** (DS2-fork = gretatuckute/deepspeech.pytorch @7be3c725bddae454e453b4e6fe1d45e871b5848a,
from SeanNaren e544e34):

- weights: release V3.0 ``librispeech_pretrained_v3.ckpt`` (URL in
  ``tests/pretrained_smoke_test.py``), a PyTorch Lightning checkpoint
  (``DeepSpeech.load_from_checkpoint``, ``deepspeech_pytorch/utils.py``; Lightning 1.1/1.2,
  torch 1.7: a zip container, read with mmap). Only ``state_dict`` and
  ``hyper_parameters`` are used. ``hyper_parameters`` = ``save_hyperparameters()`` of
  ``DeepSpeech.__init__`` (``labels``, ``model_cfg``, ``precision``, ``optim_cfg``, ``spect_cfg``):
  OmegaConf ``DictConfig`` objects of the ``deepspeech_pytorch.configs.train_config`` dataclasses
  holding ``deepspeech_pytorch.enums`` members (``RNNType.lstm``, whose value is the class
  ``torch.nn.LSTM``; ``SpectrogramWindow.hamming``). A plain ``weights_only`` load refuses them.
  They are read by the same restricted unpickler with an inert stand-in for exactly the globals
  such a pickle names (:data:`STAND_INS`: OmegaConf containers, nodes and metadata as OmegaConf
  2.0-2.3 pickle them, the dataclasses and enums, the ``typing`` / ``builtins`` objects used as
  type annotations, Lightning's callback keys and ``AttributeDict``); nothing of omegaconf,
  deepspeech_pytorch or Lightning is imported or run, and any other global is refused;
- architecture: ``deepspeech_pytorch/model.py``: ``MaskConv`` (a no-op for one clip) over
  Conv2d(1, 32, (41, 11), s (2, 2), p (20, 5)) -> BN2d -> Hardtanh(0, 20) -> Conv2d(32, 32,
  (21, 11), s (2, 1), p (10, 5)) -> BN2d -> Hardtanh(0, 20) (the fork's ``inplace=False``), the
  map flattened to (T, N, 32 * 41 = 1312), 5 ``BatchRNN`` (SequenceWise BN1d except on layer 0,
  bidirectional LSTM 1024, the two directions' outputs **summed**), head SequenceWise(BN1d,
  Linear 1024 -> 29, no bias) (loaded, not run: no tapped layer needs it). Widths come from the
  checkpoint (``model_cfg``; the conv width from the tensor shapes) and are checked against
  ``ModelSpec.config``;
- front end: ``loader/data_loader.py`` ``SpectrogramParser(spect_cfg, normalize=True)``:
  ``librosa.stft(n_fft = win_length = int(sr * window_size) = 320, hop = int(sr * window_stride)
  = 160, window='hamming')`` (periodic, centred, reflect-padded in the fork's librosa < 0.10) ->
  magnitude -> ``log1p`` -> global ``(S - mean) / std`` (torch's unbiased std) -> (1, 1, 161, T);
- layer taps: ``deepspeech_pytorch/inference.py`` ``SaveOutput``: Hardtanh outputs (1, C, F, T)
  squeezed to (C * F, T) channel-major and averaged over time (2592, 1312); an LSTM's ``--cell``
  is its final cell state ``c_n`` (2, 1, 1024) reshaped to [fwd@T-1 || bwd@0] (2048).

**Decisions and build options** (``extract.options.braindnn_deepspeech``; paper-models §1.2, §3.12):

- ``rnn_reduction``: ``final_state`` (default, ``c_n``) or ``time_mean`` (the LSTM module's own
  output sequence, [fwd || bwd] = 2048 wide, before the two directions are summed, averaged
  over time).
- ``librosa_frontend``: ``original`` (default; reflect padding) or ``librosa_0.11`` (zero
  padding, the default of ``librosa.stft`` since 0.10).
- Lightning 1.0 stored metric states in ``state_dict``; the four scalar keys ``wer.wer``,
  ``wer.n_tokens``, ``cer.cer`` and ``cer.n_chars`` are dropped if present (recorded in
  ``info()``); every other key must fit exactly.
- A silent clip (std 0) is left unscaled instead of dividing by zero (upstream: NaN).
- ``min_samples`` = 1: ``1 + n // 160`` >= 1 STFT frames and every conv keeps >= 1 frame.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from brainalign.errors import InputError
from brainalign.models.base import Runner, mean_bcft
from brainalign.models.frontends import librosa_legacy as lr
from brainalign.models.spec import BuildContext, ModelSpec
from brainalign.models.weights import (
    StandIn,
    check_config,
    expect_keys,
    load_strict,
    safe_load,
    weight_file,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

SAMPLE_RATE = 16_000
WEIGHTS_FILE = "librispeech_pretrained_v3.ckpt"
CONFIG = {"rnn_type": "lstm", "hidden_size": 1024, "hidden_layers": 5, "bidirectional": True,
          "conv_channels": 32, "n_labels": 29, "sample_rate": 16000, "window_size": 0.02,
          "window_stride": 0.01, "window": "hamming"}
"""The released model: ``BiDirectionalConfig`` and ``SpectConfig`` defaults, 29 labels."""

LAYERS = ("HardTanh_1", "HardTanh_2", "LSTM_1", "LSTM_2", "LSTM_3", "LSTM_4", "LSTM_5")
PAPER_KEYS = {
    "HardTanh_1": "Hardtanh(min_val=0, max_val=20)--0",
    "HardTanh_2": "Hardtanh(min_val=0, max_val=20)--1",
    "LSTM_1": "LSTM(1312, 1024, bidirectional=True)--0--cell",
    **{f"LSTM_{i}": f"LSTM(1024, 1024, bidirectional=True)--{i - 2}--cell" for i in range(2, 6)},
}
OPTIONS = ("rnn_reduction", lr.OPTION)
RNN_REDUCTIONS = ("final_state", "time_mean")
METRIC_KEYS = ("wer.wer", "wer.n_tokens", "cer.cer", "cer.n_chars")
N_FREQ_AFTER_CONV = 41
"""Frequency rows after the two convs for 161 STFT bins: (161 + 40 - 41) // 2 + 1 = 81, then
(81 + 20 - 21) // 2 + 1 = 41 (``rnn_input_size`` in model.py)."""


# --------------------------------------------------------------------------- stand-ins
class _Inert(StandIn):
    """An upstream object in ``hyper_parameters``: keeps its constructor args and state."""

    upstream = ""


class _InertMap(dict):
    """A dict-like upstream object (``AttributeDict``, ``defaultdict``): keeps its items."""

    upstream = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self._args = args

    def __setstate__(self, state: Any) -> None:
        self._state = state


def _inert(name: str, base: type = _Inert) -> type:
    return type(name.rsplit(".", 1)[1], (base,), {"upstream": name})


_OMEGACONF = ("omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig",
              "omegaconf.base.Metadata", "omegaconf.base.ContainerMetadata",
              *(f"omegaconf.nodes.{n}" for n in ("AnyNode", "StringNode", "IntegerNode",
                                                   "FloatNode", "BooleanNode", "EnumNode",
                                                   "BytesNode", "PathNode")))
_DEEPSPEECH = (
    *(f"deepspeech_pytorch.enums.{n}" for n in ("RNNType", "SpectrogramWindow", "DecoderType")),
    *(f"deepspeech_pytorch.configs.train_config.{n}" for n in (
        "SpectConfig", "AugmentationConfig", "DataConfig", "BiDirectionalConfig",
        "UniDirectionalConfig", "OptimConfig", "SGDConfig", "AdamConfig", "DeepSpeechConfig",
        "DeepSpeechTrainerConf", "GCSCheckpointConfig")),
    "deepspeech_pytorch.checkpoint.FileCheckpointHandler",
    "deepspeech_pytorch.checkpoint.GCSCheckpointHandler",
    "hydra_configs.pytorch_lightning.callbacks.ModelCheckpointConf",
    "hydra_configs.pytorch_lightning.trainer.TrainerConf",
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
)
_VALUES = (
    # RNNType's member values are torch classes; typing/builtins objects are type annotations
    # in OmegaConf metadata (``_operator.getitem`` builds e.g. ``Tuple[float, ...]``).
    "torch.nn.modules.rnn.LSTM", "torch.nn.modules.rnn.RNN", "torch.nn.modules.rnn.GRU",
    *(f"typing.{n}" for n in ("Any", "Dict", "List", "Tuple", "Optional", "Union")),
    *(f"builtins.{n}" for n in ("dict", "list", "tuple", "int", "float", "str", "bool",
                                "bytes", "Ellipsis")),
    "_operator.getitem",
)
_MAPS = ("pytorch_lightning.utilities.parsing.AttributeDict", "collections.defaultdict")

STAND_INS: dict[str, type] = {
    **{n: _inert(n) for n in (*_OMEGACONF, *_DEEPSPEECH, *_VALUES)},
    **{n: _inert(n, _InertMap) for n in _MAPS},
}
"""Every global a V3.0 Lightning checkpoint's ``hyper_parameters`` / ``callbacks`` may name,
mapped to an inert class (OmegaConf 2.0-2.3 pickling: containers pickle their ``__dict__``;
enum members reduce to ``Enum(value)``)."""

_RNN_NAMES = {"torch.nn.modules.rnn.LSTM": "lstm", "torch.nn.modules.rnn.RNN": "rnn",
              "torch.nn.modules.rnn.GRU": "gru"}


def plain(obj: Any) -> Any:
    """The plain Python value of an unpickled ``hyper_parameters`` entry (stand-ins unwrapped).

    DictConfig / ListConfig -> dict / list of their nodes' values; a value node -> its ``_val``;
    an enum member -> its member name (``RNNType(nn.LSTM)`` -> ``'lstm'``); a class -> its
    upstream name.
    """
    if isinstance(obj, type) and issubclass(obj, _Inert | _InertMap):
        return obj.upstream
    if isinstance(obj, _Inert):
        name = type(obj).upstream
        state = getattr(obj, "_state", None) or {}
        if name.startswith("omegaconf.nodes."):
            return plain(state.get("_val"))
        if name in ("omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig"):
            return plain(state.get("_content"))
        if name.startswith("deepspeech_pytorch.enums."):
            args = getattr(obj, "_args", ())
            value = args[0] if args else None
            if isinstance(value, type) and issubclass(value, _Inert):
                return _RNN_NAMES.get(value.upstream, value.upstream)
            return value
        return obj
    if isinstance(obj, Mapping):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    return obj


def object_type(obj: Any) -> str | None:
    """The dataclass a structured DictConfig was made from (its metadata's ``object_type``)."""
    meta = (getattr(obj, "_state", None) or {}).get("_metadata")
    found = (getattr(meta, "_state", None) or {}).get("object_type")
    return found.upstream if isinstance(found, type) and issubclass(found, _Inert) else None


# --------------------------------------------------------------------------- network
@functools.cache
def _modules() -> Any:
    from torch import nn

    class SequenceWise(nn.Module):
        """(T, N, H) -> module over (T * N, H) -> (T, N, H')."""

        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t, n = x.size(0), x.size(1)
            return self.module(x.reshape(t * n, -1)).view(t, n, -1)

    class MaskConv(nn.Module):
        """The conv stack (``seq_module``); the length mask is a no-op for one clip."""

        def __init__(self, seq_module: nn.Sequential) -> None:
            super().__init__()
            self.seq_module = seq_module

    class BatchRNN(nn.Module):
        """Optional SequenceWise BN1d -> (bi)LSTM; directions summed by the caller."""

        def __init__(self, input_size: int, hidden_size: int, batch_norm: bool) -> None:
            super().__init__()
            self.batch_norm = SequenceWise(nn.BatchNorm1d(input_size)) if batch_norm else None
            self.rnn = nn.LSTM(input_size=input_size, hidden_size=hidden_size,
                               bidirectional=True, bias=True)

    class DeepSpeech(nn.Module):
        """deepspeech_pytorch/model.py DeepSpeech (bidirectional), its state-dict names."""

        def __init__(self, hidden_size: int, hidden_layers: int, conv_channels: int,
                     n_labels: int) -> None:
            super().__init__()
            c = conv_channels
            self.conv = MaskConv(nn.Sequential(
                nn.Conv2d(1, c, kernel_size=(41, 11), stride=(2, 2), padding=(20, 5)),
                nn.BatchNorm2d(c),
                nn.Hardtanh(0, 20, inplace=False),
                nn.Conv2d(c, c, kernel_size=(21, 11), stride=(2, 1), padding=(10, 5)),
                nn.BatchNorm2d(c),
                nn.Hardtanh(0, 20, inplace=False),
            ))
            rnn_input = c * N_FREQ_AFTER_CONV
            self.rnns = nn.Sequential(
                BatchRNN(rnn_input, hidden_size, batch_norm=False),
                *(BatchRNN(hidden_size, hidden_size, batch_norm=True)
                  for _ in range(hidden_layers - 1)))
            self.fc = nn.Sequential(SequenceWise(nn.Sequential(
                nn.BatchNorm1d(hidden_size), nn.Linear(hidden_size, n_labels, bias=False))))

    return DeepSpeech


def build_network(config: Mapping[str, Any] = CONFIG) -> nn.Module:
    """The DeepSpeech2 network with the given widths (default: the released model's)."""
    return _modules()(int(config["hidden_size"]), int(config["hidden_layers"]),
                      int(config["conv_channels"]), int(config["n_labels"]))


def layer_keys(net: nn.Module) -> dict[str, str]:
    """Tuckute's hook names for our modules (str(module) + occurrence + ``--cell``)."""
    order = [net.conv.seq_module[2], net.conv.seq_module[5], *(b.rnn for b in net.rnns)]
    seen: dict[str, int] = {}
    keys = {}
    for layer, module in zip(LAYERS, order, strict=False):
        base = str(module)
        suffix = "--cell" if layer.startswith("LSTM") else ""
        keys[layer] = f"{base}--{seen.get(base, 0)}{suffix}"
        seen[base] = seen.get(base, 0) + 1
    return keys


def read_config(ckpt: Mapping[str, Any], state: Mapping[str, Any], path: Any,
                model: str) -> dict[str, Any]:
    """Hyperparameters from ``hyper_parameters`` (model_cfg, spect_cfg, labels) and shapes."""
    hp = ckpt["hyper_parameters"]
    expect_keys(hp, ("labels", "model_cfg", "spect_cfg"), path, "Lightning hyper_parameters")
    model_cfg, spect_cfg = plain(hp["model_cfg"]), plain(hp["spect_cfg"])
    for name, cfg, keys in (("model_cfg", model_cfg, ("rnn_type", "hidden_size",
                                                      "hidden_layers")),
                            ("spect_cfg", spect_cfg, ("sample_rate", "window_size",
                                                      "window_stride", "window"))):
        if not isinstance(cfg, Mapping) or any(k not in cfg for k in keys):
            raise InputError(path, f"hyper_parameters[{name!r}] lacks {list(keys)} "
                             f"(got {cfg!r:.200})")
    conv = state.get("conv.seq_module.0.weight")
    return {
        "rnn_type": model_cfg["rnn_type"], "hidden_size": model_cfg["hidden_size"],
        "hidden_layers": model_cfg["hidden_layers"],
        "bidirectional": "rnns.0.rnn.weight_ih_l0_reverse" in state,
        "conv_channels": int(conv.shape[0]) if hasattr(conv, "shape") else None,
        "n_labels": len(plain(hp["labels"])),
        **{k: spect_cfg[k] for k in ("sample_rate", "window_size", "window_stride", "window")},
    }


class DeepSpeechRunner(Runner):
    """Normalised log spectrogram -> conv stack -> 5 bidirectional LSTMs."""

    def __init__(self, spec: ModelSpec, ctx: BuildContext, net: nn.Module | None = None) -> None:
        """Load the checkpoint, or wrap ``net`` (an already built network of ``spec.config``,
        e.g. the real-size architecture on the meta device for shape checks)."""
        super().__init__(spec, ctx.device)
        opts = dict(ctx.options)
        lr.check_options(opts, OPTIONS, spec.name)
        self.rnn_reduction = lr.option_choice(opts, "rnn_reduction", RNN_REDUCTIONS, spec.name)
        self.frontend = lr.behaviour(opts, spec.name)
        self.weights_path = None
        self.dropped_keys: list[str] = []
        self.model_cfg_type = self.lightning_version = None
        if net is None:
            path = self.weights_path = weight_file(spec, ctx, WEIGHTS_FILE)
            net = self._load(spec, ctx, path)
        else:
            path = spec.name
            self.config = dict(spec.config)
        self.net = net.to(ctx.device).eval()
        self.n_fft = int(self.config["sample_rate"] * self.config["window_size"])
        self.hop = int(self.config["sample_rate"] * self.config["window_stride"])
        if self.config["sample_rate"] != self.sample_rate:
            raise InputError(path, f"spect_cfg.sample_rate {self.config['sample_rate']} is not "
                             f"the spec's {self.sample_rate}")

    def _load(self, spec: ModelSpec, ctx: BuildContext, path: Any) -> nn.Module:
        import torch

        ckpt = safe_load(path, stand_ins=STAND_INS)
        expect_keys(ckpt, ("state_dict", "hyper_parameters"), path, "Lightning checkpoint")
        state = dict(ckpt["state_dict"])
        self.dropped_keys = [k for k in METRIC_KEYS
                             if k in state and getattr(state[k], "numel", lambda: 2)() == 1]
        for k in self.dropped_keys:
            del state[k]
        self.config = read_config(ckpt, state, path, spec.name)
        self.model_cfg_type = object_type(ckpt["hyper_parameters"]["model_cfg"])
        self.lightning_version = ckpt.get("pytorch-lightning_version")
        check_config(self.config, spec.config, path=path, model=spec.name)
        with torch.device("meta"):
            net = build_network(self.config)
        load_strict(net, state, path=path, model=spec.name, assign=True)
        return net

    def spectrogram(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> (B, 1, 161, T) log1p magnitude, normalised per clip."""
        import torch

        window = str(self.config["window"])
        spec = lr.stft(audio.float(), self.n_fft, self.hop, self.n_fft, window, True,
                       self.frontend.pad_mode).abs()
        spec = torch.log1p(spec)
        flat = spec.flatten(1)
        mean = flat.mean(dim=1)[:, None, None]
        std = flat.std(dim=1)[:, None, None]
        std = torch.where(std > 0, std, torch.ones_like(std))
        return ((spec - mean) / std).unsqueeze(1)

    def forward(self, audio: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        net = self.net
        wanted = set(layers)
        last = max(LAYERS.index(k) for k in layers)
        x = self.spectrogram(audio.to(self.device))
        out: dict[str, torch.Tensor] = {}
        for i, module in enumerate(net.conv.seq_module):
            x = module(x)
            if i in (2, 5):
                key = "HardTanh_1" if i == 2 else "HardTanh_2"
                if key in wanted:
                    out[key] = mean_bcft(x)
        b, c, f, t = x.shape
        x = x.reshape(b, c * f, t).permute(2, 0, 1).contiguous()  # (T, N, C*F)
        for k, brnn in enumerate(net.rnns):
            if LAYERS.index(f"LSTM_{k + 1}") > last:
                break
            if brnn.batch_norm is not None:
                x = brnn.batch_norm(x)
            seq, (_h_n, c_n) = brnn.rnn(x)
            key = f"LSTM_{k + 1}"
            if key in wanted:
                out[key] = (c_n.transpose(0, 1).reshape(b, -1)
                            if self.rnn_reduction == "final_state" else seq.mean(dim=0))
            x = seq.view(t, b, 2, -1).sum(dim=2)
        return out

    def info(self) -> dict[str, Any]:
        return {
            "config": dict(self.config),
            "model_cfg_type": self.model_cfg_type,
            "pytorch_lightning_version": self.lightning_version,
            "dropped_metric_keys": list(self.dropped_keys),
            "paper_keys_from_modules": layer_keys(self.net),
            "rnn_reduction": self.rnn_reduction,
            "librosa_frontend": self.frontend.name,
            "frontend": f"|stft| (n_fft {self.n_fft}, hop {self.hop}, periodic "
                        f"{self.config['window']}, pad {self.frontend.pad_mode}) -> log1p -> "
                        "(S - mean) / std (unbiased), per clip",
            "weights_file": self.weights_path.name if self.weights_path else None,
        }


def build(spec: ModelSpec, ctx: BuildContext) -> Runner:
    """Options: ``rnn_reduction``, ``librosa_frontend``."""
    return DeepSpeechRunner(spec, ctx)


SPECS = [
    ModelSpec(
        name="braindnn_deepspeech", label="Deepspeech", family="Others", training="supervised",
        sample_rate=SAMPLE_RATE, layers=LAYERS, paper_keys=PAPER_KEYS,
        build="brainalign.models.deepspeech2:build", fetched=True, config=dict(CONFIG),
        frontend="brainalign.models.frontends.librosa_legacy", min_samples=1,
        options={"rnn_reduction": "final_state", lr.OPTION: "original"},
        description="DeepSpeech2 librispeech_pretrained_v3 (SeanNaren/deepspeech.pytorch V3.0)",
    )
]
