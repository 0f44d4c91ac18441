"""EnCodecMAE (Pepino et al.): masked autoencoders predicting EnCodec tokens. 10 paper models.

Our own port of the extraction path of the "v2" EnCodecMAE, loading the v2 hub files strictly,
plus the loader of the 100 pretraining checkpoints behind the paper's Fig. 5.

**Sources** (read for facts; no code copied):

- habla-liaa/encodecmae @2dd6759c595bf20c9d836914fef5cde9a6386843 ("ECM"): ``hub.py``
  (the v2 ``.pt`` = {``state_dict``, ``config`` (a gin string), ``imports``}), ``models/mae.py``
  (``extract_activations``, ``extract_features_from_array``: 4-s chunks, chunks of <= 2048
  samples skipped, padding mask from ``wav_lens // hop_length``), ``models/transformers``
  (ResiDual ``TransformerLayer``, ``TransformerEncoder`` with one FFN object shared by all
  layers, channel-interleaved ``MultiHeadAttention`` without biases,
  ``SinusoidalPositionalEmbeddings`` with a learnable scale), ``models/masks`` (``PatchoutMask``
  adds the PE; masking is skipped at inference), ``models/encoders`` (``WavEncoder``,
  ``EncodecEncoder``), ``models/targets``/``heads`` (training-only parts of the state dict),
  ``tasks/features`` (``MelspectrogramProcessor``, ``SpectrogramProcessor`` and their defaults),
  ``configs/models/encodecmae.gin``, ``configs/features/{mel,wav_only,spec,st}.gin``,
  ``scripts/run_pretraining.sh`` (small = 5 layers, large = 20 layers of 1024 with 12 heads).
- encodec 0.1.1 (PyPI, the BDN pin): ``modules/seanet.py``, ``modules/conv.py``,
  ``modules/lstm.py``, ``model.py`` (the 24 kHz encoder: causal SEANet, weight norm, reflect
  padding, ratios 8-5-4-2, 2-layer LSTM; weights ``encodec_24khz-d7cc33bc.th``).
- mrpep/braindnn @1222378 ``src/run_dynamic_analysis.py`` (Fig. 5: ``…step=N.ckpt`` files of
  HF ``lpepino/encodecmae-pretrained``, step after the last ``=``, strict load into the
  mel256-ec-base model) and mrpep/tp-picml ``src/extract_activations.py`` (time mean of every
  layer of ``extract_features_from_file(layer='all')``).
- ``shared/docs/paper-models.md`` section 3.1 (keys, shapes, counts, open questions).

**Checkpoint.** ``data/weights/<model>/<model>.pt`` (HF ``lpepino/encodecmae-v2``) is read with
``torch.load(weights_only=True)`` after its sha256 check; no extra class is allowed. Its gin
string is parsed by :func:`parse_gin`, a small parser of gin's syntax (macros, ``scope/``
selectors, indented blocks, ``+=``, continuations, ``@refs``, ``%macros``); it never executes or
imports anything. :func:`read_config` follows the bindings from ``EncodecMAE`` (visible encoder,
attention, wav encoder, its post-net, the processors) to an :class:`EncoderConfig`, which is
checked against the spec's ``config``. The gin also decides the front end: ``mel`` (Identity
encoder + ``MelspectrogramProcessor``), ``encodec`` (``EncodecEncoder``) or ``spec``
(``SpectrogramProcessor``), its settings, the sample rate (``WavEncoder.fs``), the hop used for
the padding mask and the chunk length (``ReadAudioProcessor.max_length``). A processor
``LoadNumpyProcessor`` (self-training targets, ``configs/features/st.gin``) is skipped: it reads
targets, not audio.

**Strict loading.** The file holds the whole LightningModule. Extraction needs only
``wav_encoder.*``, ``masker.positional_encoder.scale`` and ``visible_encoder.*`` without
``visible_encoder.post_net``. Every key under the known training-only prefixes
(:data:`IGNORED_PREFIXES`: ``visible_encoder.post_net.``, ``decoder.``, ``head.``,
``target_encoder.``) is counted and dropped; every other key must be one the extraction model
has, with its shape, and every key it has must be present (one error naming the key, the file
and the model). The FFN is one module shared by all layers (as upstream); the file repeats its
tensors under each layer's key: the copies are checked equal (an error names the first that is
not) and one is used. The large model's head count is checked against ``wq.weight`` (12 heads
of 85 channels: [1020, 1024]). The model is built on the ``meta`` device and adopts the
memory-mapped tensors (``assign=True``).

**Architecture.** ``x = post_net(front_end(chunk)) + scale * PE``; ResiDual blocks with
(x0, x1) = (x, x): ``a = Att(x0); x0 = norm1(x0 + a); x1 += a; f = FF(x0); x0 = norm2(x0 + f);
x1 += f``; FF = Linear -> ReLU -> Linear. Attention: no biases, scale head_dim^-0.5, head h
takes channels h, h+H, ... (interleaved), masked keys get -1e9. Layer i = x0 after block i; the
last layer is ``x0 + final_norm(x1)`` (option ``postnorm_last_activation``).

**Front ends.** ``mel``: ``frontends.kaldi.fbank`` with the gin's settings (equal to the
``ENCODECMAE_MEL256`` preset: 256 bins, 26.56/13.28 ms, hanning, htk_compat; the gin's dither
is not forwarded upstream), then ``(mel + 6.12) / 4.82``: 2 s -> 149 frames. ``encodec``: our
port of encodec 0.1.1's causal ``SEANetEncoder`` (keys ``wav_encoder.encoder.model.model.*``,
weight norm kept as ``weight_g``/``weight_v``) on the raw waveform, times
``EncodecEncoder.scale``: 2 s -> 150 frames. The checkpoint's copy of the frozen encoder is
compared at load time with the encoder of ``encodec_24khz-d7cc33bc.th`` (pinned in the fetch
registry for ec-ec-base): any difference is an error. ``spec``: torchaudio's Kaldi
``spectrogram`` with the settings of the checkpoint's own gin (dither must be 0), then the gin's
``norm_stats``; the post-net input dim is read from the checkpoint and must equal the number of
spectrogram bins; the runner adopts ``WavEncoder.fs`` as its sample rate.

**Extraction** (as ``extract_features_from_array``): the clip is cut in chunks of
``fs * max_length`` samples (96000 = 4 s; a 2-s stimulus is one chunk), chunks of <= 2048
samples are skipped (``min_samples`` = 2049), the frames of all chunks are concatenated and each
layer is averaged over them (the TPP time mean). Upstream's padding mask is reproduced: keys
``t >= min(len(clip), chunk) // hop_length`` are masked (the comprehension in
``extract_features_from_array`` uses the whole clip's length, capped at one chunk, for every
chunk). It masks nothing for the 2-s stimuli; it masks the last frame of e.g. a 0.5-s clip with
the EnCodec front end (38 frames, 37 "valid"). The clips of a batch are processed together:
nothing depends on the batch (no batch statistics, equal lengths, per-clip front ends).

**Options** (``extract.options.<model>``):

- ``postnorm_last_activation`` (bool, default true): the last layer is ``x0 +
  final_norm(x1)`` as upstream's default (paper-models 1.2); false gives x0 (the "nopn"
  teachers' targets).
- ``key_padding_mask`` (``upstream`` | ``none``, default ``upstream``): upstream's padding mask
  as described above, or none.

**Pretraining checkpoints** (Fig. 5): :func:`load_pretraining_checkpoint` reads a Lightning
``.ckpt`` (``state_dict`` plus Lightning's bookkeeping keys; ``weights_only=True`` with nothing
extra allowed) and loads its ``state_dict`` by the same rules into the mel256-ec-base
extraction model, whose configuration comes from that spec (the ``.ckpt`` has no gin).
:func:`checkpoint_step` parses the step after the last ``=`` of the stem;
:func:`sort_checkpoints` orders files by it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brainalign.errors import InputError
from brainalign.models.base import Runner
from brainalign.models.frontends.kaldi import ENCODECMAE_MEL256, FbankPreset
from brainalign.models.spec import BuildContext, ModelSpec
from brainalign.models.weights import (
    check_config,
    expect_keys,
    fetched_files,
    load_strict,
    safe_load,
    sha256_file,
    weight_file,
)

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 24_000
HF_REPO = "lpepino/encodecmae-v2"
PRETRAIN_REPO = "lpepino/encodecmae-pretrained"
PRETRAIN_DIR = "full_exps/base_models/mel256-ec-base/pretrain_checkpoints/finegrained"
PRETRAIN_MODEL = "mel256-ec-base"
PRETRAIN_STEPS = tuple(range(0, 100_000, 1000))
"""The 100 Fig. 5 checkpoints (BDN notebooks/results.ipynb: steps 0, 1000, ..., 99000)."""
PRETRAIN_LAYERS = ("1", "3", "5", "7", "9")
"""The layer keys the Fig. 5 cells plot (0-based indices)."""

ENCODEC_FILE = "encodec_24khz-d7cc33bc.th"
MIN_CHUNK = 2048
"""``extract_features_from_array(min_length=2048)``: chunks of at most this many samples are
skipped."""
MIN_SAMPLES = MIN_CHUNK + 1
MASK_VALUE = -1e9
LN_EPS = 1e-5

NEEDED_PREFIXES = ("wav_encoder.", "masker.positional_encoder.", "visible_encoder.")
IGNORED_PREFIXES = ("visible_encoder.post_net.", "decoder.", "head.", "target_encoder.")
"""State-dict prefixes of the LightningModule that extraction does not use: the decoder
projection, the decoder, the token head and the EnCodec target encoder (quantizer codebooks and,
for mel/spec models, a second copy of the EnCodec encoder)."""

OPTIONS = {"postnorm_last_activation": True, "key_padding_mask": "upstream"}
PADDING_MASKS = ("upstream", "none")

# SEANet encoder of encodec 0.1.1's 24 kHz model (model.py: channels 1, weight_norm, causal).
SEANET_FILTERS = 32
SEANET_DIM = 128
SEANET_RATIOS = (2, 4, 5, 8)  # the encoder uses ratios [8, 5, 4, 2] reversed
SEANET_HOP = math.prod(SEANET_RATIOS)
SEANET_LSTM_LAYERS = 2



# --------------------------------------------------------------------------- gin parsing
@dataclass(frozen=True)
class GinRef:
    """``@scope/name`` (``call``: ``@name()``, evaluated)."""

    name: str
    scope: str = ""
    call: bool = False


@dataclass(frozen=True)
class GinMacro:
    """``%NAME``."""

    name: str


_MISSING: Any = object()
_SELECTOR = r"[A-Za-z_$][\w$.]*(?:/[A-Za-z_$][\w$.]*)*"
_BINDING = re.compile(rf"({_SELECTOR})\s*(\+?=)\s*(.*)", re.S)
_BLOCK = re.compile(rf"({_SELECTOR})\s*:")
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def names_match(a: str, b: str) -> bool:
    """Whether two configurable names denote the same one (gin allows module suffixes)."""
    return a == b or a.endswith("." + b) or b.endswith("." + a)


class _ValueParser:
    """A gin value: Python literals plus ``@refs`` and ``%macros``; nothing is evaluated."""

    def __init__(self, text: str, where: str) -> None:
        self.s, self.i, self.where = text, 0, where

    def fail(self, what: str) -> InputError:
        return InputError(self.where, f"gin syntax: {what} at {self.s[self.i:self.i + 30]!r}")

    def skip(self) -> None:
        while self.i < len(self.s) and self.s[self.i].isspace():
            self.i += 1

    def parse(self) -> Any:
        value = self.value()
        self.skip()
        if self.i != len(self.s):
            raise self.fail("unexpected text after the value")
        return value

    def value(self) -> Any:
        self.skip()
        if self.i >= len(self.s):
            raise self.fail("missing value")
        c = self.s[self.i]
        if c in "[(":
            return self.sequence()
        if c == "{":
            return self.mapping()
        if c in "'\"":
            return self.string()
        if c in "@%":
            self.i += 1
            m = re.compile(_SELECTOR).match(self.s, self.i)
            if not m:
                raise self.fail(f"bad name after {c!r}")
            self.i = m.end()
            name = m.group(0)
            if c == "%":
                return GinMacro(name)
            call = self.s.startswith("()", self.i)
            if call:
                self.i += 2
            scope, _, base = name.rpartition("/")
            return GinRef(base, scope, call)
        m = _NUMBER.match(self.s, self.i)
        if m:
            self.i = m.end()
            text = m.group(0)
            return float(text) if any(ch in text for ch in ".eE") else int(text)
        for word, val in (("True", True), ("False", False), ("None", None)):
            if self.s.startswith(word, self.i) and not self.s[self.i + len(word):][:1].isalnum():
                self.i += len(word)
                return val
        raise self.fail("unsupported value")

    def string(self) -> str:
        quote, out = self.s[self.i], []
        self.i += 1
        escapes = {"n": "\n", "t": "\t", "\\": "\\", "'": "'", '"': '"'}
        while self.i < len(self.s):
            c = self.s[self.i]
            if c == "\\" and self.i + 1 < len(self.s):
                out.append(escapes.get(self.s[self.i + 1], "\\" + self.s[self.i + 1]))
                self.i += 2
                continue
            self.i += 1
            if c == quote:
                return "".join(out)
            out.append(c)
        raise self.fail("unterminated string")

    def items(self, close: str) -> tuple[list[Any], bool]:
        items, trailing = [], False
        while True:
            self.skip()
            if self.s.startswith(close, self.i):
                self.i += 1
                return items, trailing
            items.append(self.value())
            self.skip()
            trailing = self.s.startswith(",", self.i)
            if trailing:
                self.i += 1
            elif not self.s.startswith(close, self.i):
                raise self.fail(f"expected ',' or {close!r}")

    def sequence(self) -> Any:
        opening = self.s[self.i]
        self.i += 1
        items, trailing = self.items("]" if opening == "[" else ")")
        if opening == "[":
            return items
        return items[0] if len(items) == 1 and not trailing else tuple(items)

    def mapping(self) -> dict[Any, Any]:
        self.i += 1
        out: dict[Any, Any] = {}
        while True:
            self.skip()
            if self.s.startswith("}", self.i):
                self.i += 1
                return out
            key = self.value()
            self.skip()
            if not self.s.startswith(":", self.i):
                raise self.fail("expected ':'")
            self.i += 1
            out[key] = self.value()
            self.skip()
            if self.s.startswith(",", self.i):
                self.i += 1
            elif not self.s.startswith("}", self.i):
                raise self.fail("expected ',' or '}'")


def _statements(text: str) -> list[tuple[int, int, str]]:
    """Split gin text into (line, indent, statement): comments dropped, brackets and ``\\``
    continuations joined."""
    out: list[tuple[int, int, str]] = []
    buf: list[str] = []
    depth, quote, line, start, indent, lead, at_start = 0, "", 1, 1, 0, 0, True
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if quote:
            buf.append(c)
            if c == "\\" and i + 1 < n:
                buf.append(text[i + 1])
                i += 1
            elif c == quote:
                quote = ""
            i += 1
            continue
        if c == "#":
            while i < n and text[i] != "\n":
                i += 1
            continue
        if c == "\\" and text[i + 1:i + 2] == "\n":
            buf.append(" ")
            line, i = line + 1, i + 2
            continue
        if c == "\n":
            line, lead, at_start = line + 1, 0, True
            if depth == 0 and buf:
                out.append((start, indent, "".join(buf).strip()))
                buf = []
            elif buf:
                buf.append(" ")
            i += 1
            continue
        if c in " \t":
            if at_start:
                lead += 4 if c == "\t" else 1
            if buf:
                buf.append(c)
            i += 1
            continue
        at_start = False
        if not buf:
            start, indent = line, lead
        if c in "'\"":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        buf.append(c)
        i += 1
    if buf:
        out.append((start, indent, "".join(buf).strip()))
    return out


@dataclass
class GinConfig:
    """Parsed gin bindings (in file order; the last binding of a key wins, as in gin)."""

    macros: dict[str, Any]
    bindings: list[tuple[str, str, str, Any]]  # (scope, selector, parameter, value)
    where: str = "gin config"

    def resolve(self, value: Any, _seen: tuple[str, ...] = ()) -> Any:
        """Replace ``%MACRO`` references (recursively) by their values."""
        if isinstance(value, GinMacro):
            name = value.name.rpartition("/")[2]
            if name in _seen or name not in self.macros:
                raise InputError(self.where, f"gin macro %{name} is "
                                 f"{'circular' if name in _seen else 'not defined'}")
            return self.resolve(self.macros[name], (*_seen, name))
        if isinstance(value, list):
            return [self.resolve(v, _seen) for v in value]
        if isinstance(value, tuple):
            return tuple(self.resolve(v, _seen) for v in value)
        if isinstance(value, dict):
            return {self.resolve(k, _seen): self.resolve(v, _seen) for k, v in value.items()}
        return value

    def get(self, name: str, param: str, scope: str = "", default: Any = _MISSING) -> Any:
        """The value bound to ``name.param`` under ``scope`` (falling back to unscoped)."""
        for want in ([scope, ""] if scope else [""]):
            for s, sel, p, v in reversed(self.bindings):
                if s == want and p == param and names_match(sel, name):
                    return self.resolve(v)
        if default is _MISSING:
            at = f"{scope}/" if scope else ""
            raise InputError(self.where, f"gin binding {at}{name}.{param} not found")
        return default

    def params(self, name: str, scope: str = "") -> set[str]:
        """The parameters bound for ``name`` (under ``scope`` or unscoped)."""
        return {p for s, sel, p, _v in self.bindings
                if s in (scope, "") and names_match(sel, name)}


def parse_gin(text: str, where: str = "gin config") -> GinConfig:
    """Parse a gin config string (never executed: values are literals, refs and macros)."""
    if not isinstance(text, str):
        raise InputError(where, f"expected a gin config string, got {type(text).__name__}")
    macros: dict[str, Any] = {}
    bindings: list[tuple[str, str, str, Any]] = []
    block = ""
    for line, indent, stmt in _statements(text):
        at = f"{where} line {line}"
        if indent == 0:
            block = ""
        if re.match(r"(import|from)\s", stmt):
            continue
        if re.match(r"include\s", stmt):
            raise InputError(at, "gin 'include' is not supported in a checkpoint's config")
        m = _BINDING.fullmatch(stmt)
        if m:
            key, op, text_value = m.groups()
            if indent > 0:
                if not block:
                    raise InputError(at, f"indented binding {key!r} outside a block")
                key = f"{block}.{key}"
            value = _ValueParser(text_value, at).parse()
            scope, _, rest = key.rpartition("/")
            if "." not in rest:
                if op == "+=" and rest in macros:
                    value = _append(macros[rest], value, at)
                macros[rest] = value
                continue
            selector, _, param = rest.rpartition(".")
            if op == "+=":
                previous = next((v for s, sel, p, v in reversed(bindings)
                                 if (s, sel, p) == (scope, selector, param)), None)
                if previous is not None:
                    value = _append(previous, value, at)
            bindings.append((scope, selector, param, value))
            continue
        m = _BLOCK.fullmatch(stmt)
        if m and indent == 0:
            block = m.group(1)
            continue
        raise InputError(at, f"gin syntax: cannot read {stmt[:60]!r}")
    return GinConfig(macros, bindings, where)


def _append(previous: Any, value: Any, where: str) -> list[Any]:
    if not isinstance(previous, list) or not isinstance(value, list):
        raise InputError(where, "gin '+=' needs lists on both sides")
    return previous + value


# --------------------------------------------------------------------------- configuration
MAE = "encodecmae.models.EncodecMAE"
TRANSFORMER = "encodecmae.models.transformers.TransformerEncoder"
ATTENTION = "encodecmae.models.transformers.MultiHeadAttention"
PATCHOUT = "encodecmae.models.masks.PatchoutMask"
SINUSOIDAL = "encodecmae.models.transformers.SinusoidalPositionalEmbeddings"
WAV_ENCODER = "encodecmae.models.encoders.WavEncoder"
ENCODEC_ENCODER = "encodecmae.models.encoders.EncodecEncoder"
SEQUENTIAL = "encodecmae.tasks.features.SequentialProcessor"
READ_AUDIO = "encodecmae.tasks.features.ReadAudioProcessor"
MEL = "encodecmae.tasks.features.MelspectrogramProcessor"
SPECTROGRAM = "encodecmae.tasks.features.SpectrogramProcessor"
LOAD_NUMPY = "encodecmae.tasks.features.LoadNumpyProcessor"
IDENTITY = "torch.nn.Identity"
LINEAR = "torch.nn.Linear"

MEL_DEFAULTS: dict[str, Any] = {
    "frame_length": 25, "frame_shift": 10, "high_freq": 0, "htk_compat": False, "low_freq": 20,
    "num_mel_bins": 23, "sample_frequency": 16000, "window_type": "povey", "use_energy": False,
}
"""``MelspectrogramProcessor``'s defaults (its ``dither`` is accepted but not forwarded)."""
SPEC_DEFAULTS: dict[str, Any] = {
    "frame_length": 25, "frame_shift": 10, "sample_frequency": 16000, "window_type": "povey",
    "dither": 0.0,
}
"""``SpectrogramProcessor``'s defaults (all forwarded to ``kaldi.spectrogram``)."""


