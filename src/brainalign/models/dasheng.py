"""Dasheng (Dinkel et al. 2024): deep audio-signal holistic embeddings, masked autoencoders.

Our own implementation of the Dasheng encoder as the paper ran it through the ``dasheng`` PyPI
package (0.0.8, the version pinned by the authors' code mrpep/braindnn @1222378, whose
``src/specs.py`` ``layer_map`` gives the layer lists kept in ``SPECS``). Nothing of the package is
imported here; the tests compare this module with it on random weights.

Sources of the facts (the dasheng 0.0.8 wheel from PyPI; project github.com/Richermans/dasheng):

- ``dasheng/train/models.py``: ``AudioTransformerMAE_Encoder.__init__`` (the keyword defaults in
  :data:`PACKAGE_DEFAULTS`, the front end, ``init_bn``, ``patch_embed``, the two position
  embeddings, ``blocks``, ``norm``), ``Block``/``Attention``/``Mlp`` (pre-LN ViT block,
  ``qkv`` reshaped as (B, N, 3, heads, D/heads), scale head_dim**-0.5, exact GELU,
  LayerNorm eps 1e-6), ``load_state_dict``/``change_pos_embedding`` (the position-embedding
  resize, see ``pos_embed_mismatch`` below), ``forward_to_spec`` (front end in fp32).
- ``dasheng/pretrained/pretrained.py``: ``Dasheng.forward_features`` (``time_pos_embed[..., :t]``
  + ``freq_pos_embed``, tokens ordered (f t), blocks, final ``norm``), ``forward_spectrogram``
  (the patch grid is split into chunks of ``target_length // patch_stride[-1]`` = 252 tokens,
  1008 frames, which run through the blocks separately and are concatenated), the URLs,
  ``from_pretrained`` (dump ``{"model": state_dict, "config": kwargs}``; the model is
  ``Dasheng(**{**config, **constructor_kwargs})``, loaded strictly) and the constructors
  ``dasheng_base``/``dasheng_06B``/``dasheng_12B``, which force ``embed_dim``/``depth``/
  ``num_heads`` = 768/12/12, 1280/32/16 and 1536/40/24.
- The wheel's README (METADATA, FAQ "Is there an Audioset-finetuned Dasheng?"): the fine-tuned
  base ``dasheng_audioset_mAP497.pt`` is a flat state dict loaded with ``strict=False`` into
  ``dasheng_base()`` (the pretrained base), its ``outputlayer.*`` keys loaded strictly into
  ``Sequential(LayerNorm(768), Linear(768, 527))``.
- torchaudio 2.9.1 ``MelSpectrogram``/``AmplitudeToDB`` defaults (power 2, periodic Hann window,
  reflect padding, htk mel scale without norm; 10·log10 with amin 1e-10, reference 1, and the
  ``top_db`` floor taken from the maximum of the whole 2-D/3-D input).

Architecture: waveform (16 kHz) -> power mel spectrogram (n_fft 512, win 512, hop 160, 64 htk
bands 0-8 kHz, centred) -> dB with a 120-dB floor below the clip's maximum -> BatchNorm over
mel bins (running statistics) -> Conv2d patches (64 x 4 frames, stride 64 x 4: one token per
40 ms, no frequency axis) -> + position embeddings -> pre-LN blocks -> LayerNorm. 2 s = 32000
samples -> 201 frames -> 50 tokens. The mel filterbank and window are the checkpoint's own
buffers (``front_end.0.*``, loaded like every other key); ``info()`` records how far they are
from torchaudio's. Every tensor name maps 1:1 to the package's state-dict key.

Decisions:

- One clip at a time (the paper's protocol): the package's ``top_db`` floor uses the maximum of
  the whole batch, so ``forward`` runs each clip of a batch alone.
- Layer ``i`` = the output of ``blocks[i]`` (what a forward hook on it returns; for a clip over
  252 tokens the chunks' outputs are concatenated), averaged over all tokens (paper-models.md
  §1.2). Option ``last_layer_norm`` (default ``false``: before ``norm``, favoured but
  unverified) applies the final ``norm`` to the last block's output, i.e. the tensor the
  package's ``forward`` returns.
- Hyperparameters: the effective config is built as ``from_pretrained`` does, package defaults
  <- the file's ``config`` <- the constructor's ``embed_dim``/``depth``/``num_heads`` (the spec's
  values). A file value of ``embed_dim`` or ``depth`` that differs is an error (the weights
  would not fit); a different ``num_heads`` is overridden exactly as the package does, with a
  warning, and recorded in ``info()["config_overridden"]``. The result must equal
  ``ModelSpec.config`` (every key the architecture depends on). Config keys that the
  package's encoder ignores (training settings) are ignored and listed in ``info()``.
- Position embeddings (option ``pos_embed_mismatch``): the package resizes when a loaded
  ``time_pos_embed`` differs from the model's; in effect (its comparison uses the frequency
  length, so the interpolation branch is unreachable) it keeps the first 252 positions of a
  longer table and fails on a shorter one. Default ``error``: a table whose shape differs from
  the config's (1, D, 1, target_length / 4) is an InputError, since ``from_pretrained`` builds
  the model from the same file's config and a mismatch means an unexpected file.
  ``truncate`` reproduces the package's rule (first positions kept; longer ``freq_pos_embed``
  rows cut the same way; a shorter table is still an error).
- Weights: the model is built on the ``meta`` device and adopts the mmapped tensors of
  ``safe_load(mmap=True)`` (``load_strict(assign=True)``), so a checkpoint is never held
  twice (Dasheng 1.2B is 4.5 GB in fp32). Floating tensors that are not float32 are cast
  (the package casts them by copying into its float32 model).
- ``dasheng_base_ft-as`` needs two files, both checksummed before either is read:
  ``dasheng_base.pt`` gives the ``config`` and is loaded strictly (as ``dasheng_base()`` does);
  then every key of ``dasheng_audioset_mAP497.pt`` that names an encoder tensor replaces the
  base's (the README's ``strict=False`` load), so encoder keys absent from the fine-tuned file
  keep their pretrained values (listed in ``info()["overlay"]["from_base"]``). Its
  ``outputlayer.0.*``/``outputlayer.1.*`` keys must be exactly the README's classifier
  (LayerNorm(D) + Linear(D, 527), checked strictly, not used by any layer). Any other key
  (a prefixed or unknown name), a misshapen encoder key, or a file without encoder keys is an
  InputError naming the key, the file and the model.

Options (``extract.options.<model>``): ``last_layer_norm`` (bool, default false),
``pos_embed_mismatch`` (``error`` | ``truncate``, default ``error``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brainalign.errors import InputError
from brainalign.models.base import Runner
from brainalign.models.spec import BuildContext, ModelSpec

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
N_CLASSES = 527
"""AudioSet classes of the fine-tuned file's ``outputlayer.1`` (the README's classifier)."""

PACKAGE_DEFAULTS: dict[str, Any] = {
    "patch_size": (64, 4), "patch_stride": (64, 4), "embed_dim": 768, "depth": 12,
    "num_heads": 8, "mlp_ratio": 4.0, "qkv_bias": True, "norm_layer": None, "act_layer": None,
    "init_values": None, "target_length": 1008, "pooling": "mean", "block_type": "Block",
    "attention_type": "Attention", "n_fft": 512, "n_mels": 64, "hop_size": 160,
    "win_size": 512, "f_min": 0, "f_max": 8000, "center": True, "top_db": 120,
}
"""``AudioTransformerMAE_Encoder`` keyword defaults that shape the inference model."""

CONSTRUCTOR_KEYS = ("embed_dim", "depth", "num_heads")
"""What ``dasheng_base``/``dasheng_06B``/``dasheng_12B`` force over the file's config."""

