"""BEATs (Chen et al. 2023, microsoft/unilm): audio pre-training with acoustic tokenizers.

Our own implementation of the BEATs encoder, built from the checkpoint's ``cfg`` and loaded
strictly from the checkpoint's ``model`` state dict (no upstream package exists on PyPI).

**Sources of the facts** (read, not copied):

- microsoft/unilm @768a3c873f598bb9b4d4dfb9267b099e35f8fe56, ``beats/BEATs.py``
  (``BEATsConfig`` defaults, ``preprocess``, patch embedding, ``extract_features``),
  ``beats/backbone.py`` (``TransformerEncoder``, ``TransformerSentenceEncoderLayer``,
  ``MultiheadAttention``: relative buckets, gated relative bias, the q-scaling trick, DeepNorm),
  ``beats/modules.py`` (``SamePad``, ``gelu``).
- ceciliabolanos/easyaudio @4948b337821c2ae7d89a8b1acd2f4b499421dfc5 ``models/beats/BEATs.py``
  (the authors' copy: ``extract_features(..., tgt_layer)``) and
  @0bb3b51f6e122ed2a401b21c585ecf484a83248b ``easyaudio/models/__init__.py`` (``BEATsWrapped``:
  HF ``lpepino/beats_ckpts/<key>.pt``, ``torch.load`` then ``BEATs(BEATsConfig(ckpt['cfg']))``,
  ``extract_features(x, padding_mask=zeros, tgt_layer=100)``, one (tokens, 768) array per layer).
- /work/shared/docs/paper-models.md section 3.2, section 1.2 row "BEATs tokens", section 4.2.

**Container.** ``{'cfg': dict, 'model': state dict}``; the fine-tuned file adds ``'label_dict'``
(read, only its size is recorded). Read with ``torch.load(weights_only=True)`` after the sha256
check, memory-mapped (zip checkpoints; a legacy file is read whole); the network is built on
the ``meta`` device from ``cfg`` (missing keys take the ``BEATsConfig`` defaults, as upstream)
and the tensors are adopted (``assign=True``): the weights are never held twice. The
architecture-defining cfg values are checked against the spec's ``config``.

**Architecture** (module and key names map 1:1 to the upstream state dict, no remap):

- front end (:data:`brainalign.models.frontends.kaldi.BEATS`): waveform * 2^15, Kaldi fbank
  (128 bins, 25/10 ms, povey, dither 0, snip_edges), ``(fbank - 15.41663) / (2 * 6.55582)``,
  one clip at a time (2 s -> 198 frames);
- ``patch_embedding`` Conv2d(1, 512, 16, stride 16, no bias) -> tokens time-major with the 8
  frequency patches fastest (2 s -> 12 x 8 = 96 tokens; the last 6 frames are dropped) ->
  ``layer_norm`` (512) -> ``post_extract_proj`` 512 -> 768;
- ``encoder``: x + ``pos_conv``(x), ``pos_conv`` = weight-normed Conv1d(768, 768, 128, pad 64,
  groups 16) -> SamePad (drops the last frame) -> GELU. The weight norm keeps the upstream
  parameter names ``weight_g`` [1, 1, 128] / ``weight_v`` and is computed here,
  ``weight = g * v / ||v||`` with the norm over dims 0 and 1 (``nn.utils.weight_norm(dim=2)``),
  so the old names load as they are. Then ``encoder.layer_norm`` (post-LN models);
- 12 post-LN DeepNorm blocks: x = LN(alpha * x + Attn(x)); x = LN(alpha * x + FC2(GELU(FC1(x))))
  with alpha = (2 * layers)^(1/4) (about 2.213); pre-LN (``layer_norm_first``) is supported
  as upstream (then alpha = 1 and no input norm);
- attention: q/k/v/out projections with bias; logits q.k / sqrt(head_dim) plus the gated
  relative position bias, softmax. Upstream scales q by head_dim^-0.5 / 32 and the logits by
  (qk - rowmax) * 32: a constant per row, so it equals this plain softmax (fp16 stability only).
  The T5-style bidirectional bucketed bias (``num_buckets``, ``max_distance`` from cfg) comes
  from ONE embedding owned by block 0 (blocks 1.. alias it: one tensor, a key per block, the
  file's copies must be equal); it is computed once per forward and passed to every block. Per
  block gate: ``gate_a, gate_b = sigmoid(sum over 4 of grep_linear(q) viewed (B, H, T, 2, 4))``
  on the unscaled q; bias' = (gate_a * (gate_b * grep_a - 1) + 2) * bias;
- the fine-tuned ``predictor`` (768 -> 527) is loaded (strictness) but not tapped.

**Layers** (the authors' copy, ``tgt_layer``): ``"0"`` = the input to block 0 (after the
pos_conv residual and ``encoder.layer_norm``), ``"1"``..``"12"`` = the block outputs, no final
norm. The authors pass an all-zero padding mask, which changes nothing; none is used here.
Nothing depends on the batch (per-clip fbank, no padding), so equal-length clips are batched.

**Options** (``extract.options.<model>``):

- ``token_pooling``: ``mean`` (default; paper-models section 1.2, unverified which the paper
  used): the mean over all tokens (= the time mean of the per-step frequency means), 768-d;
  ``frequency``: keep the frequency patches, time mean per patch, flattened patch-major
  (index = patch * 768 + channel), 8 * 768 = 6144-d.

``min_samples`` = 2800 (16 fbank frames = one patch row, 8 tokens).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import cache
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from brainalign.errors import InputError
from brainalign.models.base import Runner
from brainalign.models.frontends.kaldi import BEATS as FBANK
from brainalign.models.spec import BuildContext, ModelSpec
from brainalign.models.weights import (
    check_config,
    expect_keys,
    load_strict,
    safe_load,
    weight_file,
)

if TYPE_CHECKING:
    from pathlib import Path

    import torch

SAMPLE_RATE = 16_000
HF_REPO = "lpepino/beats_ckpts"
LAYERS = tuple(str(i) for i in range(13))  # 0 = input to block 0, 1..12 = block outputs
TOKEN_POOLINGS = ("mean", "frequency")
OPTIONS = ("token_pooling",)

CFG_DEFAULTS: Mapping[str, Any] = {
    "input_patch_size": -1, "embed_dim": 512, "conv_bias": False,
    "encoder_layers": 12, "encoder_embed_dim": 768, "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12, "activation_fn": "gelu",
    "layer_wise_gradient_decay_ratio": 1.0, "layer_norm_first": False, "deep_norm": False,
    "dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0, "dropout_input": 0.0,
    "conv_pos": 128, "conv_pos_groups": 16,
    "relative_position_embedding": False, "num_buckets": 320, "max_distance": 1280,
    "gru_rel_pos": False,
    "finetuned_model": False, "predictor_dropout": 0.1, "predictor_class": 527,
}
"""UNILM ``BEATsConfig`` defaults: what a key absent from ``ckpt['cfg']`` means."""

ARCH_KEYS = (
    "input_patch_size", "embed_dim", "conv_bias", "encoder_layers", "encoder_embed_dim",
    "encoder_ffn_embed_dim", "encoder_attention_heads", "activation_fn", "layer_norm_first",
    "deep_norm", "conv_pos", "conv_pos_groups", "relative_position_embedding", "num_buckets",
    "max_distance", "gru_rel_pos", "finetuned_model", "predictor_class",
)
"""The cfg keys that define the network (recorded in the provenance)."""

PAPER_CONFIG: Mapping[str, Any] = {
    "input_patch_size": 16, "embed_dim": 512, "conv_bias": False,
    "encoder_layers": 12, "encoder_embed_dim": 768, "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12, "activation_fn": "gelu",
    "layer_norm_first": False, "deep_norm": True,
    "conv_pos": 128, "conv_pos_groups": 16,
    "relative_position_embedding": True, "num_buckets": 320, "max_distance": 800,
    "gru_rel_pos": True,
}
"""The iter3 / iter3+AS2M cfg (paper-models 3.2; the iter1 / iter2 cfgs were not seen)."""

_MODELS = (
    ("BEATs_iter1", "BEATs (B)", "self-supervised"),
    ("BEATs_iter2", "BEATs (It 2)", "self-supervised"),
    ("BEATs_iter3", "BEATs (It 3)", "self-supervised"),
    ("BEATs_iter3_finetuned_on_AS2M_cpt1", "BEATs (FT)", "supervised"),
)


# --------------------------------------------------------------------------- configuration
def read_cfg(raw: Any, path: str | Path, model: str) -> dict[str, Any]:
    """``ckpt['cfg']`` over the upstream defaults, validated enough to build a network."""
    if not isinstance(raw, Mapping):
        raise InputError(path, f"{model}: 'cfg' must be a dict, got {type(raw).__name__}")
    cfg = {**CFG_DEFAULTS, **{str(k): v for k, v in raw.items()}}
    problems = []
    for key in ("input_patch_size", "embed_dim", "encoder_layers", "encoder_embed_dim",
                "encoder_ffn_embed_dim", "encoder_attention_heads", "conv_pos",
                "conv_pos_groups", "num_buckets", "max_distance", "predictor_class"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 1:
            problems.append(f"{key}={cfg[key]!r} (expected a positive integer)")
    if not problems:
        if cfg["encoder_embed_dim"] % cfg["encoder_attention_heads"]:
            problems.append("encoder_embed_dim not divisible by encoder_attention_heads")
        if cfg["encoder_embed_dim"] % cfg["conv_pos_groups"]:
            problems.append("encoder_embed_dim not divisible by conv_pos_groups")
        if cfg["num_buckets"] < 4 or cfg["max_distance"] <= cfg["num_buckets"] // 4:
            problems.append("num_buckets / max_distance out of range")
        if cfg["input_patch_size"] > FBANK.num_mel_bins:
            problems.append(f"input_patch_size > {FBANK.num_mel_bins} mel bins")
    if cfg["activation_fn"] != "gelu":
        problems.append(f"activation_fn={cfg['activation_fn']!r} (only 'gelu' is implemented)")
    if cfg["deep_norm"] and cfg["layer_norm_first"]:
        problems.append("deep_norm and layer_norm_first are exclusive (upstream assertion)")
    if problems:
        raise InputError(path, f"unsupported BEATs cfg for {model!r}: " + "; ".join(problems))
    return cfg


def min_samples(cfg: Mapping[str, Any]) -> int:
    """Shortest input giving one patch row: ``input_patch_size`` fbank frames."""
    window = int(FBANK.sample_frequency * FBANK.frame_length / 1000)
    shift = int(FBANK.sample_frequency * FBANK.frame_shift / 1000)
    return window + (int(cfg["input_patch_size"]) - 1) * shift


def token_grid(n_samples: int, cfg: Mapping[str, Any]) -> tuple[int, int, int]:
    """(fbank frames, time patches, frequency patches) for an input of ``n_samples``."""
    frames = FBANK.n_frames(n_samples)
    patch = int(cfg["input_patch_size"])
    return frames, frames // patch, FBANK.num_mel_bins // patch


def deep_norm_alpha(cfg: Mapping[str, Any]) -> float:
    """DeepNorm residual scale (2 * layers)^(1/4), or 1 without DeepNorm."""
    return math.pow(2 * int(cfg["encoder_layers"]), 0.25) if cfg["deep_norm"] else 1.0


def relative_buckets(relative: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5 bidirectional buckets of ``relative`` = key position - query position.

    Half of the buckets per direction (positive offsets in the upper half); offsets below a
    quarter of ``num_buckets`` get their own bucket, larger ones share log-spaced buckets up to
    ``max_distance`` (clamped to the last bucket of their half).
    """
    import torch

    half = num_buckets // 2
    exact = half // 2
    out = (relative > 0).to(torch.long) * half
    dist = relative.abs()
    scaled = (torch.log(dist.clamp(min=1).float() / exact) / math.log(max_distance / exact)
              * (half - exact))
    large = (exact + scaled.to(torch.long)).clamp(max=half - 1)
    return out + torch.where(dist < exact, dist, large)