@dataclass(frozen=True)
class EncoderConfig:
    """What builds and feeds the extraction model (from the gin string or a spec's config)."""

    model_dim: int
    num_layers: int
    num_heads: int
    head_dim: int
    ff_dim: int
    frontend: str
    feature_dim: int
    sample_rate: int = SAMPLE_RATE
    chunk_samples: int = 4 * SAMPLE_RATE
    hop_length: int = SEANET_HOP
    att_scale: float | None = None
    encodec_scale: float = 1.0
    features: tuple[tuple[str, Any], ...] = ()
    norm_stats: tuple[float, float] = (0.0, 1.0)

    def values(self) -> dict[str, Any]:
        """Flat values (what ``ModelSpec.config`` states and provenance records)."""
        out: dict[str, Any] = {
            "model_dim": self.model_dim, "num_layers": self.num_layers,
            "num_heads": self.num_heads, "head_dim": self.head_dim, "ff_dim": self.ff_dim,
            "frontend": self.frontend, "feature_dim": self.feature_dim,
            "sample_rate": self.sample_rate, "chunk_samples": self.chunk_samples,
            "hop_length": self.hop_length,
        }
        if self.att_scale is not None:
            out["att_scale"] = self.att_scale
        if self.frontend == "encodec":
            out["encodec_scale"] = self.encodec_scale
        else:
            prefix = "fbank_" if self.frontend == "mel" else "spectrogram_"
            out.update({prefix + k: v for k, v in self.features})
            out["norm_mean"], out["norm_std"] = self.norm_stats
        return out

    @classmethod
    def from_values(cls, values: Mapping[str, Any], where: str = "config") -> EncoderConfig:
        """Inverse of :meth:`values` (a spec's ``config``)."""
        try:
            frontend = values["frontend"]
            prefix = "fbank_" if frontend == "mel" else "spectrogram_"
            features = tuple((k[len(prefix):], v) for k, v in values.items()
                             if k.startswith(prefix))
            return cls(
                model_dim=int(values["model_dim"]), num_layers=int(values["num_layers"]),
                num_heads=int(values["num_heads"]), head_dim=int(values["head_dim"]),
                ff_dim=int(values["ff_dim"]), frontend=frontend,
                feature_dim=int(values["feature_dim"]),
                sample_rate=int(values.get("sample_rate", SAMPLE_RATE)),
                chunk_samples=int(values.get("chunk_samples", 4 * SAMPLE_RATE)),
                hop_length=int(values.get("hop_length", SEANET_HOP)),
                att_scale=values.get("att_scale"),
                encodec_scale=float(values.get("encodec_scale", 1.0)),
                features=features if frontend != "encodec" else (),
                norm_stats=(float(values.get("norm_mean", 0.0)),
                            float(values.get("norm_std", 1.0))),
            )
        except KeyError as exc:
            raise InputError(where, f"incomplete EnCodecMAE config: no {exc}") from None

    @property
    def inner_dim(self) -> int:
        """Attention width H * head_dim (1020 for the large model)."""
        return self.num_heads * self.head_dim

    def fbank_preset(self) -> FbankPreset:
        """The Kaldi fbank settings of a mel front end."""
        mean, std = self.norm_stats
        return FbankPreset(**dict(self.features), mean=mean, std=std,
                           source="the checkpoint's gin config (MelspectrogramProcessor)")

    def window_samples(self) -> int:
        """Samples in one analysis window of a mel/spec front end (0 for encodec)."""
        if self.frontend == "encodec":
            return 0
        f = dict(self.features)
        return int(f["sample_frequency"] * f["frame_length"] * 0.001)

    def n_frames(self, n_samples: int) -> int:
        """Frames of one chunk of ``n_samples``."""
        if self.frontend == "encodec":
            for ratio in SEANET_RATIOS:
                n_samples = -(-n_samples // ratio)
            return n_samples
        f = dict(self.features)
        shift = int(f["sample_frequency"] * f["frame_shift"] * 0.001)
        window = self.window_samples()
        return 0 if n_samples < window else 1 + (n_samples - window) // shift


def _need_default(gin: GinConfig, name: str, scope: str, params: Mapping[str, Any]) -> None:
    """Refuse bindings that would change the architecture away from what we port."""
    for param, default in params.items():
        value = gin.get(name, param, scope, default)
        if value != default:
            raise InputError(gin.where, f"gin binds {name}.{param} = {value!r}; only "
                             f"{default!r} (upstream's default) is supported")


def _ref(gin: GinConfig, name: str, param: str, scope: str = "", kind: str = "") -> GinRef:
    value = gin.get(name, param, scope)
    if not isinstance(value, GinRef) or (kind and not names_match(value.name, kind)):
        raise InputError(gin.where, f"gin binding {name}.{param} = {value!r}: expected "
                         f"@{kind or 'a configurable'}")
    return value


def read_config(gin: GinConfig) -> tuple[EncoderConfig, list[str]]:
    """Follow the gin bindings from ``EncodecMAE`` to the extraction model's configuration.

    Returns the config and notes for provenance. Front-end settings take the processors'
    defaults where the gin binds nothing (as gin would).
    """
    notes: list[str] = []
    venc = _ref(gin, MAE, "visible_encoder", kind=TRANSFORMER)
    s = venc.scope
    dim = int(gin.get(TRANSFORMER, "model_dim", s))
    layers = int(gin.get(TRANSFORMER, "num_layers", s))
    ff_dim = int(gin.get(TRANSFORMER, "ff_dim", s, 4096))
    _need_default(gin, TRANSFORMER, s, {"ff_layer": None, "norm_type": "ResiDual",
                                        "cross_attention_layer": None, "init_values": None,
                                        "positional_encoder": None, "pre_net": None})
    norm = gin.get(TRANSFORMER, "norm_layer", s, None)
    if norm is not None and not (isinstance(norm, GinRef) and names_match(norm.name,
                                                                          "torch.nn.LayerNorm")):
        raise InputError(gin.where, f"gin binds {TRANSFORMER}.norm_layer = {norm!r}")
    att = _ref(gin, TRANSFORMER, "attention_layer", s, kind=ATTENTION)
    heads = int(gin.get(ATTENTION, "num_heads", att.scope))
    att_dim = int(gin.get(ATTENTION, "model_dim", att.scope))
    if att_dim != dim:
        raise InputError(gin.where, f"attention model_dim {att_dim} != encoder model_dim {dim}")
    head_dim = gin.get(ATTENTION, "qk_proj_dim", att.scope, None) or dim // heads
    v_dim = gin.get(ATTENTION, "v_proj_dim", att.scope, None) or head_dim
    if v_dim != head_dim:
        raise InputError(gin.where, f"v_proj_dim {v_dim} != qk_proj_dim {head_dim}: unsupported")
    _need_default(gin, ATTENTION, att.scope, {"q_bias": False, "k_bias": False,
                                              "v_bias": False, "out_bias": False})
    att_scale = gin.get(ATTENTION, "att_scale", att.scope, None)

    masker = _ref(gin, MAE, "masker", kind=PATCHOUT)
    _ref(gin, PATCHOUT, "positional_encoder", masker.scope, kind=SINUSOIDAL)

    wav = _ref(gin, MAE, "wav_encoder", kind=WAV_ENCODER)
    ws = wav.scope
    encoder = _ref(gin, WAV_ENCODER, "encoder", ws)
    _need_default(gin, WAV_ENCODER, ws, {"pre_net": None, "make_padding_mask": True})
    post = _ref(gin, WAV_ENCODER, "post_net", ws, kind=LINEAR)
    feature_dim = int(gin.get(LINEAR, "in_features", post.scope))
    if int(gin.get(LINEAR, "out_features", post.scope)) != dim:
        raise InputError(gin.where, "the wav encoder's post_net does not output model_dim")
    key_in = gin.get(WAV_ENCODER, "key_in", ws, "wav")
    hop = gin.get(WAV_ENCODER, "hop_length", ws, None)
    fs = gin.get(WAV_ENCODER, "fs", ws, None)

    processors = gin.get(SEQUENTIAL, "processors")
    if (not isinstance(processors, list) or not processors
            or not all(isinstance(p, GinRef) for p in processors)
            or not names_match(processors[0].name, READ_AUDIO)):
        raise InputError(gin.where, f"{SEQUENTIAL}.processors = {processors!r}: expected "
                         "[@ReadAudioProcessor, ...]")
    max_length = gin.get(READ_AUDIO, "max_length", processors[0].scope, None)
    if max_length is None:
        raise InputError(gin.where, f"{READ_AUDIO}.max_length is not bound (the chunk length)")
    feature_procs: list[GinRef] = []
    for p in processors[1:]:
        if names_match(p.name, LOAD_NUMPY):
            notes.append("LoadNumpyProcessor (self-training targets) skipped")
        elif names_match(p.name, MEL) or names_match(p.name, SPECTROGRAM):
            feature_procs.append(p)
        else:
            raise InputError(gin.where, f"unsupported processor @{p.name}")

    encodec_scale, features, norm_stats = 1.0, (), (0.0, 1.0)
    if names_match(encoder.name, ENCODEC_ENCODER):
        frontend = "encodec"
        if key_in != "wav":
            raise InputError(gin.where, f"EncodecEncoder reads {key_in!r}, expected 'wav'")
        _need_default(gin, ENCODEC_ENCODER, encoder.scope, {"frozen": True, "pretrained": True})
        encodec_scale = float(gin.get(ENCODEC_ENCODER, "scale", encoder.scope, 1.0))
        hop = SEANET_HOP if hop is None else hop
        fs = SAMPLE_RATE if fs is None else fs
        if feature_dim != SEANET_DIM:
            raise InputError(gin.where, f"post_net in_features {feature_dim} != EnCodec's "
                             f"{SEANET_DIM}")
    elif names_match(encoder.name, IDENTITY):
        if len(feature_procs) != 1:
            raise InputError(gin.where, "an Identity wav encoder needs exactly one feature "
                             f"processor, found {[p.name for p in feature_procs]}")
        proc = feature_procs[0]
        key_out = gin.get(proc.name, "key_out", proc.scope, "wav_features")
        if key_out != key_in or gin.get(proc.name, "key_in", proc.scope, "wav") != "wav":
            raise InputError(gin.where, f"the processor writes {key_out!r} but the wav encoder "
                             f"reads {key_in!r}")
        is_mel = names_match(proc.name, MEL)
        frontend = "mel" if is_mel else "spec"
        defaults = MEL_DEFAULTS if is_mel else SPEC_DEFAULTS
        known = {*defaults, "key_in", "key_out", "norm_stats", "dither"}
        unknown = sorted(gin.params(proc.name, proc.scope) - known)
        if unknown:
            raise InputError(gin.where, f"unsupported {proc.name} parameter(s) {unknown}")
        features = tuple((k, gin.get(proc.name, k, proc.scope, d)) for k, d in defaults.items())
        stats = gin.get(proc.name, "norm_stats", proc.scope, [0, 1])
        norm_stats = (float(stats[0]), float(stats[1]))
        if not is_mel and float(dict(features)["dither"]) != 0.0:
            raise InputError(gin.where, "SpectrogramProcessor dither != 0 (random) unsupported")
        if is_mel and feature_dim != dict(features)["num_mel_bins"]:
            raise InputError(gin.where, f"post_net in_features {feature_dim} != num_mel_bins")
        if hop is None or fs is None:
            raise InputError(gin.where, "an Identity wav encoder needs WavEncoder.hop_length "
                             "and WavEncoder.fs in the gin")
    else:
        raise InputError(gin.where, f"unsupported wav encoder @{encoder.name}")
    cfg = EncoderConfig(
        model_dim=dim, num_layers=layers, num_heads=heads, head_dim=int(head_dim),
        ff_dim=ff_dim, frontend=frontend, feature_dim=feature_dim, sample_rate=int(fs),
        chunk_samples=int(int(fs) * max_length), hop_length=int(hop),
        att_scale=None if att_scale is None else float(att_scale),
        encodec_scale=encodec_scale, features=features, norm_stats=norm_stats,
    )
    return cfg, notes


# --------------------------------------------------------------------------- modules
@functools.cache
def _modules() -> Any:
    """The nn.Module classes (torch is imported only when a model is built)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class MultiHeadAttention(nn.Module):
        """No biases; head h takes channels h, h+H, h+2H, ... (upstream's view/permute)."""

        def __init__(self, dim: int, heads: int, head_dim: int, scale: float | None) -> None:
            super().__init__()
            self.heads, self.head_dim = heads, head_dim
            self.scale = head_dim ** -0.5 if scale is None else scale
            self.wq = nn.Linear(dim, heads * head_dim, bias=False)
            self.wk = nn.Linear(dim, heads * head_dim, bias=False)
            self.wv = nn.Linear(dim, heads * head_dim, bias=False)
            self.wo = nn.Linear(heads * head_dim, dim, bias=False)

        def split(self, x: torch.Tensor) -> torch.Tensor:
            n, t, _ = x.shape
            return x.view(n, t, self.head_dim, self.heads).permute(0, 3, 1, 2)

        def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
            q, k, v = self.split(self.wq(x)), self.split(self.wk(x)), self.split(self.wv(x))
            att = (q @ k.transpose(-2, -1)) * self.scale
            if key_mask is not None:
                att = att + key_mask[:, None, None, :].to(att.dtype) * MASK_VALUE
            y = att.softmax(dim=-1) @ v  # (n, heads, t, head_dim)
            n, _, t, _ = y.shape
            return self.wo(y.permute(0, 2, 3, 1).reshape(n, t, self.heads * self.head_dim))

    class TransformerLayer(nn.Module):
        """ResiDual block: (x0, x1) -> (post-norm branch, un-normalised sum)."""

        def __init__(self, cfg: EncoderConfig, ff_layer: nn.Module) -> None:
            super().__init__()
            self.att_layer = MultiHeadAttention(cfg.model_dim, cfg.num_heads, cfg.head_dim,
                                                cfg.att_scale)
            self.ff_layer = ff_layer
            self.norm1 = nn.LayerNorm(cfg.model_dim, eps=LN_EPS)
            self.norm2 = nn.LayerNorm(cfg.model_dim, eps=LN_EPS)

        def forward(self, x0: torch.Tensor, x1: torch.Tensor,
                    key_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            a = self.att_layer(x0, key_mask)
            x0 = self.norm1(x0 + a)
            x1 = x1 + a
            f = self.ff_layer(x0)
            return self.norm2(x0 + f), x1 + f

    class VisibleEncoder(nn.Module):
        """``visible_encoder`` without its post_net; one FFN module shared by all layers."""

        def __init__(self, cfg: EncoderConfig) -> None:
            super().__init__()
            ff = nn.Sequential(nn.Linear(cfg.model_dim, cfg.ff_dim), nn.ReLU(),
                               nn.Linear(cfg.ff_dim, cfg.model_dim))
            self.encoder_layers = nn.ModuleList(
                TransformerLayer(cfg, ff) for _ in range(cfg.num_layers))
            self.final_norm = nn.LayerNorm(cfg.model_dim, eps=LN_EPS)

    class SinusoidalPositionalEmbeddings(nn.Module):
        """x + scale * PE (pe[t, 2k] = sin(t w_k), pe[t, 2k+1] = cos(t w_k))."""

        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(1.0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            pe = torch.zeros_like(x)
            position = torch.arange(0, x.shape[1], device=x.device).unsqueeze(1).unsqueeze(0)
            div = torch.exp(torch.arange(0, x.shape[2], 2, dtype=torch.float, device=x.device)
                            * -(math.log(10000.0) / x.shape[2]))
            pe[:, :, 0::2] = torch.sin(position.float() * div)
            pe[:, :, 1::2] = torch.cos(position.float() * div)
            return x + self.scale * pe

    class Masker(nn.Module):
        """``masker`` (PatchoutMask): only its positional encoder is used at inference."""

        def __init__(self) -> None:
            super().__init__()
            self.positional_encoder = SinusoidalPositionalEmbeddings()

    class WNConv1d(nn.Module):
        """Conv1d with weight norm kept as ``weight_g``/``weight_v`` (old torch names)."""

        def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1,
                     dilation: int = 1) -> None:
            super().__init__()
            self.stride, self.dilation = stride, dilation
            self.weight_g = nn.Parameter(torch.ones(cout, 1, 1))
            self.weight_v = nn.Parameter(torch.empty(cout, cin, kernel))
            self.bias = nn.Parameter(torch.zeros(cout))
            nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            v = self.weight_v
            w = v * (self.weight_g / torch.linalg.vector_norm(v, dim=(1, 2), keepdim=True))
            return F.conv1d(x, w, self.bias, self.stride, dilation=self.dilation)

    class NormConv1d(nn.Module):
        def __init__(self, *args: int, **kwargs: int) -> None:
            super().__init__()
            self.conv = WNConv1d(*args, **kwargs)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    class SConv1d(nn.Module):
        """Causal conv: left pad (k-1)d-(s-1), right pad to a whole last frame, reflect."""

        def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1,
                     dilation: int = 1) -> None:
            super().__init__()
            self.kernel, self.stride, self.dilation = kernel, stride, dilation
            self.conv = NormConv1d(cin, cout, kernel, stride=stride, dilation=dilation)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            k, s = self.kernel, self.stride
            pad = (k - 1) * self.dilation - (s - 1)
            length = x.shape[-1]
            frames = (length - k + pad) / s + 1
            extra = (math.ceil(frames) - 1) * s + (k - pad) - length
            small = max(pad, extra) - length + 1 if length <= max(pad, extra) else 0
            if small:  # encodec's pad1d: zeros first so that reflection is possible
                x = F.pad(x, (0, small))
            x = F.pad(x, (pad, extra), mode="reflect")
            if small:
                x = x[..., :x.shape[-1] - small]
            return self.conv(x)

    class ResnetBlock(nn.Module):
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.block = nn.Sequential(nn.ELU(), SConv1d(dim, dim // 2, 3), nn.ELU(),
                                       SConv1d(dim // 2, dim, 1))
            self.shortcut = SConv1d(dim, dim, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.shortcut(x) + self.block(x)

    class SLSTM(nn.Module):
        def __init__(self, dim: int, layers: int) -> None:
            super().__init__()
            self.lstm = nn.LSTM(dim, dim, layers)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.permute(2, 0, 1)
            y, _ = self.lstm(x)
            return (y + x).permute(1, 2, 0)

    class SEANetEncoder(nn.Module):
        """encodec 0.1.1's 24 kHz encoder: (batch, 1, samples) -> (batch, 128, frames)."""

        def __init__(self) -> None:
            super().__init__()
            width = SEANET_FILTERS
            mods: list[nn.Module] = [SConv1d(1, width, 7)]
            for ratio in SEANET_RATIOS:
                mods += [ResnetBlock(width), nn.ELU(),
                         SConv1d(width, 2 * width, 2 * ratio, stride=ratio)]
                width *= 2
            mods += [SLSTM(width, SEANET_LSTM_LAYERS), nn.ELU(), SConv1d(width, SEANET_DIM, 7)]
            self.model = nn.Sequential(*mods)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x)

    class EncodecEncoder(nn.Module):
        """Waveform (batch, samples) -> (batch, frames, 128) * scale."""

        def __init__(self, scale: float) -> None:
            super().__init__()
            self.model = SEANetEncoder()
            self.scale = scale

        def forward(self, wav: torch.Tensor) -> torch.Tensor:
            return self.model(wav.unsqueeze(1)).permute(0, 2, 1) * self.scale

    class WavEncoder(nn.Module):
        def __init__(self, cfg: EncoderConfig) -> None:
            super().__init__()
            self.encoder = (EncodecEncoder(cfg.encodec_scale) if cfg.frontend == "encodec"
                            else nn.Identity())
            self.post_net = nn.Linear(cfg.feature_dim, cfg.model_dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.post_net(self.encoder(x))

    class EncodecMAEEncoder(nn.Module):
        """The extraction model; its state-dict keys are upstream's."""

        def __init__(self, cfg: EncoderConfig) -> None:
            super().__init__()
            self.cfg = cfg
            self.wav_encoder = WavEncoder(cfg)
            self.masker = Masker()
            self.visible_encoder = VisibleEncoder(cfg)

        def activations(self, features: torch.Tensor, valid_frames: int | None,
                        upto: int, postnorm_last: bool = True) -> list[torch.Tensor]:
            """Front-end output -> [x0 of blocks 0..upto], each (batch, T, D).

            ``valid_frames``: keys at frames >= this are masked (upstream's padding mask).
            """
            x = self.masker.positional_encoder(self.wav_encoder(features))
            key_mask = None
            if valid_frames is not None and valid_frames < x.shape[1]:
                key_mask = (torch.arange(x.shape[1], device=x.device) >= valid_frames)[None]
                key_mask = key_mask.expand(x.shape[0], -1)
            x0 = x1 = x
            out = []
            layers = self.visible_encoder.encoder_layers
            for layer in layers[:upto + 1]:
                x0, x1 = layer(x0, x1, key_mask)
                out.append(x0)
            if postnorm_last and upto == len(layers) - 1:
                out[-1] = x0 + self.visible_encoder.final_norm(x1)
            return out

    return dict(MultiHeadAttention=MultiHeadAttention, SEANetEncoder=SEANetEncoder,
                EncodecMAEEncoder=EncodecMAEEncoder)


def build_encoder(cfg: EncoderConfig) -> torch.nn.Module:
    """The extraction model for ``cfg``, default-initialised (use the meta device to size it)."""
    return _modules()["EncodecMAEEncoder"](cfg)


def build_seanet() -> torch.nn.Module:
    """Our port of encodec 0.1.1's 24 kHz SEANet encoder, default-initialised."""
    return _modules()["SEANetEncoder"]()


def attention_module(dim: int, heads: int, head_dim: int) -> torch.nn.Module:
    """One interleaved-head attention module (for checks against a standard MHA)."""
    return _modules()["MultiHeadAttention"](dim, heads, head_dim, None)


# --------------------------------------------------------------------------- loading
def _extraction_state(state: Mapping[str, Any], cfg: EncoderConfig, path: Path,
                      model: str) -> tuple[dict[str, Any], dict[str, int]]:
    """The keys extraction uses (unknown ones kept, so the strict load names them), the counts
    of the dropped training-only keys; checks the shared-FFN copies and the head count."""
    import torch

    keep: dict[str, Any] = {}
    ignored = dict.fromkeys(IGNORED_PREFIXES, 0)
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise InputError(path, f"state_dict entry {key!r} is not a named tensor")
        prefix = next((p for p in IGNORED_PREFIXES if key.startswith(p)), None)
        if prefix is not None:
            ignored[prefix] += 1
        else:
            keep[key] = value
    ff = re.compile(r"visible_encoder\.encoder_layers\.(\d+)\.ff_layer\.(.+)")
    first: dict[str, str] = {}
    for key in sorted(keep, key=lambda k: (len(k), k)):
        m = ff.fullmatch(key)
        if not m:
            continue
        ref = first.setdefault(m.group(2), key)
        a, b = keep[ref], keep[key]
        if ref != key and (a.shape != b.shape or not torch.equal(a, b)):
            raise InputError(path, f"checkpoint of {model!r}: {key} differs from {ref}; the "
                             "model shares one FFN across layers, so the copies must be equal")
    wq = "visible_encoder.encoder_layers.0.att_layer.wq.weight"
    if wq in keep and keep[wq].ndim == 2 and keep[wq].shape[0] != cfg.inner_dim:
        raise InputError(path, f"checkpoint of {model!r}: {wq} has {keep[wq].shape[0]} rows, "
                         f"but {cfg.num_heads} heads of {cfg.head_dim} channels give "
                         f"{cfg.inner_dim}")
    return keep, {k: v for k, v in ignored.items() if v}


def load_model(cfg: EncoderConfig, state: Mapping[str, Any], *, path: Path, model: str,
               device: Any = "cpu") -> tuple[torch.nn.Module, dict[str, int]]:
    """Build on the meta device, adopt the checkpoint's tensors strictly, move to ``device``."""
    import torch

    keep, ignored = _extraction_state(state, cfg, path, model)
    with torch.device("meta"):
        module = build_encoder(cfg)
    load_strict(module, keep, path=path, model=model, assign=True)
    return module.to(device=device, dtype=torch.float32).eval(), ignored


def _check_encodec_copy(state: Mapping[str, Any], th_path: Path, model: str) -> int:
    """The checkpoint's frozen encoder must be encodec_24khz-d7cc33bc.th's, tensor for tensor."""
    import torch

    ref = safe_load(th_path)
    if not isinstance(ref, Mapping):
        raise InputError(th_path, "expected the EnCodec state dict")
    prefix = "wav_encoder.encoder.model."
    ours = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    theirs = {k[len("encoder."):]: v for k, v in ref.items()
              if isinstance(k, str) and k.startswith("encoder.")}
    if set(ours) != set(theirs):
        diff = sorted(set(ours) ^ set(theirs))
        raise InputError(th_path, f"the EnCodec encoder keys of {model!r} and this file differ "
                         f"({diff[:3]})")
    for key in sorted(ours):
        a, b = ours[key], theirs[key]
        if a.shape != b.shape or not torch.equal(a.float(), b.float()):
            raise InputError(th_path, f"{model!r}: wav_encoder.encoder.model.{key} differs "
                             f"from encoder.{key} of {ENCODEC_FILE} (the frozen EnCodec "
                             "encoder must be the pretrained one)")
    return len(ours)


def parse_options(spec: ModelSpec, options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``extract.options.<model>`` (see the module docstring)."""
    unknown = sorted(str(k) for k in options if k not in OPTIONS)
    if unknown:
        raise InputError(f"extract.options.{spec.name}.{unknown[0]}",
                         f"unknown option for an EnCodecMAE model (options: {list(OPTIONS)})")
    out = {**OPTIONS, **options}
    if not isinstance(out["postnorm_last_activation"], bool):
        raise InputError(f"extract.options.{spec.name}.postnorm_last_activation",
                         f"expected true or false, got {out['postnorm_last_activation']!r}")
    if out["key_padding_mask"] not in PADDING_MASKS:
        raise InputError(f"extract.options.{spec.name}.key_padding_mask",
                         f"expected one of {list(PADDING_MASKS)}, got "
                         f"{out['key_padding_mask']!r}")
    return out


class EncodecMAERunner(Runner):
    """Chunks -> front end -> visible encoder; each layer averaged over all frames."""

    def __init__(self, spec: ModelSpec, device: Any, model: torch.nn.Module,
                 cfg: EncoderConfig, options: Mapping[str, Any],
                 provenance: Mapping[str, Any] | None = None) -> None:
        super().__init__(spec, device)
        bad = [k for k in spec.layers if not k.isdigit() or int(k) >= cfg.num_layers]
        if bad:
            raise InputError(spec.name, f"layer keys {bad} do not exist in a model of "
                             f"{cfg.num_layers} layers")
        self.model = model
        self.cfg = cfg
        self.options = dict(options)
        self.sample_rate = cfg.sample_rate
        self.min_samples = max(MIN_SAMPLES, cfg.window_samples())
        self.provenance = dict(provenance or {})
        self.preset = cfg.fbank_preset() if cfg.frontend == "mel" else None

    def features(self, chunk: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> the wav encoder's input: (batch, frames, bins) or the waveform."""
        import torch

        if self.cfg.frontend == "encodec":
            return chunk
        if self.preset is not None:
            from brainalign.models.frontends.kaldi import fbank

            return torch.stack([fbank(c, self.preset) for c in chunk])
        import torchaudio.compliance.kaldi as kaldi

        kwargs = dict(self.cfg.features)
        mean, std = self.cfg.norm_stats
        return torch.stack([(kaldi.spectrogram(c.float()[None], **kwargs) - mean) / std
                            for c in chunk])

    def frame_activations(self, audio: torch.Tensor,
                          layers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """(batch, samples) -> {layer: (batch, frames of all chunks, dim)}."""
        import torch

        layers = list(self.layers if layers is None else layers)
        idx = [int(k) for k in layers]
        n = audio.shape[1]
        chunk = self.cfg.chunk_samples
        # upstream: every chunk's wav_lens is min(len(clip), chunk) (batch index 0)
        valid = (None if self.options["key_padding_mask"] == "none"
                 else min(n, chunk) // self.cfg.hop_length)
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in layers}
        postnorm = bool(self.options["postnorm_last_activation"])
        for start in range(0, n, chunk):
            seg = audio[:, start:start + chunk]
            if seg.shape[1] <= MIN_CHUNK:
                continue
            acts = self.model.activations(self.features(seg), valid, max(idx), postnorm)
            for key, i in zip(layers, idx, strict=True):
                parts[key].append(acts[i])
        if not parts[layers[0]]:
            raise InputError(self.spec.name, f"audio of {n} samples has no chunk longer than "
                             f"{MIN_CHUNK} samples")
        return {k: torch.cat(v, dim=1) for k, v in parts.items()}

    def forward(self, audio: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        return {k: v.mean(dim=1) for k, v in self.frame_activations(audio, layers).items()}

    def info(self) -> dict[str, Any]:
        return {"config": self.cfg.values(), "options": dict(self.options),
                "min_samples": self.min_samples, "frames_2s": self.cfg.n_frames(
                    2 * self.cfg.sample_rate), "shared_ffn": True, **self.provenance}


def _read_v2(spec: ModelSpec, path: Path) -> tuple[dict[str, Any], EncoderConfig, list[str]]:
    ckpt = safe_load(path, mmap=True)
    expect_keys(ckpt, ("state_dict", "config", "imports"), path,
                "EnCodecMAE v2 checkpoint {state_dict, config, imports}")
    if not isinstance(ckpt["state_dict"], Mapping) or not isinstance(ckpt["imports"], str):
        raise InputError(path, "expected state_dict to be a dict and imports a string")
    cfg, notes = read_config(parse_gin(ckpt["config"], where=f"{path} [config]"))
    state = dict(ckpt["state_dict"])
    if cfg.frontend == "spec":
        post = state.get("wav_encoder.post_net.weight")
        if post is None or post.ndim != 2:
            raise InputError(path, "no 2-D wav_encoder.post_net.weight")
        features = dict(cfg.features)
        window = int(features["sample_frequency"] * features["frame_length"] * 0.001)
        bins = (1 << (window - 1).bit_length()) // 2 + 1  # round_to_power_of_two
        if int(post.shape[1]) != bins:
            raise InputError(path, f"wav_encoder.post_net takes {int(post.shape[1])} inputs, "
                             f"the gin's spectrogram gives {bins} bins")
        cfg = dataclasses.replace(cfg, feature_dim=int(post.shape[1]))
    return state, cfg, notes


def build(spec: ModelSpec, ctx: BuildContext) -> Runner:
    """The runner of a v2 hub checkpoint (options: see the module docstring)."""
    options = parse_options(spec, ctx.options)
    path = weight_file(spec, ctx, f"{spec.name}.pt")
    state, cfg, notes = _read_v2(spec, path)
    check_config(cfg.values(), spec.config, path=path, model=spec.name)
    provenance: dict[str, Any] = {"checkpoint": path.name, "format": "v2 .pt (gin config)"}
    if notes:
        provenance["gin_notes"] = notes
    if cfg.frontend == "encodec" and ENCODEC_FILE in fetched_files(spec.name, ctx.registry):
        th = weight_file(spec, ctx, ENCODEC_FILE)
        n = _check_encodec_copy(state, th, spec.name)
        provenance["encodec_reference"] = {"file": ENCODEC_FILE, "sha256": sha256_file(th),
                                           "tensors_equal": n}
    model, ignored = load_model(cfg, state, path=path, model=spec.name, device=ctx.device)
    provenance["ignored_keys"] = ignored
    return EncodecMAERunner(spec, ctx.device, model, cfg, options, provenance)


# --------------------------------------------------------------------------- Fig. 5
def checkpoint_step(path: str | Path) -> int:
    """The training step of a Lightning checkpoint: the integer after the stem's last ``=``."""
    stem = Path(path).stem
    tail = stem.rpartition("=")[2] if "=" in stem else ""
    if not tail.isdigit():
        raise InputError(path, "expected a checkpoint name ending in '=<step>' "
                         "(e.g. 'epoch=0-step=1000.ckpt')")
    return int(tail)


def sort_checkpoints(paths: Iterable[str | Path]) -> list[Path]:
    """Checkpoint files ordered by :func:`checkpoint_step`; two with one step are an error."""
    steps: dict[int, Path] = {}
    for p in map(Path, paths):
        step = checkpoint_step(p)
        if step in steps:
            raise InputError(p, f"step {step} also in {steps[step].name}")
        steps[step] = p
    return [steps[s] for s in sorted(steps)]


def load_pretraining_checkpoint(spec: ModelSpec | str, path: str | Path, *,
                                device: Any = "cpu", options: Mapping[str, Any] | None = None,
                                sha256: str | None = None) -> EncodecMAERunner:
    """Runner of one Fig. 5 Lightning checkpoint loaded strictly into ``spec``'s model.

    ``spec`` is mel256-ec-base (or a variant of it): the ``.ckpt`` has no gin string, so the
    configuration is ``spec.config``. ``sha256``, when given, is checked before the file is
    deserialised.
    """
    import torch

    from brainalign.models.registry import get_spec

    spec = get_spec(spec) if isinstance(spec, str) else spec
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "pretraining checkpoint not found")
    if sha256 is not None and sha256_file(path) != sha256:
        raise InputError(path, f"checksum mismatch: expected sha256 {sha256}")
    opts = parse_options(spec, dict(options or {}))
    cfg = EncoderConfig.from_values(spec.config, where=spec.name)
    ckpt = safe_load(path, mmap=True)
    expect_keys(ckpt, ("state_dict",), path, "Lightning checkpoint")
    if not isinstance(ckpt["state_dict"], Mapping):
        raise InputError(path, "state_dict is not a dict")
    device = torch.device(device)
    model, ignored = load_model(cfg, ckpt["state_dict"], path=path, model=spec.name,
                                device=device)
    provenance = {
        "checkpoint": path.name, "format": "Lightning .ckpt", "ignored_keys": ignored,
        "epoch": ckpt.get("epoch"), "global_step": ckpt.get("global_step"),
        "lightning_version": ckpt.get("pytorch-lightning_version"),
        "step": checkpoint_step(path) if "=" in path.stem else None,
    }
    return EncodecMAERunner(spec, device, model, cfg, opts, provenance)


# --------------------------------------------------------------------------- specs
_MEL_CONFIG: dict[str, Any] = {
    "frontend": "mel", "feature_dim": ENCODECMAE_MEL256.num_mel_bins,
    **{f"fbank_{k}": v for k, v in ENCODECMAE_MEL256.fbank_kwargs().items() if k != "dither"},
    "norm_mean": ENCODECMAE_MEL256.mean, "norm_std": ENCODECMAE_MEL256.std,
}
_COMMON_CONFIG: dict[str, Any] = {"sample_rate": SAMPLE_RATE, "chunk_samples": 4 * SAMPLE_RATE,
                                  "hop_length": SEANET_HOP, "ff_dim": 4096}
_SIZES = {
    "base": {"model_dim": 768, "num_layers": 10, "num_heads": 12, "head_dim": 64},
    "small": {"model_dim": 768, "num_layers": 5, "num_heads": 12, "head_dim": 64},
    "large": {"model_dim": 1024, "num_layers": 20, "num_heads": 12, "head_dim": 85},
}
_FRONTEND_CONFIG: dict[str, dict[str, Any]] = {
    "mel": {**_COMMON_CONFIG, **_MEL_CONFIG},
    "encodec": {**_COMMON_CONFIG, "frontend": "encodec", "feature_dim": SEANET_DIM,
                "encodec_scale": 1.0},
    "spec": {"ff_dim": 4096, "frontend": "spec"},
}
"""What each checkpoint's gin must say. spec-ec: only the transformer and the front-end kind
(its spectrogram settings, rate and input dim are the checkpoint's own; paper-models 3.1)."""

# key, label, layer indices (the paper's layer_map), the input front end, size
_MODELS = (
    ("mel256-ec-base", "ECMAE (B)", tuple(range(10)), "mel", "base"),
    ("mel256-ec-base-as", "ECMAE (AS)", tuple(range(10)), "mel", "base"),
    ("mel256-ec-base-fma", "ECMAE (FMA)", tuple(range(10)), "mel", "base"),
    ("mel256-ec-base-ll", "ECMAE (LL)", tuple(range(10)), "mel", "base"),
    ("mel256-ec-small", "ECMAE (S)", tuple(range(5)), "mel", "small"),
    ("mel256-ec-large", "ECMAE (L)", (*range(0, 20, 2), 19), "mel", "large"),
    ("mel256-ec-base_st-nopn", "ECMAE (It 2)", tuple(range(10)), "mel", "base"),
    ("mel256-ec-large_st-nopn", "ECMAE (L+It 3)", (*range(0, 20, 2), 19), "mel", "large"),
    ("ec-ec-base", "ECMAE (EC)", tuple(range(10)), "encodec", "base"),
    ("spec-ec-base", "ECMAE (Spec)", tuple(range(10)), "spec", "base"),
)

_INPUT = {"mel": "256-band log-mel (Kaldi fbank)", "encodec": "frozen EnCodec encoder",
          "spec": "linear spectrogram (Kaldi)"}

SPECS = [
    ModelSpec(
        name=key,
        label=label,
        family="EnCodecMAE",
        training="self-supervised",
        sample_rate=SAMPLE_RATE,
        layers=tuple(str(i) for i in layers),
        paper_keys={str(i): f"{key}_{i}" for i in layers},
        build="brainalign.models.encodecmae:build",
        fetched=True,
        frontend="brainalign.models.frontends.kaldi" if frontend == "mel" else None,
        config={**_SIZES[size], **_FRONTEND_CONFIG[frontend]},
        min_samples=MIN_SAMPLES,
        options=dict(OPTIONS),
        description=(f"EnCodecMAE {key}: {_SIZES[size]['num_layers']}-layer ResiDual "
                     f"transformer (dim {_SIZES[size]['model_dim']}) on {_INPUT[frontend]}, "
                     f"HF {HF_REPO}/{key}.pt"),
    )
    for key, label, layers, frontend, size in _MODELS
]
