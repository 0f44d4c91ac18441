"""wav2vec 2.0 base fine-tuned on LibriSpeech 960 h (facebook/wav2vec2-base-960h), via transformers.

Sources of the facts used here:

- Checkpoint: Hugging Face ``facebook/wav2vec2-base-960h`` @22aad52d435eb6dbaf354bdad9b0da84ce7d6156
  ("Adding safetensors variant"), files ``model.safetensors`` (read with the ``safetensors``
  package: no pickle at all), ``config.json`` and ``tokenizer_config.json`` (read as JSON; pinned
  in the fetch registry's ``weights`` group). A ``pytorch_model.bin`` holding the same tensors
  is read by :func:`read_state_dict` with ``torch.load(weights_only=True)``.
- Tuckute's extraction (gretatuckute/asr @d9a8d0f, ``get_wav2vec_activations.py``):
  ``Wav2Vec2ForCTC`` with ``output_hidden_states=True`` after the ``Wav2Vec2Tokenizer``;
  each hidden state ``squeeze().mean(axis=0)``; her ``Final`` (CTC logits) is not in the paper's
  layer list (mrpep/braindnn @1222378 ``src/specs.py`` ``layer_map``).
- The implementation is transformers 4.56.1 (the authors' pin, BDN ``environment.yml``):
  ``models/wav2vec2/modeling_wav2vec2.py`` (``Wav2Vec2ForCTC``, ``Wav2Vec2Encoder``: post-LN,
  ``hidden_states[0]`` = ``layer_norm(projection + pos_conv(projection))``, ``hidden_states[i]``
  = the output of layer i), ``tokenization_wav2vec2.py`` l.823 (tokenizer normalisation
  ``(x - mean) / sqrt(var + 1e-5)``), ``feature_extraction_wav2vec2.py`` (the newer
  ``Wav2Vec2FeatureExtractor``: the same with 1e-7).

Loading. The model is built from the checkpoint's own ``config.json`` (``Wav2Vec2Config``, no
network, no ``from_pretrained``) on the ``meta`` device after its architecture-defining values
are checked against the spec's ``config``; the file's tensors are then adopted strictly
(``load_strict(..., assign=True)``: every key of the file is a key of the model and vice versa).
One documented remap: the positional convolution's weight norm is stored as legacy
``weight_g``/``weight_v`` and is ``parametrizations.weight.original0``/``original1`` in the
module built by torch >= 2.1 (the rename transformers' own loader applies,
``PreTrainedModel._fix_state_dict_key_on_load``). ``wav2vec2.masked_spec_embed`` (the
SpecAugment mask vector, 768 values, used only in training) is kept when the file stores it and
removed from the model when it does not. The CTC head ``lm_head`` is loaded (strictness) but not
run.

Layers (the paper's 13): ``Embedding`` = ``hidden_states[0]``; ``Encoder_i`` =
``hidden_states[i]``, i = 1..12; each (batch, frames, 768) averaged over frames. A 2-s clip at
16 kHz gives 32000 -> 6399 -> 3199 -> 1599 -> 799 -> 399 -> 199 -> 99 frames.
``min_samples`` = 400 (the conv stack's receptive field: one frame).

Input: the 16-kHz waveform as loaded, normalised per clip by the tokenizer
(``tokenizer_config.json``: ``do_normalize`` true, ``return_attention_mask`` false: no mask),
statistics over the whole clip (population variance), computed with the tokenizer's own numpy
float32 operations, so the model input is bit-identical to the tokenizer's output. Nothing
depends on the batch (GroupNorm and the normalisation are per clip; equal-length clips, no
padding).

Build options (``extract.options.braindnn_wav2vec2``):

- ``normalize_eps`` (default ``1e-5``, the ``Wav2Vec2Tokenizer`` Tuckute used; ``1e-7`` =
  ``Wav2Vec2FeatureExtractor``): the epsilon under the square root;
- ``attention`` (default ``"sdpa"``, what transformers 4.56.1 picks for this model, as BDN
  loaded it; ``"eager"`` = the explicit softmax path of transformers 4.5.0, Tuckute's version):
  the attention kernel; the two agree to float rounding.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brainalign.errors import InputError
from brainalign.models.base import Runner
from brainalign.models.spec import BuildContext, ModelSpec
from brainalign.models.weights import check_config, load_strict, safe_load, weight_file

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 16_000
HF_REPO = "facebook/wav2vec2-base-960h"
HF_REVISION = "22aad52d435eb6dbaf354bdad9b0da84ce7d6156"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer_config.json"
LAYERS = ("Embedding", *(f"Encoder_{i}" for i in range(1, 13)))

CONFIG: dict[str, Any] = {
    "model_type": "wav2vec2",
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "feat_extract_norm": "group",
    "feat_extract_activation": "gelu",
    "conv_dim": (512,) * 7,
    "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
    "conv_stride": (5, 2, 2, 2, 2, 2, 2),
    "conv_bias": False,
    "num_feat_extract_layers": 7,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "do_stable_layer_norm": False,
    "add_adapter": False,
    "vocab_size": 32,
}
"""Architecture-defining values of ``config.json`` (after transformers' defaults) for the spec."""

TOKENIZER_CONFIG: dict[str, Any] = {"do_normalize": True, "return_attention_mask": False}
"""What ``tokenizer_config.json`` must say (normalise; no attention mask)."""

OPTIONS: dict[str, Any] = {"normalize_eps": 1e-5, "attention": "sdpa"}
ATTENTION = ("sdpa", "eager")
MASK_KEY = "wav2vec2.masked_spec_embed"


def layer_names(n_layers: int) -> tuple[str, ...]:
    """The layer keys of a model with ``n_layers`` transformer layers."""
    return ("Embedding", *(f"Encoder_{i}" for i in range(1, n_layers + 1)))


def n_frames(n_samples: int, kernels: Sequence[int] = CONFIG["conv_kernel"],
             strides: Sequence[int] = CONFIG["conv_stride"]) -> int:
    """Frames of the conv feature encoder for ``n_samples`` (no padding), 0 if too short."""
    for k, s in zip(kernels, strides, strict=True):
        if n_samples < k:
            return 0
        n_samples = (n_samples - k) // s + 1
    return n_samples


def _min_samples(kernels: Sequence[int] = CONFIG["conv_kernel"],
                 strides: Sequence[int] = CONFIG["conv_stride"]) -> int:
    n = 1
    for k, s in reversed(list(zip(kernels, strides, strict=True))):
        n = (n - 1) * s + k
    return n


MIN_SAMPLES = _min_samples()


# --------------------------------------------------------------------------- files
def read_json(path: str | Path, what: str) -> dict[str, Any]:
    """A JSON object file (a config), or one InputError naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not a readable {what} ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise InputError(path, f"expected a JSON object ({what}), got {type(data).__name__}")
    return data


def _plain(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def parse_config(raw: Mapping[str, Any], expected: Mapping[str, Any], *, path: str | Path,
                 model: str, attention: str = "sdpa") -> Any:
    """``config.json`` -> ``Wav2Vec2Config``, checked against ``expected`` (spec ``config``)."""
    from transformers import Wav2Vec2Config

    if raw.get("model_type") != "wav2vec2":
        raise InputError(path, f"the checkpoint's config is not that of {model!r}: model_type="
                         f"{raw.get('model_type', '<absent>')!r} (expected 'wav2vec2')")
    try:
        config = Wav2Vec2Config(**raw)
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"not a valid wav2vec2 config ({exc})") from None
    found = {k: _plain(v) for k, v in config.to_dict().items()}
    check_config(found, expected, path=path, model=model)
    config._attn_implementation = attention
    return config


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of ``model.safetensors`` (safetensors, no pickle) or ``pytorch_model.bin``
    (``torch.load(weights_only=True)``, memory-mapped), by the file's suffix."""
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(path, f"not a readable safetensors file ({exc})") from None
    else:
        state = safe_load(path)
    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise InputError(path, "expected a flat state dict {name: tensor}")
    return dict(state)


def remap_keys(state: Mapping[str, Any], module: torch.nn.Module) -> dict[str, Any]:
    """Legacy weight-norm names -> the module's parametrization names (when it has them)."""
    names = set(module.state_dict(keep_vars=True))
    out: dict[str, Any] = {}
    for key, value in state.items():
        for old, new in (("weight_g", "parametrizations.weight.original0"),
                         ("weight_v", "parametrizations.weight.original1")):
            if key.endswith(old):
                candidate = key[: -len(old)] + new
                if candidate in names:
                    key = candidate
                break
        out[key] = value
    return out


def _no_meta(module: torch.nn.Module, path: str | Path, model: str) -> None:
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise InputError(path, f"model {model!r} has tensors the checkpoint did not fill: "
                         f"{left[:3]}")


def load_model(config: Any, state: Mapping[str, torch.Tensor], *, path: str | Path,
               model: str, device: torch.device | str = "cpu") -> torch.nn.Module:
    """``Wav2Vec2ForCTC`` built on the meta device, ``state`` adopted strictly, eval mode."""
    import torch
    from transformers import Wav2Vec2ForCTC

    with torch.device("meta"):
        net = Wav2Vec2ForCTC(config)
    if MASK_KEY not in state and hasattr(net.wav2vec2, "masked_spec_embed"):
        del net.wav2vec2.masked_spec_embed  # training-only; absent from this file
    load_strict(net, remap_keys(state, net), path=path, model=model, assign=True)
    _no_meta(net, path, model)
    return net.to(device=device, dtype=torch.float32).eval()


# --------------------------------------------------------------------------- options
def parse_options(spec: ModelSpec, options: Mapping[str, Any]) -> dict[str, Any]:
    """Validated build options (defaults from the spec), one InputError per bad value."""
    where = f"extract.options.{spec.name}"
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InputError(where, f"unknown option(s) {unknown}; known: {sorted(OPTIONS)}")
    opts = {**OPTIONS, **spec.options, **options}
    eps = opts["normalize_eps"]
    if (isinstance(eps, bool) or not isinstance(eps, int | float) or not math.isfinite(eps)
            or eps <= 0):
        raise InputError(f"{where}.normalize_eps",
                         f"expected a positive number (1e-5 tokenizer, 1e-7 feature extractor), "
                         f"got {eps!r}")
    if opts["attention"] not in ATTENTION:
        raise InputError(f"{where}.attention",
                         f"expected one of {list(ATTENTION)}, got {opts['attention']!r}")
    return {"normalize_eps": float(eps), "attention": opts["attention"]}


# --------------------------------------------------------------------------- runner
def normalize(audio: torch.Tensor, eps: float) -> torch.Tensor:
    """Per clip ``(x - mean) / sqrt(var + eps)``, computed exactly as the tokenizer does (numpy
    float32 on the CPU: the same bits as ``Wav2Vec2Tokenizer``/``Wav2Vec2FeatureExtractor``)."""
    import numpy as np
    import torch

    rows = []
    for clip in audio.detach().float().cpu().numpy():
        rows.append((clip - np.mean(clip)) / np.sqrt(np.var(clip) + eps))
    return torch.from_numpy(np.stack(rows).astype(np.float32)).to(audio.device)


class Wav2Vec2Runner(Runner):
    """Normalised waveform -> ``Wav2Vec2Model`` hidden states, each averaged over frames."""

    def __init__(self, spec: ModelSpec, device: torch.device, model: torch.nn.Module,
                 options: Mapping[str, Any], do_normalize: bool,
                 provenance: Mapping[str, Any]) -> None:
        super().__init__(spec, device)
        self.model = model
        self.options = dict(options)
        self.do_normalize = do_normalize
        self._index = {name: i for i, name in enumerate(layer_names(
            model.config.num_hidden_layers))}
        self._provenance = dict(provenance)

    def prepare(self, audio: torch.Tensor) -> torch.Tensor:
        """The tokenizer's input normalisation (float32, per clip)."""
        x = audio.float()
        return normalize(x, self.options["normalize_eps"]) if self.do_normalize else x

    def hidden_states(self, audio: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """All (batch, frames, dim) hidden states: index 0 = Embedding, i = Encoder_i."""
        out = self.model.wav2vec2(self.prepare(audio), output_hidden_states=True,
                                  return_dict=True)
        return out.hidden_states

    def forward(self, audio: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        states = self.hidden_states(audio)
        return {k: states[self._index[k]].mean(dim=1) for k in layers}

    def info(self) -> dict[str, Any]:
        return dict(self._provenance)


def build(spec: ModelSpec, ctx: BuildContext) -> Runner:
    """Read the config, tokenizer config and weights (all checked), build, return the runner."""
    import transformers

    options = parse_options(spec, ctx.options)
    cfg_path = weight_file(spec, ctx, CONFIG_FILE)
    tok_path = weight_file(spec, ctx, TOKENIZER_FILE)
    w_path = weight_file(spec, ctx, WEIGHTS_FILE)
    raw = read_json(cfg_path, "model config")
    config = parse_config(raw, spec.config, path=cfg_path, model=spec.name,
                          attention=options["attention"])
    if layer_names(config.num_hidden_layers) != spec.layers:
        raise InputError(cfg_path, f"{config.num_hidden_layers} transformer layers do not give "
                         f"the layers of {spec.name!r} {list(spec.layers)}")
    tok = read_json(tok_path, "tokenizer config")
    found = {k: tok.get(k, False) for k in TOKENIZER_CONFIG}  # the tokenizer's defaults
    check_config(found, TOKENIZER_CONFIG, path=tok_path, model=spec.name)
    state = read_state_dict(w_path)
    model = load_model(config, state, path=w_path, model=spec.name, device=ctx.device)
    provenance = {
        "hf_repo": HF_REPO, "weights_file": WEIGHTS_FILE,
        "transformers": transformers.__version__,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.config.items()},
        "tokenizer": found, "options": options,
        "attention": model.config._attn_implementation,
        "masked_spec_embed_stored": MASK_KEY in state,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return Wav2Vec2Runner(spec, ctx.device, model, options, bool(found["do_normalize"]),
                          provenance)


SPECS = [
    ModelSpec(
        name="braindnn_wav2vec2", label="Wav2Vec 2.0", family="Others", training="supervised",
        sample_rate=SAMPLE_RATE, layers=LAYERS, paper_keys={k: k for k in LAYERS},
        build="brainalign.models.wav2vec2:build", fetched=True, config=CONFIG,
        min_samples=MIN_SAMPLES, options=dict(OPTIONS),
        description=f"wav2vec 2.0 base, CTC fine-tuned (HF {HF_REPO}); hidden states "
                    "averaged over frames",
    )
]