OPTION_DEFAULTS: dict[str, Any] = {"last_layer_norm": False, "pos_embed_mismatch": "error"}
POS_EMBED_MODES = ("error", "truncate")

CHECKPOINT = "dasheng_base.pt"
FINETUNED = "dasheng_audioset_mAP497.pt"
FILES: dict[str, tuple[str, str | None]] = {
    "dasheng_base": ("dasheng_base.pt", None),
    "dasheng_06B": ("dasheng_06b.pt", None),
    "dasheng_12B": ("dasheng_12b.pt", None),
    "dasheng_base_ft-as": ("dasheng_base.pt", FINETUNED),
}
"""Model -> (pretrained dump {model, config}, fine-tuned flat state dict or None)."""


def model_config(embed_dim: int, depth: int, num_heads: int) -> dict[str, Any]:
    """The effective hyperparameters of a Dasheng encoder of the given size."""
    return {**PACKAGE_DEFAULTS, "embed_dim": embed_dim, "depth": depth, "num_heads": num_heads}


def n_frames(samples: int, config: Mapping[str, Any] | None = None) -> int:
    """Mel frames of a clip (centred STFT)."""
    cfg = config or PACKAGE_DEFAULTS
    if cfg["center"]:
        return 1 + samples // cfg["hop_size"]
    return max(0, 1 + (samples - cfg["n_fft"]) // cfg["hop_size"])


def n_tokens(samples: int, config: Mapping[str, Any] | None = None) -> int:
    """Tokens of a clip: time patches x frequency patches."""
    cfg = config or PACKAGE_DEFAULTS
    (pf, pt), (sf, st) = cfg["patch_size"], cfg["patch_stride"]
    frames = n_frames(samples, cfg)
    t = (frames - pt) // st + 1 if frames >= pt else 0
    return t * ((cfg["n_mels"] - pf) // sf + 1)


def min_samples(config: Mapping[str, Any] | None = None) -> int:
    """Shortest clip giving one token (reflect padding also needs more than n_fft/2 samples)."""
    cfg = config or PACKAGE_DEFAULTS
    n = cfg["n_fft"] // 2 + 1 if cfg["center"] else cfg["n_fft"]
    while n_tokens(n, cfg) < 1:
        n += 1
    return n


# --------------------------------------------------------------------------- modules
def _modules() -> dict[str, type]:
    """The nn.Module classes (defined on first use so that importing this module is cheap)."""
    import torch
    from torch import nn

    class Spectrogram(nn.Module):
        """Power STFT with the checkpoint's window (buffer ``window``)."""

        def __init__(self, n_fft: int, win: int, hop: int, center: bool) -> None:
            super().__init__()
            self.n_fft, self.hop, self.center = n_fft, hop, center
            self.register_buffer("window", torch.empty(win))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            spec = torch.stft(x, self.n_fft, hop_length=self.hop, win_length=self.window.numel(),
                              window=self.window, center=self.center, pad_mode="reflect",
                              normalized=False, onesided=True, return_complex=True)
            return spec.abs().pow(2.0)

    class MelScale(nn.Module):
        """Linear -> mel bands with the checkpoint's filterbank (buffer ``fb``, (bins, mels))."""

        def __init__(self, n_bins: int, n_mels: int) -> None:
            super().__init__()
            self.register_buffer("fb", torch.empty(n_bins, n_mels))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.matmul(x.transpose(-1, -2), self.fb).transpose(-1, -2)

    class MelSpectrogram(nn.Module):
        def __init__(self, cfg: Mapping[str, Any]) -> None:
            super().__init__()
            self.spectrogram = Spectrogram(cfg["n_fft"], cfg["win_size"], cfg["hop_size"],
                                           cfg["center"])
            self.mel_scale = MelScale(cfg["n_fft"] // 2 + 1, cfg["n_mels"])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.mel_scale(self.spectrogram(x))

    class ToDecibel(nn.Module):
        """10·log10(max(x, 1e-10)), floored at each clip's maximum minus ``top_db``."""

        def __init__(self, top_db: float | None) -> None:
            super().__init__()
            self.top_db = top_db

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            db = 10.0 * torch.log10(torch.clamp(x, min=1e-10))
            if self.top_db is not None:
                floor = db.amax(dim=(-2, -1), keepdim=True) - self.top_db
                db = torch.max(db, floor)
            return db

    class SwapChannelFreq(nn.Module):
        """(b, c, f, t) <-> (b, f, c, t): BatchNorm2d then normalises each mel bin."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.transpose(1, 2)

    class PatchEmbed(nn.Module):
        def __init__(self, dim: int, size: tuple[int, int], stride: tuple[int, int]) -> None:
            super().__init__()
            self.proj = nn.Conv2d(1, dim, kernel_size=size, stride=stride)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(x)

    class Attention(nn.Module):
        def __init__(self, dim: int, heads: int, qkv_bias: bool) -> None:
            super().__init__()
            self.heads = heads
            self.scale = (dim // heads) ** -0.5
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, n, d = x.shape
            q, k, v = (self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads)
                       .permute(2, 0, 3, 1, 4).unbind(0))
            weights = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
            return self.proj((weights @ v).transpose(1, 2).reshape(b, n, d))

    class Mlp(nn.Module):
        def __init__(self, dim: int, hidden: int) -> None:
            super().__init__()
            self.fc1 = nn.Linear(dim, hidden)
            self.act = nn.GELU()
            self.fc2 = nn.Linear(hidden, dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(self.act(self.fc1(x)))

    class Block(nn.Module):
        """Pre-LN transformer block (no LayerScale, no dropout at inference)."""

        def __init__(self, dim: int, heads: int, mlp_ratio: float, qkv_bias: bool) -> None:
            super().__init__()
            self.norm1 = nn.LayerNorm(dim, eps=1e-6)
            self.attn = Attention(dim, heads, qkv_bias)
            self.norm2 = nn.LayerNorm(dim, eps=1e-6)
            self.mlp = Mlp(dim, int(dim * mlp_ratio))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class DashengEncoder(nn.Module):
        """The inference encoder; ``state_dict`` keys equal the package's."""

        def __init__(self, cfg: Mapping[str, Any]) -> None:
            super().__init__()
            dim, n_mels = cfg["embed_dim"], cfg["n_mels"]
            size, stride = tuple(cfg["patch_size"]), tuple(cfg["patch_stride"])
            grid = (n_mels // stride[0], cfg["target_length"] // stride[1])
            self.chunk_tokens = cfg["target_length"] // stride[1]
            self.front_end = nn.Sequential(MelSpectrogram(cfg), ToDecibel(cfg["top_db"]))
            self.init_bn = nn.Sequential(SwapChannelFreq(), nn.BatchNorm2d(n_mels, momentum=0.01),
                                         SwapChannelFreq())
            self.patch_embed = PatchEmbed(dim, size, stride)
            self.time_pos_embed = nn.Parameter(torch.empty(1, dim, 1, grid[1]))
            self.freq_pos_embed = nn.Parameter(torch.empty(1, dim, grid[0], 1))
            self.blocks = nn.ModuleList(
                Block(dim, cfg["num_heads"], cfg["mlp_ratio"], cfg["qkv_bias"])
                for _ in range(cfg["depth"]))
            self.norm = nn.LayerNorm(dim, eps=1e-6)

        def spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
            """(b, samples) -> normalised log-mel (b, 1, mels, frames), in float32."""
            return self.init_bn(self.front_end(wave.float())[:, None])

        def chunks(self, wave: torch.Tensor) -> list[torch.Tensor]:
            """(b, samples) -> the token chunks (b, n <= 252 x f, dim) entering the blocks."""
            x = self.patch_embed(self.spectrogram(wave))
            out = []
            for part in x.split(self.chunk_tokens, dim=-1):
                part = part + self.time_pos_embed[..., :part.shape[-1]] + self.freq_pos_embed
                out.append(part.flatten(2).transpose(1, 2))  # (b, (f t), dim)
            return out

        def block_outputs(self, wave: torch.Tensor, upto: int,
                          final_norm: bool = False) -> list[torch.Tensor]:
            """Outputs of blocks 0..upto-1, each (b, tokens, dim), chunks concatenated.

            ``final_norm``: the last returned output has passed through ``norm``.
            """
            per_chunk: list[list[torch.Tensor]] = [[] for _ in range(upto)]
            for x in self.chunks(wave):
                for i in range(upto):
                    x = self.blocks[i](x)
                    per_chunk[i].append(x)
            outs = [torch.cat(p, dim=1) for p in per_chunk]
            if final_norm and outs:
                outs[-1] = self.norm(outs[-1])
            return outs

    class Classifier(nn.Sequential):
        """The README's AudioSet head (only to check the fine-tuned file's ``outputlayer``)."""

        def __init__(self, dim: int) -> None:
            super().__init__(nn.LayerNorm(dim), nn.Linear(dim, N_CLASSES))

    return {"DashengEncoder": DashengEncoder, "Classifier": Classifier}


def build_encoder(config: Mapping[str, Any]) -> torch.nn.Module:
    """A :class:`DashengEncoder` of an effective config (uninitialised; on the current device)."""
    return _modules()["DashengEncoder"](config)


def parameter_total(config: Mapping[str, Any]) -> int:
    """Trainable parameters of an encoder config, built on the meta device."""
    from brainalign.models.weights import parameter_count

    return parameter_count(lambda: build_encoder(config))


# --------------------------------------------------------------------------- options, config
def parse_options(spec: ModelSpec, options: Mapping[str, Any]) -> dict[str, Any]:
    """Validated build options (defaults filled); one InputError per bad value."""
    unknown = sorted(set(options) - set(OPTION_DEFAULTS))
    if unknown:
        raise InputError(f"extract.options.{spec.name}.{unknown[0]}",
                         f"unknown option for a Dasheng model (known: {sorted(OPTION_DEFAULTS)})")
    opts = {**OPTION_DEFAULTS, **options}
    if not isinstance(opts["last_layer_norm"], bool):
        raise InputError(f"extract.options.{spec.name}.last_layer_norm",
                         f"expected true or false, got {opts['last_layer_norm']!r}")
    if opts["pos_embed_mismatch"] not in POS_EMBED_MODES:
        raise InputError(f"extract.options.{spec.name}.pos_embed_mismatch",
                         f"expected one of {list(POS_EMBED_MODES)}, "
                         f"got {opts['pos_embed_mismatch']!r}")
    return opts


def _normalise(key: str, value: Any) -> Any:
    if key in ("patch_size", "patch_stride") and isinstance(value, int):
        return (value, value)
    if isinstance(value, list | tuple):
        return tuple(_normalise("", v) for v in value)
    return value


def effective_config(found: Any, spec: ModelSpec, path: Path) -> tuple[dict[str, Any],
                                                                          dict[str, Any]]:
    """The config the package would build from a file's ``config``, checked against the spec.

    Returns (config, notes) where notes lists the ignored keys and overridden values.
    """
    from brainalign.models.weights import check_config

    if not isinstance(found, Mapping):
        raise InputError(path, f"expected 'config' to be a dict of hyperparameters, got "
                         f"{type(found).__name__}")
    found = {str(k): _normalise(str(k), v) for k, v in found.items()}
    forced = {k: spec.config[k] for k in CONSTRUCTOR_KEYS}
    for key in ("embed_dim", "depth"):
        if key in found and found[key] != forced[key]:
            raise InputError(path, f"the checkpoint's config is not that of {spec.name!r}: "
                             f"{key}={found[key]!r} (expected {forced[key]!r})")
    overridden = {k: found[k] for k in CONSTRUCTOR_KEYS if k in found and found[k] != forced[k]}
    if overridden:
        log.warning("%s: %s: config values %s are overridden by the dasheng constructor's %s",
                    spec.name, path, overridden, forced)
    config = {k: found.get(k, v) for k, v in PACKAGE_DEFAULTS.items()} | forced
    check_config(config, spec.config, path=path, model=spec.name)
    notes = {"file_keys": sorted(found), "ignored": sorted(set(found) - set(PACKAGE_DEFAULTS)),
             "overridden": overridden}
    return config, notes


# --------------------------------------------------------------------------- state dicts
def _tensor_dict(obj: Any, path: Path, what: str) -> dict[str, torch.Tensor]:
    import torch

    if not isinstance(obj, Mapping):
        raise InputError(path, f"expected {what} (a dict of tensors), got {type(obj).__name__}")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise InputError(path, f"expected {what} holding only tensors; {bad[0]!r} is not one")
    return {str(k): v for k, v in obj.items()}


def _float32(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Cast floating tensors that are not float32 (in place); returns {key: old dtype}."""
    import torch

    cast = {}
    for key, value in state.items():
        if value.is_floating_point() and value.dtype != torch.float32:
            cast[key] = str(value.dtype).removeprefix("torch.")
            state[key] = value.float()
    return cast


def fit_pos_embed(state: dict[str, torch.Tensor], shapes: Mapping[str, tuple[int, ...]],
                  mode: str, *, path: Path, model: str) -> dict[str, Any]:
    """Apply the ``pos_embed_mismatch`` rule to a loaded state (in place); returns what changed."""
    key = "time_pos_embed"
    if key not in state or tuple(state[key].shape) == shapes[key]:
        return {}
    got, want = tuple(state[key].shape), shapes[key]
    if mode == "error":
        raise InputError(path, f"checkpoint does not fit model {model!r}: {key} {got} differs "
                         f"from the config's {want}; the dasheng package would keep the first "
                         f"{want[-1]} positions (set extract.options.{model}.pos_embed_mismatch: "
                         "truncate to do the same)")
    if got[:3] != want[:3] or got[-1] < want[-1]:
        raise InputError(path, f"checkpoint does not fit model {model!r}: {key} {got} cannot "
                         f"be cut to {want} (the dasheng package fails on it too)")
    changed: dict[str, Any] = {key: [list(got), list(want)]}
    state[key] = state[key][..., :want[-1]].contiguous()
    fkey = "freq_pos_embed"
    if fkey in state and tuple(state[fkey].shape) != shapes[fkey]:
        fgot = tuple(state[fkey].shape)
        if fgot[-2] < shapes[fkey][-2]:
            raise InputError(path, f"checkpoint does not fit model {model!r}: {fkey} {fgot} is "
                             f"shorter than {shapes[fkey]} (interpolation is not supported)")
        state[fkey] = state[fkey][:, :, :shapes[fkey][-2], :].contiguous()
        changed[fkey] = [list(fgot), list(shapes[fkey])]
    log.warning("%s: %s: position embeddings cut as the dasheng package does: %s", model, path,
                changed)
    return changed


def _first(keys: Sequence[str], n: int = 3) -> str:
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(repr(k) for k in keys[:n]) + more


def overlay_finetuned(encoder: torch.nn.Module, ft: dict[str, torch.Tensor], mode: str, *,
                      path: Path, model: str) -> dict[str, Any]:
    """Load the fine-tuned flat state dict over the (already loaded) pretrained encoder.

    Encoder keys replace the base's; ``outputlayer.*`` must be the README's classifier; any
    other key is an error. Returns which keys came from which file.
    """
    from brainalign.models.weights import load_strict

    expected = {k: tuple(v.shape) for k, v in encoder.state_dict(keep_vars=True).items()}
    head = {k: v for k, v in ft.items() if k.startswith("outputlayer.")}
    body = {k: v for k, v in ft.items() if k not in head}
    unknown = [k for k in body if k not in expected]
    if unknown:
        raise InputError(path, f"fine-tuned checkpoint does not fit model {model!r}: unexpected "
                         f"key {_first(unknown)} (only encoder keys and outputlayer.* are known)")
    if not body:
        raise InputError(path, f"fine-tuned checkpoint of {model!r} holds no encoder keys")
    resized = fit_pos_embed(body, expected, mode, path=path, model=model)
    misshapen = [f"{k} {tuple(v.shape)} (model {expected[k]})" for k, v in body.items()
                 if tuple(v.shape) != expected[k]]
    if misshapen:
        raise InputError(path, f"fine-tuned checkpoint does not fit model {model!r}: misshapen "
                         f"key {_first(misshapen)}")
    import torch

    with torch.device("meta"):
        classifier = _modules()["Classifier"](expected["norm.weight"][0])
    load_strict(classifier, {k.removeprefix("outputlayer."): v for k, v in head.items()},
                path=path, model=f"{model} (outputlayer: LayerNorm + Linear to {N_CLASSES})",
                assign=True)
    cast = _float32(body)
    encoder.load_state_dict(body, strict=False, assign=True)
    return {"from_finetuned": len(body), "from_base": sorted(set(expected) - set(body)),
            "classifier": sorted(head), "resized": resized, "cast": cast}


def _frontend_check(encoder: torch.nn.Module, config: Mapping[str, Any]) -> dict[str, float]:
    """Max |stored - torchaudio| of the checkpoint's window and mel filterbank."""
    import torch
    import torchaudio

    fb = torchaudio.functional.melscale_fbanks(
        config["n_fft"] // 2 + 1, float(config["f_min"]), float(config["f_max"]),
        config["n_mels"], SAMPLE_RATE, None, "htk")
    window = torch.hann_window(config["win_size"])
    front = encoder.front_end[0]
    out = {}
    for name, stored, ref in (("window", front.spectrogram.window, window),
                              ("mel_fb", front.mel_scale.fb, fb)):
        out[name] = (float((stored.detach().cpu().float() - ref).abs().max())
                     if stored.shape == ref.shape else float("inf"))
    return out


# --------------------------------------------------------------------------- runner
class DashengRunner(Runner):
    """Waveform -> block outputs, each averaged over its tokens; one clip at a time."""

    def __init__(self, spec: ModelSpec, device: torch.device, encoder: torch.nn.Module,
                 config: Mapping[str, Any], options: Mapping[str, Any],
                 provenance: Mapping[str, Any]) -> None:
        super().__init__(spec, device)
        self.encoder = encoder.to(device).eval()
        self.config = dict(config)
        self.options = dict(options)
        self.provenance = dict(provenance)

    def token_outputs(self, clip: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """(samples,) -> {layer: (tokens, dim)} for one clip."""
        import torch

        index = {key: int(key) for key in layers}
        upto = max(index.values()) + 1
        depth = self.config["depth"]
        final_norm = bool(self.options["last_layer_norm"]) and upto == depth
        if n_tokens(clip.shape[-1], self.config) < 1:
            raise InputError(self.spec.name, f"a clip of {clip.shape[-1]} samples gives no token "
                             f"(at least {self.min_samples} needed)")
        with torch.inference_mode():
            outs = self.encoder.block_outputs(clip.reshape(1, -1).to(self.device), upto,
                                              final_norm)
        return {key: outs[i][0] for key, i in index.items()}

    def forward(self, audio: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        import torch

        per_clip = [self.token_outputs(clip, layers) for clip in audio]
        return {key: torch.stack([out[key].mean(dim=0) for out in per_clip]) for key in layers}

    def info(self) -> dict[str, Any]:
        return {"config": self.config, "options": self.options,
                "chunk_tokens": self.config["target_length"] // self.config["patch_stride"][1],
                **self.provenance}


def _load_dump(path: Path, spec: ModelSpec) -> tuple[dict[str, torch.Tensor], Any]:
    from brainalign.models.weights import expect_keys, safe_load

    dump = safe_load(path, mmap=True)
    expect_keys(dump, ("model", "config"), path, "Dasheng checkpoint {'model', 'config'}")
    return _tensor_dict(dump["model"], path, "'model', a state dict"), dump["config"]


def build(spec: ModelSpec, ctx: BuildContext) -> DashengRunner:
    """Options: ``last_layer_norm`` (bool), ``pos_embed_mismatch`` (error | truncate)."""
    import torch

    from brainalign.models.weights import load_strict, weight_file

    options = parse_options(spec, ctx.options)
    if spec.name not in FILES:
        raise InputError(spec.name, f"not a Dasheng model (known: {sorted(FILES)})")
    base_name, ft_name = FILES[spec.name]
    base_path = weight_file(spec, ctx, base_name)
    ft_path = weight_file(spec, ctx, ft_name) if ft_name else None  # both checked before reading

    state, found = _load_dump(base_path, spec)
    config, notes = effective_config(found, spec, base_path)
    with torch.device("meta"):
        encoder = build_encoder(config)
    shapes = {k: tuple(v.shape) for k, v in encoder.state_dict(keep_vars=True).items()}
    resized = fit_pos_embed(state, shapes, options["pos_embed_mismatch"], path=base_path,
                            model=spec.name)
    cast = _float32(state)
    load_strict(encoder, state, path=base_path, model=spec.name, assign=True)
    provenance: dict[str, Any] = {
        "files": {base_name: "pretrained dump {model, config}: config and encoder"},
        "config_file_keys": notes["file_keys"], "config_ignored": notes["ignored"],
        "config_overridden": notes["overridden"], "pos_embed_resized": resized,
        "cast_to_float32": cast,
    }
    if ft_path is not None and ft_name is not None:
        from brainalign.models.weights import safe_load

        ft = _tensor_dict(safe_load(ft_path, mmap=True), ft_path, "a flat state dict")
        provenance["overlay"] = overlay_finetuned(encoder, ft, options["pos_embed_mismatch"],
                                                  path=ft_path, model=spec.name)
        provenance["files"][ft_name] = ("fine-tuned flat state dict: its encoder keys replace "
                                        "the pretrained ones; outputlayer.* checked, unused")
    stale = [k for k, v in encoder.state_dict(keep_vars=True).items() if v.is_meta]
    if stale:  # cannot happen after a strict load; guards against a silent meta tensor
        raise InputError(base_path, f"{spec.name}: tensors left unloaded: {_first(stale)}")
    provenance["front_end_max_abs_diff"] = _frontend_check(encoder, config)
    if max(provenance["front_end_max_abs_diff"].values()) > 1e-5:
        log.warning("%s: the checkpoint's STFT window / mel filterbank differ from torchaudio's "
                    "(%s); the checkpoint's are used", spec.name,
                    provenance["front_end_max_abs_diff"])
    return DashengRunner(spec, ctx.device, encoder, config, options, provenance)


# --------------------------------------------------------------------------- specs
# key, label, training, layer indices (the paper's layer_map), (embed_dim, depth, num_heads)
_MODELS = (
    ("dasheng_base", "Dasheng (B)", "self-supervised", tuple(range(12)), (768, 12, 12)),
    ("dasheng_06B", "Dasheng (XL)", "self-supervised", (*range(0, 31, 3), 31), (1280, 32, 16)),
    ("dasheng_12B", "Dasheng (XXL)", "self-supervised", (*range(0, 37, 4), 39), (1536, 40, 24)),
    ("dasheng_base_ft-as", "Dasheng (FT)", "supervised", tuple(range(12)), (768, 12, 12)),
)

_DESCRIPTIONS = {
    "dasheng_base": "Dasheng base (86M), masked audio encoder on 272k h (Zenodo 11511780)",
    "dasheng_06B": "Dasheng 0.6B, masked audio encoder on 272k h (Zenodo 11511780)",
    "dasheng_12B": "Dasheng 1.2B, masked audio encoder on 272k h (Zenodo 11511780)",
    "dasheng_base_ft-as": "Dasheng base fine-tuned on AudioSet, 49.7 mAP (Zenodo 13315686), "
                          "over the pretrained base",
}

SPECS = [
    ModelSpec(
        name=key, label=label, family="Dasheng", training=training, sample_rate=SAMPLE_RATE,
        layers=tuple(str(i) for i in layers), paper_keys={str(i): f"{key}_{i}" for i in layers},
        build="brainalign.models.dasheng:build", fetched=True,
        config=model_config(*size), min_samples=min_samples(model_config(*size)),
        options=dict(OPTION_DEFAULTS), description=_DESCRIPTIONS[key],
    )
    for key, label, training, layers, size in _MODELS
]
