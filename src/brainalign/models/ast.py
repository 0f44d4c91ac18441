"""AST (Gong et al. 2021), the AudioSet 0.4593 checkpoint, as Tuckute et al. 2023 tapped it.

Our own implementation of the Audio Spectrogram Transformer (timm 0.4.5 DeiT-B distilled tree),
loaded strictly from the original DataParallel state dict. No upstream package is used; the
tests compare it with transformers' ``ASTForAudioClassification`` on random weights.

**Sources of the facts** (read, not copied):

- gretatuckute/ast @8bbc2d0 ``src/models/ast_models.py`` (``ASTModel``: the checkpoint URL, the
  patch conv with stride (10, 10), ``pos_embed`` for 12 x 101 patches + cls + dist, the forward
  with ``@autocast()``, the ``audioset_pretrain=True`` branch that makes a NEW random
  ``mlp_head``), ``src/run_model.py`` (``make_features``: Kaldi fbank of the float waveform,
  zero-pad / cut to 1024 frames, then ``(fbank + 4.2677393) / (4.5689974 * 2)``; seeds
  ``torch.manual_seed(0)`` before building the model; ``Final`` = the model output) and
  ``src/extractor_utils.py`` (``SaveOutput``: hooks on every Conv2d and Linear, key =
  ``str(module) + '--<occurrence>'``; the conv map flattened to (patches, 768) and averaged;
  ``Linear(3072 -> 768)`` outputs averaged over axis 1, all tokens).
- timm 0.4.5 (the version ``ast_models.py`` asserts; PyPI wheel) ``models/vision_transformer.py``:
  ``VisionTransformer`` / ``DistilledVisionTransformer`` / ``Block`` / ``Attention`` / ``Mlp``
  (pre-norm blocks, ``qkv_bias=True``, LayerNorm eps 1e-6, ``nn.GELU`` = exact GELU, the
  ``_init_weights`` order used to replay the random head) and ``layers/weight_init.py``
  (``trunc_normal_``).
- /work/shared/docs/paper-models.md sections 1.2 (rows "AST fc2 taps", "AST Final",
  "AST precision"), 3.7 and 4.2 (88,132,063 parameters; 198 -> 1024 frames -> 1212 + 2 tokens).

**Container.** A plain ``torch.save`` of the ``DataParallel`` state dict: every key starts with
``module.`` (stripped here), timm names below ``v.`` plus ``mlp_head.0`` (LayerNorm, default
eps 1e-5) and ``mlp_head.1`` (768 -> 527). Read with ``torch.load(weights_only=True)`` (memory
mapped when it is a zip checkpoint) after the sha256 check; the network is built on the ``meta``
device and adopts the tensors (``assign=True``). There is no config in the file: the shapes give
width, depth, MLP width, patch size, token count and head sizes, checked against the spec's
``config``; heads and strides come from the spec (the token count cross-checks the strides).
timm's ImageNet heads ``v.head`` / ``v.head_dist`` (1000-way) are loaded and never run.

**Network.** Input (B, 1024, 128) -> unsqueeze(1).transpose(2, 3) -> Conv2d(1, 768, 16,
stride (10, 10)) -> (B, 768, 12, 101) -> flatten(2).transpose(1, 2): 1212 tokens,
frequency-major (index f * 101 + t) -> [cls, dist, patches] + ``pos_embed`` -> 12 blocks
``x = x + proj(attn(norm1(x))); x = x + fc2(gelu(fc1(norm2(x))))`` (12 heads, softmax of
q.k / 8) -> ``v.norm`` -> (x[:, 0] + x[:, 1]) / 2 -> ``mlp_head``.

**Front end** (:data:`brainalign.models.frontends.kaldi.AST`, one clip at a time): the float
waveform as it arrives (no level normalisation; Tuckute read 16-kHz PCM files with
torchaudio, the paper resamples with soxr), Kaldi fbank (128 bins, 25 / 10 ms, Hanning window,
dither 0, snip_edges) -> 198 frames for 2 s -> zero-pad or cut to 1024 frames -> normalise
``(x + 4.2677393) / (2 * 4.5689974)`` (padded rows become about 0.467). Clips of more than
1024 frames (10.25 s) are cut, as upstream. ``min_samples`` = 400 (one fbank frame).

**Layers** (keys: Tuckute's hook names, see ``PAPER_KEYS``):

- ``Embedding``: the patch-conv output, mean over the 1212 patches (no cls / dist), 768;
- ``Encoder_i``: the output of ``blocks[i-1].mlp.fc2`` (the MLP branch BEFORE the residual add,
  not the block output), mean over all 1214 tokens, 768;
- ``Final``: the model output, 527.

**Options** (``extract.options.braindnn_ast``):

- ``final_head``: ``trained`` (default: the checkpoint's ``mlp_head``, as the AST authors'
  ``egs/audioset/inference.py`` loads it) or ``tuckute_random``. Tuckute built
  ``ASTModel(audioset_pretrain=True)`` after ``torch.manual_seed(0)``: that branch builds an
  inner AST with timm's random init, loads the checkpoint into it, keeps ``.v`` and creates a
  fresh ``mlp_head`` (LayerNorm(768) ones / zeros + Linear(768, 527) with PyTorch's default
  init). :func:`tuckute_random_head` replays every draw of the CPU generator her code makes
  before that Linear, in order (timm's constructor and ``_init_weights``, the inner head, the
  ``get_shape`` probe, the new patch conv, the new ``pos_embed``), so the head is exactly hers
  as long as torch's CPU generator gives the same stream for the same calls (it did for timm
  0.4.5 under torch 2.9.1: equal to the head her code builds, checked once; her own torch
  version is unknown). How the paper's ``invariant`` made ``Final`` is unknown.
- ``fc2_tokens``: ``all`` (default, Tuckute: cls, dist and the padded patches included),
  ``patches`` (the 1212 patch tokens) or ``signal`` (only the patches whose 16-frame window
  starts inside the clip's fbank frames, e.g. 20 of the 101 time columns for 2 s; this also
  restricts ``Embedding`` to those patches).
- ``precision``: ``fp32`` (default; Tuckute ran on CPU) or ``fp16_autocast`` (the original
  ``forward`` is decorated with ``torch.cuda.amp.autocast()``: float16 autocast on CUDA; on
  the CPU it changes nothing, exactly as the original).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import cache
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from brainalign.errors import InputError
from brainalign.models.base import Runner
from brainalign.models.frontends.kaldi import AST as FBANK
from brainalign.models.spec import BuildContext, ModelSpec
from brainalign.models.weights import (
    check_config,
    expect_keys,
    load_strict,
    safe_load,
    weight_file,
)

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 16_000
WEIGHT_FILE = "audioset_10_10_0.4593.pth"
LN_EPS = 1e-6  # timm's ViT norm_layer (blocks and v.norm); mlp_head.0 keeps nn.LayerNorm's 1e-5
HEAD_LN_EPS = 1e-5
PREFIX = "module."  # DataParallel

LAYERS = ("Embedding", *(f"Encoder_{i}" for i in range(1, 13)), "Final")


def paper_keys(embed_dim: int = 768, mlp_hidden: int = 3072, depth: int = 12,
               patch: int = 16, fstride: int = 10, tstride: int = 10) -> dict[str, str]:
    """Tuckute's hook names (``str(module)--k``) for a given width and depth."""
    return {
        "Embedding": f"Conv2d(1, {embed_dim}, kernel_size=({patch}, {patch}), "
                     f"stride=({fstride}, {tstride}))--0",
        **{f"Encoder_{i}": f"Linear(in_features={mlp_hidden}, out_features={embed_dim}, "
                           f"bias=True)--{i - 1}" for i in range(1, depth + 1)},
        "Final": "Final",
    }


