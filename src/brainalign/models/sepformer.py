"""SepFormer trained on WHAMR! (speechbrain/sepformer-whamr), as Tuckute et al. 2023 tapped it.

Our own port of the speechbrain modules the checkpoint was trained with (speechbrain is not
imported: it pulls in hyperpyyaml/sentencepiece/huggingface_hub, which the pipeline never uses;
the tests check the port against speechbrain 0.5.16 on the same random weights).

Sources of the facts
- Architecture: speechbrain 0.5.10 (Tuckute's pin; PyPI wheel), ``lobes/models/dual_path.py``
  (``Encoder``, ``SBTransformerBlock``, ``Dual_Computation_Block``, ``Dual_Path_Model`` with
  ``_padding``/``_Segmentation``/``_over_add``, ``select_norm('ln')`` = GroupNorm(1, C, 1e-8)),
  ``lobes/models/transformer/Transformer.py`` (``PositionalEncoding`` max_len 2500,
  ``TransformerEncoderLayer`` pre-norm when ``normalize_before``, ``TransformerEncoder`` final
  LayerNorm eps 1e-6), ``nnet/attention.py`` (``MultiheadAttention`` = torch's, seq-first;
  ``PositionalwiseFeedForward`` = Linear, ReLU, Dropout, Linear on seq-first input),
  ``nnet/normalization.py`` (``LayerNorm`` wraps ``torch.nn.LayerNorm`` as ``.norm``). The
  files we rely on differ in 0.5.16 only by a configurable norm eps (same default), the pad's
  device and the MHA return path: no numerical difference.
- Checkpoint: HF ``speechbrain/sepformer-whamr`` at main: ``encoder.ckpt`` (flat state dict,
  ``conv1d.weight`` [256,1,16]), ``masknet.ckpt`` (flat state dict of ``Dual_Path_Model``, the
  four ``pos_enc.pe`` buffers [1,2500,256] probably stored), ``hyperparams.yaml`` (HyperPyYAML;
  read here as data only, every ``!new:``/``!name:``/``!ref`` tag mapped to an inert node).
- Taps: gretatuckute/speechbrain_activation_extraction @f211be9 ``run_models.py`` l.150-185 and
  ``extractor_utils.detach_activations_sepformer`` (paper-models.md section 3.13).

Forward (2-s clip at 8 kHz): Encoder Conv1d(1,256,k16,s8,no bias) -> ReLU -> (1,256,1999);
GroupNorm -> 1x1 conv -> 50 %-overlap chunks of K=250 (gap 126 + 125 on both sides: 18 chunks);
two dual-path blocks, each intra (chunk-local) then inter (across chunks) SBTransformerBlock of 8
pre-norm layers (d 256, 8 heads, FFN 1024) with sinusoidal positions, GroupNorm and skips. The
mask back end (PReLU, conv2d, overlap-add, gates) is ported too (``MaskNet.forward``), but the
taps stop at the last requested layer.

Layers (the paper's ``layer_map``)
- ``Embedding`` (``Conv1d(1, 256, ...)--0``): the encoder output, time mean -> 256. Tuckute
  edited speechbrain's Encoder to an in-place ReLU, so her hook saw the POST-ReLU tensor.
  Option ``embedding``: ``post_relu`` (default, her edit) | ``pre_relu`` (stock speechbrain).
- ``Encoder_1..32`` (``Linear(in_features=1024, out_features=256, bias=True)--0..31``): each
  transformer layer's second FFN linear (``pos_ffn.ffn.3``) BEFORE the residual add, averaged
  over all chunk x position entries (padding and overlap included, as her ``np.mean`` over
  both axes) -> 256. Order: block 0 intra layers 0-7, block 0 inter, block 1 intra, block 1
  inter.

Decisions
- ``pe``: the buffers are recomputed; when ``masknet.ckpt`` stores them they are checked
  against the recomputed ones (max |diff| <= 1e-4, else an error) and the stored values are
  used (what speechbrain loads).
- One clip at a time (the paper's loop); the model has no batch-dependent step, this only
  rules out rounding differences between batch sizes.
- The model is built on the meta device and adopts the checkpoint's tensors
  (``load_strict(assign=True)`` after an mmap'd ``torch.load(weights_only=True)``).
- Attention runs as ``torch.nn.MultiheadAttention`` (batch-first, no weights returned):
  the same parameters and maths as speechbrain's seq-first call; float32 differences ~1e-6.

Options (``extract.options.braindnn_sepformer``): ``embedding`` (above).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from brainalign.errors import InputError
from brainalign.models.base import Runner
from brainalign.models.hyperparams import new_args, read_hyperparams
from brainalign.models.spec import BuildContext, ModelSpec

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 8_000
HF_REPO = "speechbrain/sepformer-whamr"
LAYERS = ("Embedding", *(f"Encoder_{i}" for i in range(1, 33)))
PAPER_KEYS = {
    "Embedding": "Conv1d(1, 256, kernel_size=(16,), stride=(8,), bias=False)--0",
    **{f"Encoder_{i}": f"Linear(in_features=1024, out_features=256, bias=True)--{i - 1}"
       for i in range(1, 33)},
}
FILES = ("encoder.ckpt", "masknet.ckpt", "hyperparams.yaml")
EMBEDDING_CHOICES = ("post_relu", "pre_relu")
OPTIONS = {"embedding": "post_relu"}
GROUPNORM_EPS = 1e-8  # select_norm("ln")
LAYERNORM_EPS = 1e-6  # TransformerEncoderLayer / TransformerEncoder norms
PE_MAX_LEN = 2500  # PositionalEncoding default
PE_TOLERANCE = 1e-4

# --------------------------------------------------------------------------- hyperparams.yaml
# Speechbrain's classes and their keyword defaults (0.5.10 signatures): a key the file leaves
# out takes the default; a key we do not know is refused (it could change the architecture).
ENCODER_CLASS = "speechbrain.lobes.models.dual_path.Encoder"
MASKNET_CLASS = "speechbrain.lobes.models.dual_path.Dual_Path_Model"
BLOCK_CLASS = "speechbrain.lobes.models.dual_path.SBTransformerBlock"
ENCODER_DEFAULTS: dict[str, Any] = {"kernel_size": 2, "out_channels": 64, "in_channels": 1}
BLOCK_DEFAULTS: dict[str, Any] = {
    "num_layers": None, "d_model": None, "nhead": None, "d_ffn": 2048, "input_shape": None,
    "kdim": None, "vdim": None, "dropout": 0.1, "activation": "relu",
    "use_positional_encoding": False, "norm_before": False, "attention_type": "regularMHA",
}
MASKNET_DEFAULTS: dict[str, Any] = {
    "in_channels": None, "out_channels": None, "intra_model": None, "inter_model": None,
    "num_layers": 1, "norm": "ln", "K": 200, "num_spks": 2, "skip_around_intra": True,
    "linear_layer_after_inter_intra": True, "use_global_pos_enc": False, "max_length": 20000,
}
# What this port implements (any real or reduced config must have these values).
STRUCTURE: dict[str, Any] = {
    "encoder.in_channels": 1, "masknet.norm": "ln", "masknet.skip_around_intra": True,
    "masknet.linear_layer_after_inter_intra": False, "masknet.use_global_pos_enc": False,
    **{f"{side}.{k}": v for side in ("intra", "inter") for k, v in {
        "input_shape": None, "kdim": None, "vdim": None, "activation": "relu",
        "use_positional_encoding": True, "norm_before": True, "attention_type": "regularMHA",
    }.items()},
}


def _side_config(num_layers: int, d_model: int, nhead: int, d_ffn: int) -> dict[str, Any]:
    return {"num_layers": num_layers, "d_model": d_model, "nhead": nhead, "d_ffn": d_ffn,
            "dropout": 0}


def make_config(*, channels: int = 256, kernel_size: int = 16, blocks: int = 2,
                layers: int = 8, nhead: int = 8, d_ffn: int = 1024, chunk: int = 250,
                num_spks: int = 2) -> dict[str, Any]:
    """The flat config (our key names) of a SepFormer of the given size; defaults = whamr."""
    cfg: dict[str, Any] = {
        "sample_rate": SAMPLE_RATE,
        "encoder.kernel_size": kernel_size, "encoder.out_channels": channels,
        "masknet.in_channels": channels, "masknet.out_channels": channels,
        "masknet.num_layers": blocks, "masknet.K": chunk, "masknet.num_spks": num_spks,
        "masknet.max_length": MASKNET_DEFAULTS["max_length"],
    }
    for side in ("intra", "inter"):
        cfg.update({f"{side}.{k}": v
                    for k, v in _side_config(layers, channels, nhead, d_ffn).items()})
    cfg.update(STRUCTURE)
    return dict(sorted(cfg.items()))


def config_from_hyperparams(hp: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The flat architecture config (``make_config`` keys) of a sepformer hyperparams file."""
    modules = hp.get("modules")
    if not isinstance(modules, Mapping) or "encoder" not in modules or "masknet" not in modules:
        raise InputError(where, "expected 'modules' with 'encoder' and 'masknet' entries")
    enc = new_args(modules["encoder"], hp, ENCODER_CLASS, ENCODER_DEFAULTS, where)
    mask = new_args(modules["masknet"], hp, MASKNET_CLASS, MASKNET_DEFAULTS, where)
    cfg: dict[str, Any] = {"sample_rate": hp.get("sample_rate")}
    cfg.update({f"encoder.{k}": v for k, v in enc.items()})
    for side in ("intra", "inter"):
        block = new_args(mask.pop(f"{side}_model"), hp, BLOCK_CLASS, BLOCK_DEFAULTS,
                         f"{where} ({side}_model)")
        cfg.update({f"{side}.{k}": v for k, v in block.items()})
    cfg.update({f"masknet.{k}": v for k, v in mask.items()})
    return dict(sorted(cfg.items()))


