"""Speech2Text large, LibriSpeech ASR (facebook/s2t-large-librispeech-asr), via transformers.

Sources of the facts used here:

- Checkpoint: Hugging Face ``facebook/s2t-large-librispeech-asr`` (weights unchanged since
  a7472a9 "update processor and readme", 2021-03-10; the registry resolves ``main`` to its
  commit at the first download): ``pytorch_model.bin`` (a flat state dict of
  ``Speech2TextForConditionalGeneration``, read with ``torch.load(weights_only=True)``,
  memory-mapped), ``config.json`` and ``preprocessor_config.json`` (read as JSON).
- Tuckute's extraction (gretatuckute/asr @d9a8d0f, ``get_S2T_activations.py``):
  ``Speech2TextProcessor`` features, then ``generate(..., output_hidden_states=True,
  return_dict_in_generate=True).encoder_hidden_states``, each ``squeeze().mean(axis=0)``. At
  batch 1 those are one encoder run (in transformers 4.56.1 the beam expansion repeats
  ``last_hidden_state`` only, not the ``hidden_states`` tuple; checked by the tests).
- The implementation is transformers 4.56.1 (the authors' pin):
  ``models/speech_to_text/modeling_speech_to_text.py`` (``Speech2TextEncoder``: conv subsampler
  of two Conv1d(k 5, stride 2, pad 2) + GLU, ``embed_scale`` sqrt(d_model), sinusoidal positions
  from index ``pad_token_id + 1`` (a non-persistent buffer, not in the file), pre-LN layers,
  ``layer_norm`` after the last; ``hidden_states`` = [embedding, output of layers 1..11,
  ``layer_norm``(output of layer 12)]) and ``feature_extraction_speech_to_text.py``
  (``Speech2TextFeatureExtractor``: waveform x 2^15 -> ``torchaudio.compliance.kaldi.fbank``
  with 80 bins, dither 0 -> utterance CMVN: subtract the per-bin mean over frames, divide by the
  per-bin population standard deviation).

Front end: the shared Kaldi preset ``frontends.kaldi.S2T`` (the same fbank call; the preset
leaves the CMVN to this module), then :func:`utterance_cmvn`, which repeats transformers' numpy
float32 operations in their order (centre, then divide by the standard deviation of the centred
features). The features are bit-identical to the feature extractor's on the CPU (tested). The
float32 rounding matters: fbank values near 25 with small per-bin spreads make a float64 or a
torch float32 CMVN differ from transformers by ~3e-5 (noise) to ~4e-4 (a tone in noise). A bin
of zero variance (constant input only) gives 0 here where transformers divides by zero.
``preprocessor_config.json`` is checked to ask for exactly this (80 bins, 16 kHz, CMVN of means
and variances, dither 0).

Loading: ``Speech2TextForConditionalGeneration`` is built from the checkpoint's ``config.json``
(``Speech2TextConfig``, no network) on the ``meta`` device after its architecture-defining
values are checked against the spec's ``config``; every tensor of the file is adopted strictly
(``load_strict(..., assign=True)``; ``lm_head.weight`` may be absent when the file ties it to
``model.decoder.embed_tokens.weight``). Only the encoder is kept and run; the sinusoidal
position table is then computed (it is not stored).

Layers (the paper's 13): ``Embedding`` = ``hidden_states[0]`` (32 x subsampled features +
positions), ``Encoder_1..11`` = the un-normed residual stream after each layer, ``Encoder_12``
= ``encoder.layer_norm`` of the last layer's output; each (batch, frames, 1024) averaged over
frames. A 2-s clip: 198 fbank frames -> 99 -> 50 encoder frames. ``min_samples`` = 560 (two
fbank frames: one would have zero variance per bin). Each clip's features are computed alone
(no padding, no attention mask: Tuckute's mask was all ones); equal-length clips are batched
through the encoder. Attention is transformers' eager path (the only one it has for S2T).
No build options.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brainalign.errors import InputError
from brainalign.models.base import Runner
from brainalign.models.frontends.kaldi import S2T as S2T_FBANK
from brainalign.models.frontends.kaldi import fbank
from brainalign.models.spec import BuildContext, ModelSpec
from brainalign.models.weights import check_config, load_strict, safe_load, weight_file

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 16_000
HF_REPO = "facebook/s2t-large-librispeech-asr"
WEIGHTS_FILE = "pytorch_model.bin"
CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
LAYERS = ("Embedding", *(f"Encoder_{i}" for i in range(1, 13)))

CONFIG: dict[str, Any] = {
    "model_type": "speech_to_text",
    "d_model": 1024,
    "encoder_layers": 12,
    "encoder_attention_heads": 16,
    "encoder_ffn_dim": 4096,
    "activation_function": "relu",
    "conv_kernel_sizes": (5, 5),
    "conv_channels": 1024,
    "num_conv_layers": 2,
    "input_feat_per_channel": 80,
    "input_channels": 1,
    "scale_embedding": True,
    "max_source_positions": 6000,
    "pad_token_id": 1,
    "vocab_size": 10000,
}
"""Architecture-defining values of ``config.json`` (after transformers' defaults)."""

PREPROCESSOR: dict[str, Any] = {
    "feature_size": 80, "num_mel_bins": 80, "sampling_rate": SAMPLE_RATE, "dither": 0.0,
    "do_ceptral_normalize": True, "normalize_means": True, "normalize_vars": True,
}
"""What ``preprocessor_config.json`` must say (absent keys: the feature extractor's defaults)."""

_PREPROCESSOR_DEFAULTS = {"feature_size": 80, "num_mel_bins": 80, "sampling_rate": 16000,
                          "dither": 0.0, "do_ceptral_normalize": True, "normalize_means": True,
                          "normalize_vars": True}


def layer_names(n_layers: int) -> tuple[str, ...]:
    """The layer keys of an encoder with ``n_layers`` layers."""
    return ("Embedding", *(f"Encoder_{i}" for i in range(1, n_layers + 1)))


def n_frames(n_samples: int, n_conv: int = 2) -> int:
    """Encoder frames for ``n_samples`` at 16 kHz: fbank (snip edges), then n_conv halvings."""
    t = S2T_FBANK.n_frames(n_samples)
    for _ in range(n_conv):
        t = (t - 1) // 2 + 1 if t > 0 else 0
    return t


MIN_SAMPLES = int(S2T_FBANK.sample_frequency * (S2T_FBANK.frame_length + S2T_FBANK.frame_shift)
                  / 1000)


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
                 model: str) -> Any:
    """``config.json`` -> ``Speech2TextConfig``, checked against ``expected`` (spec config)."""
    from transformers import Speech2TextConfig

    if raw.get("model_type") != "speech_to_text":
        raise InputError(path, f"the checkpoint's config is not that of {model!r}: model_type="
                         f"{raw.get('model_type', '<absent>')!r} (expected 'speech_to_text')")
    try:
        config = Speech2TextConfig(**raw)
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"not a valid Speech2Text config ({exc})") from None
    found = {k: _plain(v) for k, v in config.to_dict().items()}
    check_config(found, expected, path=path, model=model)
    config._attn_implementation = "eager"
    return config