PAPER_KEYS = paper_keys()

CONFIG: Mapping[str, Any] = {
    "embed_dim": 768, "depth": 12, "num_heads": 12, "mlp_hidden": 3072,
    "patch_size": 16, "in_chans": 1, "fstride": 10, "tstride": 10,
    "input_fdim": 128, "input_tdim": 1024, "num_tokens": 1214,
    "label_dim": 527, "timm_classes": 1000,
}
"""The 0.4593 checkpoint's architecture (paper-models 3.7)."""

SHAPE_KEYS = ("embed_dim", "depth", "mlp_hidden", "patch_size", "in_chans", "num_tokens",
              "label_dim", "timm_classes")
"""The config values the checkpoint's tensor shapes determine (checked against the spec)."""

TIMM_IMG_SIZE = 384  # vit_deit_base_distilled_patch16_384: the timm model AST starts from
TIMM_IN_CHANS = 3

FINAL_HEADS = ("trained", "tuckute_random")
FC2_TOKENS = ("all", "patches", "signal")
PRECISIONS = ("fp32", "fp16_autocast")
OPTION_CHOICES: Mapping[str, tuple[str, ...]] = {
    "final_head": FINAL_HEADS, "fc2_tokens": FC2_TOKENS, "precision": PRECISIONS,
}
DEFAULT_OPTIONS: Mapping[str, str] = {
    "final_head": "trained", "fc2_tokens": "all", "precision": "fp32",
}
MIN_SAMPLES = int(FBANK.sample_frequency * FBANK.frame_length / 1000)  # one fbank frame: 400