# --------------------------------------------------------------------------- network
@cache
def _classes() -> SimpleNamespace:
    """The nn.Module classes (defined on first use: listing models never imports torch)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class WeightNormConv1d(nn.Module):
        """Conv1d with ``weight = weight_g * weight_v / ||weight_v||`` (norm over dims 0, 1)."""

        def __init__(self, channels: int, kernel: int, groups: int) -> None:
            super().__init__()
            self.padding, self.groups = kernel // 2, groups
            self.weight_g = nn.Parameter(torch.empty(1, 1, kernel))
            self.weight_v = nn.Parameter(torch.empty(channels, channels // groups, kernel))
            self.bias = nn.Parameter(torch.zeros(channels))
            if not self.weight_v.is_meta:  # on meta (checkpoint loading) nothing to draw
                self.reset_parameters()

        def reset_parameters(self) -> None:
            """Upstream's initialisation: v ~ N(0, 4 / (kernel * channels)), g = ||v||."""
            channels, _, kernel = self.weight_v.shape
            with torch.no_grad():
                self.weight_v.normal_(0.0, math.sqrt(4 / (kernel * channels)))
                self.weight_g.copy_(self.weight_v.norm(dim=(0, 1), keepdim=True))

        def weight(self) -> torch.Tensor:
            v = self.weight_v
            return v * (self.weight_g / v.norm(dim=(0, 1), keepdim=True))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.conv1d(x, self.weight(), self.bias, padding=self.padding, groups=self.groups)

    class SamePad(nn.Module):
        """Drop the extra last frame an even kernel with padding k // 2 produces."""

        def __init__(self, kernel: int) -> None:
            super().__init__()
            self.remove = 1 if kernel % 2 == 0 else 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :, :-self.remove] if self.remove else x

    class Attention(nn.Module):
        """Multi-head self-attention with the (gated) shared relative position bias."""

        def __init__(self, cfg: Mapping[str, Any], owns_bias: bool) -> None:
            super().__init__()
            dim, self.heads = cfg["encoder_embed_dim"], cfg["encoder_attention_heads"]
            self.head_dim = dim // self.heads
            self.scaling = self.head_dim ** -0.5
            self.q_proj, self.k_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
            self.v_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
            self.num_buckets, self.max_distance = cfg["num_buckets"], cfg["max_distance"]
            if cfg["relative_position_embedding"] and owns_bias:
                self.relative_attention_bias = nn.Embedding(self.num_buckets, self.heads)
            self.gated = bool(cfg["gru_rel_pos"])
            if self.gated:
                self.grep_linear = nn.Linear(self.head_dim, 8)
                self.grep_a = nn.Parameter(torch.ones(1, self.heads, 1, 1))

        def compute_bias(self, queries: int, keys: int) -> torch.Tensor:
            """(heads, queries, keys) relative position bias of this module's embedding."""
            table = self.relative_attention_bias.weight
            pos_q = torch.arange(queries, device=table.device)[:, None]
            pos_k = torch.arange(keys, device=table.device)[None, :]
            buckets = relative_buckets(pos_k - pos_q, self.num_buckets, self.max_distance)
            return F.embedding(buckets, table).permute(2, 0, 1)

        def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
            b, t, _ = x.shape

            def heads(y: torch.Tensor) -> torch.Tensor:
                return y.view(b, t, self.heads, self.head_dim).transpose(1, 2)

            q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
            logits = (q * self.scaling) @ k.transpose(-1, -2)
            if bias is not None:
                if self.gated:
                    gates = torch.sigmoid(self.grep_linear(q).view(b, self.heads, t, 2, 4).sum(-1))
                    gate_a, gate_b = gates[..., :1], gates[..., 1:]
                    bias = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * bias
                logits = logits + bias
            out = torch.softmax(logits, dim=-1) @ v
            return self.out_proj(out.transpose(1, 2).reshape(b, t, -1))

    class Block(nn.Module):
        """One transformer block: post-LN with DeepNorm residual scaling, or pre-LN."""

        def __init__(self, cfg: Mapping[str, Any], owns_bias: bool) -> None:
            super().__init__()
            dim, ffn = cfg["encoder_embed_dim"], cfg["encoder_ffn_embed_dim"]
            self.self_attn = Attention(cfg, owns_bias)
            self.self_attn_layer_norm = nn.LayerNorm(dim)
            self.fc1, self.fc2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)
            self.final_layer_norm = nn.LayerNorm(dim)
            self.pre_norm = bool(cfg["layer_norm_first"])
            self.alpha = deep_norm_alpha(cfg)

        def ffn(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(F.gelu(self.fc1(x).float()).type_as(x))

        def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
            if self.pre_norm:
                x = x + self.self_attn(self.self_attn_layer_norm(x), bias)
                return x + self.ffn(self.final_layer_norm(x))
            x = self.self_attn_layer_norm(self.alpha * x + self.self_attn(x, bias))
            return self.final_layer_norm(self.alpha * x + self.ffn(x))

    class Encoder(nn.Module):
        """Convolutional position embedding, input norm and the blocks."""

        def __init__(self, cfg: Mapping[str, Any]) -> None:
            super().__init__()
            dim, kernel = cfg["encoder_embed_dim"], cfg["conv_pos"]
            self.pos_conv = nn.Sequential(WeightNormConv1d(dim, kernel, cfg["conv_pos_groups"]),
                                          SamePad(kernel), nn.GELU())
            self.layers = nn.ModuleList(Block(cfg, owns_bias=i == 0)
                                        for i in range(cfg["encoder_layers"]))
            self.relative = bool(cfg["relative_position_embedding"])
            if self.relative:  # one embedding, a state-dict key per block (as upstream)
                for block in self.layers[1:]:
                    block.self_attn.relative_attention_bias = (
                        self.layers[0].self_attn.relative_attention_bias)
            self.layer_norm = nn.LayerNorm(dim)
            self.pre_norm = bool(cfg["layer_norm_first"])

        def forward(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
            """(B, T, D) tokens -> [input to block 0, block 1 output, ...] up to ``upto``."""
            x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
            if not self.pre_norm:
                x = self.layer_norm(x)
            states = [x]
            first = self.layers[0].self_attn
            bias = first.compute_bias(x.shape[1], x.shape[1]) if self.relative else None
            for block in self.layers[: len(self.layers) if upto is None else upto]:
                x = block(x, bias)
                states.append(x)
            return states

    class BEATsNet(nn.Module):
        """Patch embedding, projection and encoder (+ the fine-tuned predictor)."""

        def __init__(self, cfg: Mapping[str, Any]) -> None:
            super().__init__()
            embed, dim, patch = cfg["embed_dim"], cfg["encoder_embed_dim"], cfg["input_patch_size"]
            self.patch = patch
            self.patch_embedding = nn.Conv2d(1, embed, kernel_size=patch, stride=patch,
                                             bias=bool(cfg["conv_bias"]))
            self.layer_norm = nn.LayerNorm(embed)
            self.post_extract_proj = nn.Linear(embed, dim) if embed != dim else None
            self.encoder = Encoder(cfg)
            self.predictor = (nn.Linear(dim, cfg["predictor_class"])
                              if cfg["finetuned_model"] else None)

        def tokens(self, fbank: torch.Tensor) -> torch.Tensor:
            """(B, frames, mel) normalised fbank -> (B, time * freq patches, D) tokens."""
            x = self.patch_embedding(fbank.unsqueeze(1))  # (B, E, T', F')
            x = self.layer_norm(x.flatten(2).transpose(1, 2))  # time-major, frequency fastest
            return self.post_extract_proj(x) if self.post_extract_proj is not None else x

        def forward(self, fbank: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
            return self.encoder(self.tokens(fbank), upto)

    return SimpleNamespace(WeightNormConv1d=WeightNormConv1d, SamePad=SamePad,
                           Attention=Attention, Block=Block, Encoder=Encoder, BEATsNet=BEATsNet)


def build_network(cfg: Mapping[str, Any]) -> torch.nn.Module:
    """The BEATs network of a (validated) cfg, on the current default device."""
    return _classes().BEATsNet(cfg)


def features(audio: torch.Tensor) -> torch.Tensor:
    """(B, samples) waveforms in [-1, 1] -> (B, frames, 128) normalised fbank, clip by clip."""
    import torch

    from brainalign.models.frontends.kaldi import fbank

    return torch.stack([fbank(clip, FBANK) for clip in audio])


# --------------------------------------------------------------------------- runner
class BEATsRunner(Runner):
    """Fbank -> patches -> encoder; every tapped layer pooled over its tokens."""

    def __init__(self, spec: ModelSpec, device: torch.device, net: torch.nn.Module,
                 cfg: Mapping[str, Any], token_pooling: str = "mean",
                 provenance: Mapping[str, Any] | None = None) -> None:
        super().__init__(spec, device)
        available = [str(i) for i in range(int(cfg["encoder_layers"]) + 1)]
        if [k for k in self.layers if k not in available]:
            raise InputError(spec.name, f"spec layers {list(self.layers)} need "
                             f"{len(self.layers) - 1} blocks, the cfg has {cfg['encoder_layers']}")
        self.net = net.to(device).float().eval()
        self.cfg = dict(cfg)
        self.token_pooling = token_pooling
        self.freq_patches = FBANK.num_mel_bins // int(cfg["input_patch_size"])
        self.provenance = dict(provenance or {})

    def states(self, audio: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """(B, samples) -> [(B, tokens, D)] for layer 0 .. ``upto`` (all by default)."""
        return self.net(features(audio), upto)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """(B, tokens, D) -> (B, D) (``mean``) or (B, freq patches * D) (``frequency``)."""
        if self.token_pooling == "mean":
            return x.mean(dim=1)
        b, n, d = x.shape
        return x.view(b, n // self.freq_patches, self.freq_patches, d).mean(dim=1).flatten(1)

    def forward(self, audio: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        states = self.states(audio, max(int(k) for k in layers))
        return {k: self.pool(states[int(k)]) for k in layers}

    def info(self) -> dict[str, Any]:
        frames, rows, freq = token_grid(2 * SAMPLE_RATE, self.cfg)
        return {
            "cfg": {k: self.cfg[k] for k in ARCH_KEYS},
            "token_pooling": self.token_pooling,
            "frames_2s": frames, "tokens_2s": rows * freq, "frequency_patches": freq,
            "deep_norm_alpha": deep_norm_alpha(self.cfg),
            "layer_0": "input to block 0 after the pos_conv residual and encoder.layer_norm",
            **self.provenance,
        }


def parse_options(spec: ModelSpec, options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``extract.options.<model>``: only ``token_pooling`` (mean | frequency)."""
    unknown = sorted(str(k) for k in options if k not in OPTIONS)
    if unknown:
        raise InputError(f"extract.options.{spec.name}.{unknown[0]}",
                         f"unknown option for a BEATs model (options: {list(OPTIONS)})")
    pooling = options.get("token_pooling", "mean")
    if pooling not in TOKEN_POOLINGS:
        raise InputError(f"extract.options.{spec.name}.token_pooling",
                         f"expected one of {list(TOKEN_POOLINGS)}, got {pooling!r}")
    return {"token_pooling": pooling}


def load_checkpoint(spec: ModelSpec, path: Path) -> tuple[torch.nn.Module, dict[str, Any], Any]:
    """Verified file -> (network with the file's tensors, cfg, label_dict or None)."""
    import torch

    ckpt = safe_load(path)  # memory-mapped when a zip checkpoint (torch >= 1.6), as expected
    expect_keys(ckpt, ("cfg", "model"), path, "BEATs checkpoint {cfg, model}")
    cfg = read_cfg(ckpt["cfg"], path, spec.name)
    check_config(cfg, spec.config, path=path, model=spec.name)
    state = ckpt["model"]
    if not isinstance(state, Mapping):
        raise InputError(path, f"{spec.name}: 'model' must be a state dict")
    if cfg["relative_position_embedding"]:
        shared = [k for k in state if k.startswith("encoder.layers.")
                  and k.endswith(".self_attn.relative_attention_bias.weight")]
        first = state.get("encoder.layers.0.self_attn.relative_attention_bias.weight")
        differ = [k for k in shared if first is not None and hasattr(state[k], "shape")
                  and (state[k].shape != first.shape or not torch.equal(state[k], first))]
        if differ:
            raise InputError(path, f"checkpoint does not fit model {spec.name!r}: the shared "
                             f"relative position bias differs in {differ[0]!r} (one tensor "
                             "for all blocks expected)")
    with torch.device("meta"):
        net = build_network(cfg)
    load_strict(net, state, path=path, model=spec.name, assign=True)
    return net, cfg, ckpt.get("label_dict")


def build(spec: ModelSpec, ctx: BuildContext) -> Runner:
    """Options: ``token_pooling`` = ``mean`` (default) | ``frequency``."""
    opts = parse_options(spec, ctx.options)
    path = weight_file(spec, ctx, f"{spec.name}.pt")
    net, cfg, labels = load_checkpoint(spec, path)
    provenance = {"checkpoint": path.name,
                  "label_dict_size": len(labels) if hasattr(labels, "__len__") else None}
    return BEATsRunner(spec, ctx.device, net, cfg, opts["token_pooling"], provenance)


SPECS = [
    ModelSpec(
        name=key, label=label, family="BEATs", training=training, sample_rate=SAMPLE_RATE,
        layers=LAYERS, paper_keys={i: f"{key}_{i}" for i in LAYERS},
        build="brainalign.models.beats:build", fetched=True,
        frontend="brainalign.models.frontends.kaldi",
        config={**PAPER_CONFIG, "finetuned_model": training == "supervised",
                **({"predictor_class": 527} if training == "supervised" else {})},
        min_samples=min_samples(PAPER_CONFIG),
        options={"token_pooling": "mean"},
        description=(f"BEATs {key}, HF {HF_REPO}/{key}.pt (the authors' mirror of the UNILM "
                     "files); 13 taps (input to block 0, 12 block outputs), mean over tokens"),
    )
    for key, label, training in _MODELS
]