def check_preprocessor(raw: Mapping[str, Any], *, path: str | Path, model: str) -> dict[str, Any]:
    """The feature extractor settings (defaults filled in) after checking them."""
    found = {k: raw.get(k, v) for k, v in _PREPROCESSOR_DEFAULTS.items()}
    check_config(found, PREPROCESSOR, path=path, model=model)
    if (found["num_mel_bins"] != S2T_FBANK.num_mel_bins
            or found["sampling_rate"] != S2T_FBANK.sample_frequency):
        raise InputError(path, "the preprocessor does not match the S2T fbank preset")
    return found


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """``pytorch_model.bin``: ``torch.load(weights_only=True)`` (memory-mapped), flat tensors."""
    import torch

    state = safe_load(path)
    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise InputError(path, "expected a flat state dict {name: tensor}")
    return dict(state)


def load_encoder(config: Any, state: Mapping[str, torch.Tensor], *, path: str | Path,
                 model: str, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The checkpoint adopted strictly by the whole model on ``meta``; its encoder, eval mode."""
    import torch
    from transformers import Speech2TextForConditionalGeneration

    with torch.device("meta"):
        net = Speech2TextForConditionalGeneration(config)
    state = dict(state)
    tied = "model.decoder.embed_tokens.weight"
    if "lm_head.weight" not in state and config.tie_word_embeddings and tied in state:
        state["lm_head.weight"] = state[tied]
    load_strict(net, state, path=path, model=model, assign=True)
    encoder = net.model.encoder
    del net
    pe = encoder.embed_positions
    table = pe.get_embedding(pe.weights.shape[0], pe.embedding_dim, pe.padding_idx)
    pe.register_buffer("weights", table.to(torch.float32), persistent=False)
    left = [n for n, t in [*encoder.named_parameters(), *encoder.named_buffers()] if t.is_meta]
    if left:
        raise InputError(path, f"model {model!r} has tensors the checkpoint did not fill: "
                         f"{left[:3]}")
    return encoder.to(device=device, dtype=torch.float32).eval()


# --------------------------------------------------------------------------- front end
def utterance_cmvn(feats: torch.Tensor) -> torch.Tensor:
    """(frames, bins) -> per-bin mean 0, population std 1, float32, computed exactly as
    ``Speech2TextFeatureExtractor.utterance_cmvn`` (numpy float32 on the CPU: centre, then divide
    by the std of the centred features); a zero-variance bin is left at 0 instead of 0/0."""
    import numpy as np
    import torch

    x = feats.detach().float().cpu().numpy()
    x = np.subtract(x, x.mean(axis=0))
    std = x.std(axis=0)
    x = np.divide(x, np.where(std > 0, std, np.float32(1.0)))
    return torch.from_numpy(x.astype(np.float32)).to(feats.device)


def features(wave: torch.Tensor) -> torch.Tensor:
    """One clip (samples,) in [-1, 1] -> normalised (frames, 80) fbank."""
    return utterance_cmvn(fbank(wave, S2T_FBANK))


class S2TRunner(Runner):
    """Per-clip fbank + CMVN -> ``Speech2TextEncoder`` hidden states, averaged over frames."""

    def __init__(self, spec: ModelSpec, device: torch.device, encoder: torch.nn.Module,
                 provenance: Mapping[str, Any]) -> None:
        super().__init__(spec, device)
        self.encoder = encoder
        self._index = {name: i for i, name in enumerate(layer_names(len(encoder.layers)))}
        self._provenance = dict(provenance)

    def prepare(self, audio: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> (batch, frames, 80) input features, one clip at a time."""
        import torch

        return torch.stack([features(clip) for clip in audio])

    def hidden_states(self, audio: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """All (batch, frames, dim) encoder hidden states: 0 = Embedding, i = Encoder_i."""
        out = self.encoder(self.prepare(audio), output_hidden_states=True, return_dict=True)
        return out.hidden_states

    def forward(self, audio: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        states = self.hidden_states(audio)
        return {k: states[self._index[k]].mean(dim=1) for k in layers}

    def info(self) -> dict[str, Any]:
        return dict(self._provenance)


def build(spec: ModelSpec, ctx: BuildContext) -> Runner:
    """Read the configs and weights (all checked), build the encoder, return the runner."""
    import transformers

    if ctx.options:
        raise InputError(f"extract.options.{spec.name}",
                         f"unknown option(s) {sorted(ctx.options)}; this model has none")
    cfg_path = weight_file(spec, ctx, CONFIG_FILE)
    pre_path = weight_file(spec, ctx, PREPROCESSOR_FILE)
    w_path = weight_file(spec, ctx, WEIGHTS_FILE)
    config = parse_config(read_json(cfg_path, "model config"), spec.config, path=cfg_path,
                          model=spec.name)
    if layer_names(config.encoder_layers) != spec.layers:
        raise InputError(cfg_path, f"{config.encoder_layers} encoder layers do not give the "
                         f"layers of {spec.name!r} {list(spec.layers)}")
    pre = check_preprocessor(read_json(pre_path, "preprocessor config"), path=pre_path,
                             model=spec.name)
    state = read_state_dict(w_path)
    encoder = load_encoder(config, state, path=w_path, model=spec.name, device=ctx.device)
    del state
    provenance = {
        "hf_repo": HF_REPO, "weights_file": WEIGHTS_FILE,
        "transformers": transformers.__version__,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.config.items()},
        "preprocessor": pre, "fbank": S2T_FBANK.fbank_kwargs(),
        "input_scale": S2T_FBANK.input_scale, "attention": "eager",
        "encoder_parameters": sum(p.numel() for p in encoder.parameters()),
    }
    return S2TRunner(spec, ctx.device, encoder, provenance)


SPECS = [
    ModelSpec(
        name="braindnn_s2t", label="S2T", family="Others", training="supervised",
        sample_rate=SAMPLE_RATE, layers=LAYERS, paper_keys={k: k for k in LAYERS},
        build="brainalign.models.s2t:build", fetched=True, config=CONFIG,
        frontend="brainalign.models.frontends.kaldi", min_samples=MIN_SAMPLES,
        description=f"Speech2Text large ASR encoder (HF {HF_REPO}); hidden states averaged "
                    "over frames",
    )
]