def _validate_config(cfg: Mapping[str, Any], where: str) -> None:
    wrong = [f"{k}={cfg.get(k)!r} (this port implements {v!r})" for k, v in STRUCTURE.items()
             if cfg.get(k) != v]
    if cfg["masknet.in_channels"] != cfg["encoder.out_channels"]:
        wrong.append("masknet.in_channels must equal encoder.out_channels")
    for side in ("intra", "inter"):
        if cfg[f"{side}.d_model"] != cfg["masknet.out_channels"]:
            wrong.append(f"{side}.d_model must equal masknet.out_channels")
        if cfg[f"{side}.d_model"] % cfg[f"{side}.nhead"]:
            wrong.append(f"{side}.d_model must be a multiple of {side}.nhead")
    if wrong:
        raise InputError(where, "unsupported SepFormer config: " + "; ".join(wrong))


# --------------------------------------------------------------------------- shapes
def encoder_frames(samples: int, kernel_size: int = 16) -> int:
    """Encoder frames for ``samples`` input samples (stride = kernel_size // 2, no padding)."""
    stride = kernel_size // 2
    return (samples - kernel_size) // stride + 1 if samples >= kernel_size else 0


def chunking(frames: int, K: int = 250) -> tuple[int, int]:
    """(gap, number of chunks S) of Dual_Path_Model's segmentation of ``frames`` frames."""
    P = K // 2
    gap = K - (P + frames % K) % K
    padded = frames + gap + 2 * P
    return gap, 2 * ((padded - P) // K)


def pe_table(max_len: int, d_model: int) -> torch.Tensor:
    """speechbrain's sinusoidal PositionalEncoding buffer (1, max_len, d_model), float32."""
    import torch

    pe = torch.zeros(max_len, d_model)
    positions = torch.arange(0, max_len).unsqueeze(1).float()
    denominator = torch.exp(torch.arange(0, d_model, 2).float()
                            * -(math.log(10000.0) / d_model))
    pe[:, 0::2] = torch.sin(positions * denominator)
    pe[:, 1::2] = torch.cos(positions * denominator)
    return pe.unsqueeze(0)


def layer_order(cfg: Mapping[str, Any]) -> list[tuple[int, str, int]]:
    """(block, side, layer) of Encoder_1, Encoder_2, ... in Tuckute's forward-call order."""
    return [(b, side, i) for b in range(cfg["masknet.num_layers"])
            for side in ("intra", "inter") for i in range(cfg[f"{side}.num_layers"])]


def spec_layers(cfg: Mapping[str, Any]) -> tuple[str, ...]:
    return ("Embedding", *(f"Encoder_{i + 1}" for i in range(len(layer_order(cfg)))))


# --------------------------------------------------------------------------- the network
@functools.cache
def nets() -> SimpleNamespace:
    """The network classes (defined on first use, so that listing models never imports torch).

    Module and attribute names follow speechbrain's, so the checkpoints' keys load 1:1.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    class LayerNorm(nn.Module):
        """speechbrain.nnet.normalization.LayerNorm: torch's LayerNorm held as ``.norm``."""

        def __init__(self, size: int, eps: float) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(size, eps=eps)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(x)

    class FeedForward(nn.Module):
        """PositionalwiseFeedForward: ``ffn`` = Linear, ReLU, Dropout, Linear."""

        def __init__(self, d_model: int, d_ffn: int, dropout: float) -> None:
            super().__init__()
            self.ffn = nn.Sequential(nn.Linear(d_model, d_ffn), nn.ReLU(), nn.Dropout(dropout),
                                     nn.Linear(d_ffn, d_model))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.ffn(x)

    class SelfAttention(nn.Module):
        """speechbrain.nnet.attention.MultiheadAttention: torch's MHA held as ``.att``."""

        def __init__(self, d_model: int, nhead: int, dropout: float) -> None:
            super().__init__()
            self.att = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.att(x, x, x, need_weights=False)[0]

    class EncoderLayer(nn.Module):
        """Pre-norm TransformerEncoderLayer; returns (output, FFN output before the residual)."""

        def __init__(self, d_model: int, nhead: int, d_ffn: int, dropout: float) -> None:
            super().__init__()
            self.self_att = SelfAttention(d_model, nhead, dropout)
            self.pos_ffn = FeedForward(d_model, d_ffn, dropout)
            self.norm1 = LayerNorm(d_model, LAYERNORM_EPS)
            self.norm2 = LayerNorm(d_model, LAYERNORM_EPS)

        def forward(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            src = src + self.self_att(self.norm1(src))
            ffn = self.pos_ffn(self.norm2(src))
            return src + ffn, ffn

    class TransformerEncoder(nn.Module):
        def __init__(self, num_layers: int, d_model: int, nhead: int, d_ffn: int,
                     dropout: float) -> None:
            super().__init__()
            self.layers = nn.ModuleList(EncoderLayer(d_model, nhead, d_ffn, dropout)
                                        for _ in range(num_layers))
            self.norm = LayerNorm(d_model, LAYERNORM_EPS)

        def forward(self, x: torch.Tensor, taps: list[torch.Tensor] | None = None
                    ) -> torch.Tensor:
            for layer in self.layers:
                x, ffn = layer(x)
                if taps is not None:
                    taps.append(ffn)
            return self.norm(x)

    class PositionalEncoding(nn.Module):
        """The sinusoidal table as a non-persistent buffer (recomputed; see ``set_table``)."""

        def __init__(self, d_model: int, max_len: int = PE_MAX_LEN) -> None:
            super().__init__()
            self.register_buffer("pe", torch.empty(1, max_len, d_model), persistent=False)

        def set_table(self, table: torch.Tensor) -> None:
            self.register_buffer("pe", table, persistent=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.pe[:, : x.size(1)]

    class SBTransformerBlock(nn.Module):
        def __init__(self, num_layers: int, d_model: int, nhead: int, d_ffn: int,
                     dropout: float) -> None:
            super().__init__()
            self.mdl = TransformerEncoder(num_layers, d_model, nhead, d_ffn, dropout)
            self.pos_enc = PositionalEncoding(d_model)

        def forward(self, x: torch.Tensor, taps: list[torch.Tensor] | None = None
                    ) -> torch.Tensor:
            if x.size(1) > self.pos_enc.pe.size(1):
                raise InputError("audio", f"{x.size(1)} positions exceed the positional table "
                                 f"({self.pos_enc.pe.size(1)}): clip too long for SepFormer")
            return self.mdl(x + self.pos_enc(x), taps)

    def group_norm(channels: int) -> nn.GroupNorm:
        return nn.GroupNorm(1, channels, eps=GROUPNORM_EPS)

    class DualBlock(nn.Module):
        """Dual_Computation_Block (norm 'ln', skip around intra, no extra linear)."""

        def __init__(self, cfg: Mapping[str, Any]) -> None:
            super().__init__()
            n = cfg["masknet.out_channels"]
            for side in ("intra", "inter"):
                setattr(self, f"{side}_mdl", SBTransformerBlock(
                    cfg[f"{side}.num_layers"], cfg[f"{side}.d_model"], cfg[f"{side}.nhead"],
                    cfg[f"{side}.d_ffn"], float(cfg[f"{side}.dropout"])))
            self.intra_norm = group_norm(n)
            self.inter_norm = group_norm(n)

        def forward(self, x: torch.Tensor, taps: dict[str, list[torch.Tensor]] | None = None,
                    inter: bool = True) -> torch.Tensor:
            """(B, N, K, S) -> (B, N, K, S); ``taps`` collects the per-clip FFN means."""
            B, N, K, S = x.shape
            raw: list[torch.Tensor] | None = [] if taps is not None else None
            intra = self.intra_mdl(x.permute(0, 3, 2, 1).reshape(B * S, K, N), raw)
            if taps is not None:  # (B*S, K, N): every chunk x position entry of a clip
                taps["intra"] = [t.reshape(B, S * K, N).mean(dim=1) for t in raw]
            intra = intra.reshape(B, S, K, N).permute(0, 3, 2, 1).contiguous()
            intra = self.intra_norm(intra) + x
            if not inter:
                return intra
            raw = [] if taps is not None else None
            out = self.inter_mdl(intra.permute(0, 2, 3, 1).reshape(B * K, S, N), raw)
            if taps is not None:
                taps["inter"] = [t.reshape(B, K * S, N).mean(dim=1) for t in raw]
            out = out.reshape(B, K, S, N).permute(0, 3, 1, 2).contiguous()
            return self.inter_norm(out) + intra

    class MaskNet(nn.Module):
        """Dual_Path_Model: the mask network of ``masknet.ckpt``."""

        def __init__(self, cfg: Mapping[str, Any]) -> None:
            super().__init__()
            cin, n = cfg["masknet.in_channels"], cfg["masknet.out_channels"]
            self.K = int(cfg["masknet.K"])
            self.num_spks = int(cfg["masknet.num_spks"])
            self.norm = group_norm(cin)
            self.conv1d = nn.Conv1d(cin, n, 1, bias=False)
            self.dual_mdl = nn.ModuleList(DualBlock(cfg)
                                          for _ in range(cfg["masknet.num_layers"]))
            self.conv2d = nn.Conv2d(n, n * self.num_spks, kernel_size=1)
            self.end_conv1x1 = nn.Conv1d(n, cin, 1, bias=False)
            self.prelu = nn.PReLU()
            self.activation = nn.ReLU()
            self.output = nn.Sequential(nn.Conv1d(n, n, 1), nn.Tanh())
            self.output_gate = nn.Sequential(nn.Conv1d(n, n, 1), nn.Sigmoid())

        def segment(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
            """(B, N, L) -> (B, N, K, S) 50 %-overlap chunks, and the end padding ``gap``."""
            B, N, L = x.shape
            K, P = self.K, self.K // 2
            gap = K - (P + L % K) % K
            x = F.pad(x, (P, gap + P))
            first = x[:, :, :-P].reshape(B, N, -1, K)
            second = x[:, :, P:].reshape(B, N, -1, K)
            chunks = torch.cat([first, second], dim=3).reshape(B, N, -1, K).transpose(2, 3)
            return chunks.contiguous(), gap

        def overlap_add(self, x: torch.Tensor, gap: int) -> torch.Tensor:
            """(B, N, K, S) -> (B, N, L): the inverse of ``segment`` (sums the overlaps)."""
            B, N, K, S = x.shape
            P = K // 2
            x = x.transpose(2, 3).contiguous().reshape(B, N, -1, K * 2)
            first = x[:, :, :, :K].contiguous().reshape(B, N, -1)[:, :, P:]
            second = x[:, :, :, K:].contiguous().reshape(B, N, -1)[:, :, :-P]
            out = first + second
            return out[:, :, :-gap] if gap > 0 else out

        def dual_path(self, x: torch.Tensor, taps: list[dict[str, list[torch.Tensor]]] | None
                      = None, sides: int | None = None) -> tuple[torch.Tensor, int]:
            """Encoder output (B, N, L) -> chunks after the first ``sides`` transformer sides
            (intra, inter, intra, ...; None = all); ``taps`` gets one dict per block run."""
            x, gap = self.segment(self.conv1d(self.norm(x)))
            sides = 2 * len(self.dual_mdl) if sides is None else sides
            for b, block in enumerate(self.dual_mdl):
                if 2 * b >= sides:
                    break
                got: dict[str, list[torch.Tensor]] | None = {} if taps is not None else None
                x = block(x, got, inter=2 * b + 1 < sides)
                if taps is not None:
                    taps.append(got)
            return x, gap

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """Encoder output (B, N, L) -> masks (num_spks, B, N, L), as Dual_Path_Model."""
            x, gap = self.dual_path(x)
            x = self.conv2d(self.prelu(x))
            B, _, K, S = x.shape
            x = self.overlap_add(x.reshape(B * self.num_spks, -1, K, S), gap)
            x = self.end_conv1x1(self.output(x) * self.output_gate(x))
            _, N, L = x.shape
            return self.activation(x.reshape(B, self.num_spks, N, L)).transpose(0, 1)

    class Encoder(nn.Module):
        """dual_path.Encoder: Conv1d(1, N, k, stride k // 2, no bias); ReLU applied by caller."""

        def __init__(self, cfg: Mapping[str, Any]) -> None:
            super().__init__()
            k = cfg["encoder.kernel_size"]
            self.conv1d = nn.Conv1d(1, cfg["encoder.out_channels"], k, stride=k // 2,
                                    bias=False)

        def forward(self, wav: torch.Tensor) -> torch.Tensor:
            """(B, samples) -> (B, N, frames) before the ReLU."""
            return self.conv1d(wav.unsqueeze(1))

    return SimpleNamespace(Encoder=Encoder, MaskNet=MaskNet, DualBlock=DualBlock,
                           SBTransformerBlock=SBTransformerBlock,
                           PositionalEncoding=PositionalEncoding)


def parameter_counts(cfg: Mapping[str, Any] | None = None) -> dict[str, int]:
    """{encoder, masknet: parameters} of a config (default the whamr one), built on meta."""
    from brainalign.models.weights import parameter_count

    cfg = make_config() if cfg is None else cfg
    n = nets()
    return {"encoder": parameter_count(lambda: n.Encoder(cfg)),
            "masknet": parameter_count(lambda: n.MaskNet(cfg))}


# --------------------------------------------------------------------------- loading
def _pe_keys(cfg: Mapping[str, Any]) -> list[str]:
    return [f"dual_mdl.{b}.{side}_mdl.pos_enc.pe" for b in range(cfg["masknet.num_layers"])
            for side in ("intra", "inter")]


def load_masknet(masknet: Any, state: dict[str, Any], cfg: Mapping[str, Any], path: Path,
                 model: str) -> dict[str, Any]:
    """Load ``masknet.ckpt`` strictly into a meta-built MaskNet; set the ``pe`` tables.

    Stored ``pos_enc.pe`` buffers (all four or none) are compared with the recomputed table
    and adopted; returns provenance about them.
    """
    import torch

    state = dict(state)
    keys = _pe_keys(cfg)
    present = [k for k in keys if k in state]
    if present and len(present) != len(keys):
        raise InputError(path, f"checkpoint does not fit model {model!r}: it stores "
                         f"{len(present)} of the {len(keys)} positional tables (missing key "
                         f"{[k for k in keys if k not in state][0]!r})")
    stored = {k: state.pop(k) for k in present}
    from brainalign.models.weights import load_strict

    load_strict(masknet, state, path=path, model=model, assign=True)
    diff = 0.0
    for key in keys:
        block, side = key.split(".")[1], key.split(".")[2]
        d_model = cfg[f"{side.removesuffix('_mdl')}.d_model"]
        if key in stored:
            table = stored[key]
            if table.ndim != 3 or table.shape[0] != 1 or table.shape[2] != d_model:
                raise InputError(path, f"checkpoint does not fit model {model!r}: misshapen "
                                 f"key {key!r} {tuple(table.shape)} (model (1, max_len, "
                                 f"{d_model}))")
            ref = pe_table(table.shape[1], d_model)
            diff = max(diff, float((table.float() - ref).abs().max()))
            if diff > PE_TOLERANCE:
                raise InputError(path, f"stored positional table {key!r} is not the sinusoidal "
                                 f"one (max |diff| {diff:.3g})")
        else:
            table = pe_table(PE_MAX_LEN, d_model)
        masknet.dual_mdl[int(block)].get_submodule(side).pos_enc.set_table(
            table.to(torch.float32))
    return {"pe": "stored" if stored else "computed",
            **({"pe_max_abs_diff": diff} if stored else {})}


class SepformerRunner(Runner):
    """8-kHz audio -> Embedding + the 32 FFN taps, one clip at a time."""

    def __init__(self, spec: ModelSpec, ctx: BuildContext, cfg: Mapping[str, Any],
                 encoder: Any, masknet: Any, options: Mapping[str, Any],
                 provenance: Mapping[str, Any]) -> None:
        super().__init__(spec, ctx.device)
        self.cfg = dict(cfg)
        self.options = dict(options)
        self.encoder = encoder.to(ctx.device).eval()
        self.masknet = masknet.to(ctx.device).eval()
        self.order = layer_order(cfg)
        self.provenance = dict(provenance)
        expected = spec_layers(cfg)
        if tuple(spec.layers) != expected:
            raise InputError(spec.name, f"the spec's layers {list(spec.layers)[:3]}... do not "
                             f"match the checkpoint's {len(expected) - 1} transformer layers")

    def _one(self, wav: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        import torch

        pre = self.encoder(wav)
        post = torch.relu(pre)
        out: dict[str, torch.Tensor] = {}
        if "Embedding" in layers:
            chosen = post if self.options["embedding"] == "post_relu" else pre
            out["Embedding"] = chosen.mean(dim=-1)
        wanted = [int(k.split("_")[1]) - 1 for k in layers if k != "Embedding"]
        if not wanted:
            return out
        last_block, last_side, _ = self.order[max(wanted)]
        sides = 2 * last_block + (2 if last_side == "inter" else 1)
        taps: list[dict[str, list[torch.Tensor]]] = []
        self.masknet.dual_path(post, taps, sides=sides)
        for i in wanted:
            block, side, layer = self.order[i]
            out[f"Encoder_{i + 1}"] = taps[block][side][layer]
        return out

    def forward(self, audio: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        import torch

        if audio.shape[-1] < self.min_samples:
            raise InputError("audio", f"clips need >= {self.min_samples} samples")
        rows = [self._one(clip[None], layers) for clip in audio]
        return {k: torch.cat([r[k] for r in rows]) for k in layers}

    def info(self) -> dict[str, Any]:
        return {"config": self.cfg, "options": self.options, **self.provenance}


def _options(spec: ModelSpec, ctx: BuildContext) -> dict[str, Any]:
    opts = {**OPTIONS, **dict(spec.options), **dict(ctx.options)}
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise InputError(f"extract.options.{spec.name}.{unknown[0]}",
                         f"unknown option (known: {sorted(OPTIONS)})")
    if opts["embedding"] not in EMBEDDING_CHOICES:
        raise InputError(f"extract.options.{spec.name}.embedding",
                         f"expected one of {list(EMBEDDING_CHOICES)}, got {opts['embedding']!r}")
    return opts


def build(spec: ModelSpec, ctx: BuildContext) -> Runner:
    """Read hyperparams.yaml (data only), check it, build on meta, adopt the checkpoints."""
    import torch

    from brainalign.models.weights import check_config, load_strict, safe_load, weight_file

    options = _options(spec, ctx)
    hp_path = weight_file(spec, ctx, "hyperparams.yaml")
    enc_path = weight_file(spec, ctx, "encoder.ckpt")
    mask_path = weight_file(spec, ctx, "masknet.ckpt")
    cfg = config_from_hyperparams(read_hyperparams(hp_path), str(hp_path))
    check_config(cfg, spec.config, path=hp_path, model=spec.name)
    _validate_config(cfg, str(hp_path))
    n = nets()
    with torch.device("meta"):
        encoder, masknet = n.Encoder(cfg), n.MaskNet(cfg)
    load_strict(encoder, safe_load(enc_path, mmap=True), path=enc_path, model=spec.name,
                assign=True)
    pe_info = load_masknet(masknet, safe_load(mask_path, mmap=True), cfg, mask_path, spec.name)
    return SepformerRunner(spec, ctx, cfg, encoder, masknet, options, pe_info)


CONFIG = make_config()

SPECS = [
    ModelSpec(
        name="braindnn_sepformer", label="Sepformer", family="Others", training="supervised",
        sample_rate=SAMPLE_RATE, layers=LAYERS, paper_keys=PAPER_KEYS,
        build="brainalign.models.sepformer:build", fetched=True, config=CONFIG,
        frontend="brainalign.models.hyperparams",
        min_samples=16, options=dict(OPTIONS),
        description=f"SepFormer speech separation, WHAMR! (HF {HF_REPO}); Embedding = encoder "
                    "post-ReLU, Encoder_i = FFN output of transformer layer i (chunk mean)",
    )
]