def patch_grid(cfg: Mapping[str, Any]) -> tuple[int, int]:
    """(frequency, time) patches of the padded input: (12, 101) for the real model."""
    p = cfg["patch_size"]
    return ((cfg["input_fdim"] - p) // cfg["fstride"] + 1,
            (cfg["input_tdim"] - p) // cfg["tstride"] + 1)


def signal_columns(n_frames: int, cfg: Mapping[str, Any]) -> int:
    """Time columns whose patch window starts inside the first ``n_frames`` fbank frames."""
    _, t_dim = patch_grid(cfg)
    return max(1, min(t_dim, -(-n_frames // cfg["tstride"])))


def parse_options(spec: ModelSpec, options: Mapping[str, Any]) -> dict[str, str]:
    """The build options with defaults, each validated (one InputError naming the option)."""
    out = dict(DEFAULT_OPTIONS)
    for key, value in options.items():
        where = f"extract.options.{spec.name}.{key}"
        if key not in OPTION_CHOICES:
            raise InputError(where, f"unknown option for {spec.name!r}; options are "
                             f"{list(OPTION_CHOICES)}")
        if value not in OPTION_CHOICES[key]:
            raise InputError(where, f"expected one of {list(OPTION_CHOICES[key])}, "
                             f"got {value!r}")
        out[key] = value
    return out


# --------------------------------------------------------------------------- front end
def features(wave: torch.Tensor, cfg: Mapping[str, Any] = CONFIG) -> tuple[torch.Tensor, int]:
    """(samples,) float waveform -> normalised (input_tdim, input_fdim) fbank, real frames.

    Kaldi fbank first, then zero-pad / cut to ``input_tdim`` frames, then normalise (so the
    padded rows are normalised zeros, as in Tuckute's ``make_features``).
    """
    import torch.nn.functional as F
    import torchaudio.compliance.kaldi as kaldi

    fb = kaldi.fbank(wave.float().unsqueeze(0), **FBANK.fbank_kwargs())
    if fb.shape[1] != cfg["input_fdim"]:
        raise InputError("braindnn_ast", f"fbank has {fb.shape[1]} bins, the model expects "
                         f"{cfg['input_fdim']}")
    n, target = fb.shape[0], cfg["input_tdim"]
    if n < target:
        fb = F.pad(fb, (0, 0, 0, target - n))
    elif n > target:
        fb = fb[:target]
    return (fb - FBANK.mean) / FBANK.std, min(n, target)


# --------------------------------------------------------------------------- network
@cache
def _classes() -> SimpleNamespace:
    import torch
    from torch import nn

    class PatchEmbed(nn.Module):
        def __init__(self, cfg: Mapping[str, Any]) -> None:
            super().__init__()
            p = cfg["patch_size"]
            self.proj = nn.Conv2d(cfg["in_chans"], cfg["embed_dim"], kernel_size=(p, p),
                                  stride=(cfg["fstride"], cfg["tstride"]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(x)  # (B, D, F, T); flattened by the caller

    class Attention(nn.Module):
        def __init__(self, dim: int, num_heads: int) -> None:
            super().__init__()
            self.num_heads = num_heads
            self.scale = (dim // num_heads) ** -0.5
            self.qkv = nn.Linear(dim, dim * 3, bias=True)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, n, c = x.shape
            qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
            return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))

    class Mlp(nn.Module):
        def __init__(self, dim: int, hidden: int) -> None:
            super().__init__()
            self.fc1 = nn.Linear(dim, hidden)
            self.act = nn.GELU()
            self.fc2 = nn.Linear(hidden, dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(self.act(self.fc1(x)))

    class Block(nn.Module):
        def __init__(self, cfg: Mapping[str, Any]) -> None:
            super().__init__()
            dim = cfg["embed_dim"]
            self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
            self.attn = Attention(dim, cfg["num_heads"])
            self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
            self.mlp = Mlp(dim, cfg["mlp_hidden"])

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """-> (block output, fc2 output before the residual add)."""
            x = x + self.attn(self.norm1(x))
            h = self.mlp(self.norm2(x))
            return x + h, h

    class DistilledViT(nn.Module):
        """timm's ``DistilledVisionTransformer`` as AST modifies it (key names ``v.*``)."""

        def __init__(self, cfg: Mapping[str, Any]) -> None:
            super().__init__()
            dim = cfg["embed_dim"]
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, cfg["num_tokens"], dim))
            self.dist_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.patch_embed = PatchEmbed(cfg)
            self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg["depth"]))
            self.norm = nn.LayerNorm(dim, eps=LN_EPS)
            self.head = nn.Linear(dim, cfg["timm_classes"])  # ImageNet heads: loaded, unused
            self.head_dist = nn.Linear(dim, cfg["timm_classes"])

    class ASTNet(nn.Module):
        """``ASTModel``: ``v`` + ``mlp_head``; ``forward`` returns the tapped tensors."""

        def __init__(self, cfg: Mapping[str, Any]) -> None:
            super().__init__()
            self.cfg = dict(cfg)
            self.v = DistilledViT(cfg)
            self.mlp_head = nn.Sequential(nn.LayerNorm(cfg["embed_dim"], eps=HEAD_LN_EPS),
                                          nn.Linear(cfg["embed_dim"], cfg["label_dim"]))

        def forward(self, x: torch.Tensor, depth: int | None = None,
                    final: bool = True) -> dict[str, Any]:
            """(B, frames, bins) -> {"patch": (B, D, F, T), "fc2": [(B, N, D)] * depth,
            "logits": (B, label_dim) if ``final``}; ``depth`` stops after that many blocks."""
            v = self.v
            patch = v.patch_embed(x.unsqueeze(1).transpose(2, 3))
            b = patch.shape[0]
            tokens = torch.cat((v.cls_token.expand(b, -1, -1), v.dist_token.expand(b, -1, -1),
                                patch.flatten(2).transpose(1, 2)), dim=1) + v.pos_embed
            n_blocks = len(v.blocks) if final or depth is None else depth
            fc2 = []
            for blk in v.blocks[:n_blocks]:
                tokens, h = blk(tokens)
                fc2.append(h)
            out: dict[str, Any] = {"patch": patch, "fc2": fc2}
            if final:
                tokens = v.norm(tokens)
                out["logits"] = self.mlp_head((tokens[:, 0] + tokens[:, 1]) / 2)
            return out

    return SimpleNamespace(ASTNet=ASTNet, Block=Block, Attention=Attention, Mlp=Mlp)


def network(cfg: Mapping[str, Any] = CONFIG) -> torch.nn.Module:
    """The AST network for ``cfg``, default-initialised (build under ``torch.device('meta')``
    to allocate nothing)."""
    return _classes().ASTNet(cfg)


# --------------------------------------------------------------------------- checkpoint
def strip_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    """The DataParallel state dict without its ``module.`` prefix."""
    return {k[len(PREFIX):] if k.startswith(PREFIX) else k: v for k, v in state.items()}


def read_config(state: Mapping[str, Any], path: Any, model: str) -> dict[str, Any]:
    """The architecture the tensor shapes determine (:data:`SHAPE_KEYS`)."""
    needed = ("v.cls_token", "v.pos_embed", "v.patch_embed.proj.weight",
              "v.blocks.0.mlp.fc1.weight", "v.head.weight", "mlp_head.1.weight")
    expect_keys(state, needed, path, f"{model} state dict (after stripping 'module.')")
    proj = tuple(state["v.patch_embed.proj.weight"].shape)
    blocks = {k.split(".")[2] for k in state if k.startswith("v.blocks.")}
    return {
        "embed_dim": int(state["v.cls_token"].shape[-1]),
        "depth": len(blocks),
        "mlp_hidden": int(state["v.blocks.0.mlp.fc1.weight"].shape[0]),
        "patch_size": int(proj[-1]) if proj[-1] == proj[-2] else proj[-2:],
        "in_chans": int(proj[1]),
        "num_tokens": int(state["v.pos_embed"].shape[1]),
        "label_dim": int(state["mlp_head.1.weight"].shape[0]),
        "timm_classes": int(state["v.head.weight"].shape[0]),
    }


def tuckute_random_head(cfg: Mapping[str, Any] = CONFIG) -> dict[str, torch.Tensor]:
    """The ``mlp_head`` Tuckute's ``ASTModel(audioset_pretrain=True)`` creates after
    ``torch.manual_seed(0)`` (keys ``mlp_head.0/1.weight/bias``, CPU float32).

    Replays, on a CPU generator seeded 0, every draw her code makes before that head, with the
    same calls on tensors of the same shapes and dtype (values not kept):

    1. ``timm.create_model('vit_deit_base_distilled_patch16_384', pretrained=False)`` (timm
       0.4.5): the constructors' default inits of the 3-channel 384-px patch conv, of each
       block's qkv / proj / fc1 / fc2 and of ``head``; ``trunc_normal_`` of ``pos_embed``
       (577 tokens) and ``cls_token``; ``_init_weights`` (``trunc_normal_`` of every Linear
       weight, module order); the distilled part: ``head_dist``'s constructor, then
       ``trunc_normal_`` of ``dist_token``, ``pos_embed`` (578 tokens), ``head_dist.weight``;
    2. the inner ``ASTModel(imagenet_pretrain=False)``: its ``mlp_head`` Linear, ``get_shape``
       (``torch.randn(1, 1, 128, 1024)`` and a probe Conv2d), the new patch Conv2d, and
       ``trunc_normal_`` of the new ``pos_embed`` (1214 tokens);
    3. the outer model's new ``mlp_head``: LayerNorm (ones / zeros) and the Linear returned.
    """
    import torch
    from torch.nn import init

    g = torch.Generator().manual_seed(0)
    dim, hidden, depth = cfg["embed_dim"], cfg["mlp_hidden"], cfg["depth"]
    classes, labels, patch = cfg["timm_classes"], cfg["label_dim"], cfg["patch_size"]

    def layer(fan_in: int, *w_shape: int) -> tuple[torch.Tensor, torch.Tensor]:
        """nn.Linear / nn.Conv2d ``reset_parameters``: kaiming_uniform_(a=sqrt(5)), bias."""
        w = torch.empty(w_shape)
        init.kaiming_uniform_(w, a=math.sqrt(5), generator=g)
        bound = 1 / math.sqrt(fan_in)
        b = init.uniform_(torch.empty(w_shape[0]), -bound, bound, generator=g)
        return w, b

    def linear(fan_in: int, fan_out: int) -> tuple[torch.Tensor, torch.Tensor]:
        return layer(fan_in, fan_out, fan_in)

    def conv(cin: int, cout: int) -> None:
        layer(cin * patch * patch, cout, cin, patch, patch)

    def trunc(*shape: int) -> None:
        init.trunc_normal_(torch.empty(shape), std=0.02, a=-2.0, b=2.0, generator=g)

    timm_patches = (TIMM_IMG_SIZE // patch) ** 2
    # 1. timm 0.4.5 VisionTransformer.__init__ (then DistilledVisionTransformer.__init__)
    conv(TIMM_IN_CHANS, dim)
    for _ in range(depth):
        linear(dim, 3 * dim)
        linear(dim, dim)
        linear(dim, hidden)
        linear(hidden, dim)
    linear(dim, classes)
    trunc(1, timm_patches + 1, dim)
    trunc(1, 1, dim)
    for _ in range(depth):  # self.apply(self._init_weights): children first, module order
        trunc(3 * dim, dim)
        trunc(dim, dim)
        trunc(hidden, dim)
        trunc(dim, hidden)
    trunc(classes, dim)
    linear(dim, classes)  # head_dist
    trunc(1, 1, dim)
    trunc(1, timm_patches + 2, dim)
    trunc(classes, dim)
    # 2. the inner ASTModel(imagenet_pretrain=False, audioset_pretrain=False)
    linear(dim, labels)
    torch.randn(1, 1, cfg["input_fdim"], cfg["input_tdim"], generator=g)
    conv(1, dim)  # get_shape's probe
    conv(1, dim)  # new_proj
    trunc(1, cfg["num_tokens"], dim)
    # 3. the outer model's new head
    weight, bias = linear(dim, labels)
    return {"mlp_head.0.weight": torch.ones(dim), "mlp_head.0.bias": torch.zeros(dim),
            "mlp_head.1.weight": weight, "mlp_head.1.bias": bias}


def load_network(spec: ModelSpec, ctx: BuildContext, final_head: str = "trained",
                 ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The checked, strictly loaded network (on CPU) and its config."""
    import torch

    path = weight_file(spec, ctx, WEIGHT_FILE)
    raw = safe_load(path)
    expect_keys(raw, (), path, "state dict")
    state = strip_prefix(raw)
    found = read_config(state, path, spec.name)
    cfg = {**CONFIG, **spec.config}
    check_config(found, {k: cfg[k] for k in SHAPE_KEYS}, path=path, model=spec.name)
    f_dim, t_dim = patch_grid(cfg)
    if cfg["num_tokens"] != f_dim * t_dim + 2:
        raise InputError(path, f"{spec.name}: {cfg['num_tokens']} position embeddings do not fit "
                         f"{f_dim} x {t_dim} patches + cls + dist (strides {cfg['fstride']}, "
                         f"{cfg['tstride']})")
    with torch.device("meta"):
        net = network(cfg)
    load_strict(net, state, path=path, model=spec.name, assign=True)
    if final_head == "tuckute_random":
        head = tuckute_random_head(cfg)
        for i in (0, 1):
            module = net.mlp_head[i]
            module.weight = torch.nn.Parameter(head[f"mlp_head.{i}.weight"], requires_grad=False)
            module.bias = torch.nn.Parameter(head[f"mlp_head.{i}.bias"], requires_grad=False)
    return net.eval(), cfg


def encoder_index(layer: str) -> int:
    """``Encoder_i`` -> i (1-based block number); 0 for the other layers."""
    return int(layer.split("_", 1)[1]) if layer.startswith("Encoder_") else 0


def reduce_taps(taps: Mapping[str, Any], layers: Sequence[str], cfg: Mapping[str, Any],
                fc2_tokens: str = "all", n_frames: int | None = None) -> dict[str, torch.Tensor]:
    """The network's taps -> one float32 vector per clip and layer.

    ``Embedding``: patch-conv map mean over the patches; ``Encoder_i``: fc2 output mean over
    all tokens (``all``), the patch tokens (``patches``) or the patches of the clip's own
    frames (``signal``, also applied to ``Embedding``; needs ``n_frames``); ``Final``: logits.
    """
    f_dim, t_dim = patch_grid(cfg)
    keep = t_dim
    if fc2_tokens == "signal":
        keep = signal_columns(t_dim * cfg["tstride"] if n_frames is None else n_frames, cfg)
    out = {}
    for key in layers:
        if key == "Embedding":
            out[key] = taps["patch"].float()[..., :keep].flatten(2).mean(dim=-1)
        elif key == "Final":
            out[key] = taps["logits"].float()
        else:
            h = taps["fc2"][encoder_index(key) - 1].float()
            if fc2_tokens == "all":
                out[key] = h.mean(dim=1)
            else:
                grid = h[:, 2:].reshape(h.shape[0], f_dim, t_dim, h.shape[-1])  # f * T + t
                out[key] = grid[:, :, :keep].mean(dim=(1, 2))
    return out


class ASTRunner(Runner):
    """One clip at a time: fbank -> pad to 1024 -> AST; patch-conv, fc2 and output taps."""

    def __init__(self, spec: ModelSpec, ctx: BuildContext) -> None:
        super().__init__(spec, ctx.device)
        self.options = parse_options(spec, ctx.options)
        net, self.cfg = load_network(spec, ctx, self.options["final_head"])
        bad = [k for k in spec.layers if k not in ("Embedding", "Final")
               and not (k.startswith("Encoder_") and 1 <= encoder_index(k) <= self.cfg["depth"])]
        if bad:
            raise InputError(spec.name, f"layers {bad} do not exist in a {self.cfg['depth']}-block "
                             "AST")
        self.net = net.to(ctx.device)
        self.autocast = (self.options["precision"] == "fp16_autocast"
                         and self.device.type == "cuda")

    def taps(self, spectrogram: torch.Tensor, layers: Sequence[str]) -> dict[str, Any]:
        """The network on (B, frames, bins), run only as deep as ``layers`` need."""
        import torch

        depth = max((encoder_index(k) for k in layers), default=0)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.autocast):
            return self.net(spectrogram, depth=depth, final="Final" in layers)

    def forward(self, audio: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        import torch

        rows: dict[str, list[torch.Tensor]] = {k: [] for k in layers}
        for clip in audio:
            spectrogram, n_frames = features(clip, self.cfg)
            reduced = reduce_taps(self.taps(spectrogram[None], layers), layers, self.cfg,
                                  self.options["fc2_tokens"], n_frames)
            for key in layers:
                rows[key].append(reduced[key])
        return {k: torch.cat(v) for k, v in rows.items()}

    def info(self) -> dict[str, Any]:
        f_dim, t_dim = patch_grid(self.cfg)
        return {
            "config": dict(self.cfg), "options": dict(self.options),
            "effective_precision": "fp16_autocast" if self.autocast else "fp32",
            "patches": [f_dim, t_dim], "tokens": self.cfg["num_tokens"],
            "frontend": {"preset": FBANK.source, "pad_to_frames": self.cfg["input_tdim"],
                         "mean": FBANK.mean, "std": FBANK.std},
            "final_head": ("checkpoint mlp_head" if self.options["final_head"] == "trained"
                           else "Tuckute's random mlp_head (torch.manual_seed(0) replay)"),
        }


def build(spec: ModelSpec, ctx: BuildContext) -> Runner:
    """Options: ``final_head``, ``fc2_tokens``, ``precision`` (module docstring)."""
    return ASTRunner(spec, ctx)


SPECS = [
    ModelSpec(
        name="braindnn_ast", label="AST", family="Others", training="supervised",
        sample_rate=SAMPLE_RATE, layers=LAYERS, paper_keys=PAPER_KEYS,
        build="brainalign.models.ast:build", fetched=True,
        frontend="brainalign.models.frontends.kaldi",
        config=dict(CONFIG), min_samples=MIN_SAMPLES, options=dict(DEFAULT_OPTIONS),
        description="Audio Spectrogram Transformer, AudioSet 10-10 0.4593 (gretatuckute/ast): "
                    "patch conv, the 12 MLP fc2 outputs (before the residual), the 527 logits",
    )
]
