"""The miniature pretraining of the embedded default: a small EnCodecMAE trained here on CPU.

The 100 published checkpoints of Fig. 5 cannot be downloaded offline, so ``make demo`` trains a
miniature instead and scores its checkpoints with the very same loader, stages and figure.

- **Model.** EnCodecMAE's own modules (:mod:`brainalign.models.encodecmae`: the mel256 front
  end, the ``post_net`` projection, the sinusoidal positional encoding with a learnable scale,
  the ResiDual visible encoder with one FFN shared by all layers and channel-interleaved heads)
  at a reduced width (``model_dim``, ``num_heads``, ``ff_dim``; 10 layers by default, so the
  Fig. 5 layer keys exist), plus the training-only parts upstream's ``EncodecMAE`` has: the
  visible encoder's ``post_net``, a ``decoder`` (its own positional encoding, ResiDual layers,
  ``final_norm``) and a ``head.layer``. State-dict keys are upstream's, so the checkpoint loads
  strictly through :func:`~brainalign.models.encodecmae.load_pretraining_checkpoint`.
- **Objective (the one substitution).** Upstream predicts the EnCodec RVQ tokens of masked
  frames (cross-entropy over 8 x 1024 classes). EnCodec's weights are unavailable offline, so
  the head here reconstructs the masked **mel frames** (the normalised 256-band front-end
  output) by mean squared error. Everything else follows upstream (habla-liaa/encodecmae
  @2dd6759 ``models/mae.py``, ``models/masks``, ``models/losses``, ``configs``): time-gap
  masking (``TimeGapMask``: gaps of 15 frames until half the frames are masked, trimmed to
  exactly ``int(T * 0.5)``), the positional encoding added before dropping the masked frames,
  the visible frames alone through the encoder, its output projected and scattered back with
  zeros at the masked positions (``PatchoutMask.unmask``), the decoder over the whole sequence,
  loss = 0.9 x masked + 0.1 x unmasked frames, AdamW (betas 0.9/0.95, weight decay 0.05),
  Xavier-uniform Linear weights with zero biases and unit LayerNorms (``_init_weights``).
- **Audio.** Synthetic clips at 24 kHz, none of them one of the 165 test sounds: the mini
  tasks' generators (:mod:`brainalign.downstream.mini_tasks`: harmonic tones of five timbres,
  and mixtures of tones, noise bands, click trains, chirps, AM tones and harmonic buzz), drawn
  from one seeded generator. Their front-end features are computed once.
- **Checkpoints.** ``epoch=E-step=N.ckpt`` every ``checkpoint_every`` steps from step 0 (the
  initialisation) in Lightning's layout (``epoch``, ``global_step``,
  ``pytorch-lightning_version``, ``state_dict``, ``loops``, ``callbacks``,
  ``optimizer_states`` with the AdamW state, ``lr_schedulers``), and ``miniature.json``: the
  configuration, the extraction model's config, each file's step and sha256, and the loss.
- **Determinism.** Seeded torch and numpy generators, ``threads`` CPU threads (1 by default),
  deterministic algorithms: two runs write identical files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from brainalign.atomic import write_bytes, write_json
from brainalign.errors import InputError
from brainalign.models import encodecmae as E
from brainalign.models.spec import ModelSpec
from brainalign.pretraining.config import MiniatureConfig

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MANIFEST = "miniature.json"
KIND = "miniature pretraining"
LABEL = "miniature pretraining, simulated voxels"
"""How every output of the embedded default is marked (the voxels are simulated there too)."""
CHECKPOINT_DIR = "pretrain_checkpoints/finegrained"
"""``ModelCheckpoint.dirpath`` recorded in the files (fixed, so every workspace writes the same
bytes; upstream's ``fit_model`` uses ``checkpoint_folder='pretrain_checkpoints'``)."""
LIGHTNING_VERSION = "2.5.5"
"""pytorch_lightning as pinned by the authors' environment (mrpep/braindnn environment.yml)."""
OBJECTIVE = ("masked mel-frame reconstruction (MSE) in place of EnCodec token prediction: the "
             "EnCodec targets are unavailable offline")


# --------------------------------------------------------------------------- configuration
def encoder_config(cfg: MiniatureConfig) -> E.EncoderConfig:
    """The extraction model of the miniature: mel256-ec-base's config at the reduced size."""
    base = next(s for s in E.SPECS if s.name == E.PRETRAIN_MODEL)
    values = {**base.config, "model_dim": cfg.model_dim, "num_layers": cfg.num_layers,
              "num_heads": cfg.num_heads, "head_dim": cfg.model_dim // cfg.num_heads,
              "ff_dim": cfg.ff_dim}
    return E.EncoderConfig.from_values(values, where="pretraining.miniature")


def miniature_spec(values: dict[str, Any]) -> ModelSpec:
    """mel256-ec-base's spec with the miniature's configuration (``EncoderConfig.values()``)."""
    base = next(s for s in E.SPECS if s.name == E.PRETRAIN_MODEL)
    layers = tuple(str(i) for i in range(int(values["num_layers"])))
    return dataclasses.replace(
        base, config=dict(values), layers=layers,
        paper_keys={k: f"{base.name}_{k}" for k in layers},
        description=(f"{KIND}: EnCodecMAE mel256 architecture, {len(layers)} layers of width "
                     f"{values['model_dim']}, {OBJECTIVE}"),
    )


# --------------------------------------------------------------------------- audio
def synthetic_corpus(cfg: MiniatureConfig) -> np.ndarray:
    """(n_clips, samples) float32 at 24 kHz: half harmonic tones, half source mixtures."""
    from brainalign.downstream import mini_tasks as M

    tasks = M.MiniTasksConfig(sample_rate=E.SAMPLE_RATE, clip_seconds=cfg.clip_seconds)
    rng = np.random.default_rng([cfg.seed, 24_000])
    clips = []
    for i in range(cfg.n_clips):
        if i % 2 == 0:
            midi = int(rng.integers(40, 85))
            audio = M._harmonic_tone(midi, M.TIMBRES[int(rng.integers(len(M.TIMBRES)))],
                                     tasks, rng)
        else:
            names = rng.choice(len(M.SOURCES), size=int(rng.integers(1, 4)), replace=False)
            mix = sum(M._source(M.SOURCES[int(k)], tasks, rng) for k in names)
            audio = M._normalise(np.asarray(mix), float(rng.uniform(0.2, 0.7)))
        clips.append(np.clip(audio, -1.0, 1.0).astype(np.float32))
    return np.stack(clips)


def corpus_features(audio: np.ndarray) -> torch.Tensor:
    """The front end the checkpoints are loaded with: (n, frames, 256) normalised log-mel."""
    import torch

    from brainalign.models.frontends.kaldi import ENCODECMAE_MEL256, fbank

    return torch.stack([fbank(torch.from_numpy(clip), ENCODECMAE_MEL256) for clip in audio])


def time_gap_mask(rng: np.random.Generator, n_frames: int, prop: float, gap: int) -> np.ndarray:
    """Upstream's TimeGapMask for one clip: gaps of ``gap`` frames at random starts until
    ``int(n_frames * prop)`` are masked; the surplus is unmasked at the first gap's start."""
    target = int(n_frames * prop)
    mask = np.zeros(n_frames, dtype=bool)
    starts: list[int] = []
    while mask.sum() < target:
        start = int(rng.integers(0, max(0, n_frames - gap) + 1))
        starts.append(start)
        mask[start:start + gap] = True
    surplus = int(mask.sum()) - target
    if surplus > 0:
        first = starts[0]
        idx = np.flatnonzero(mask[first:]) + first
        mask[idx[:surplus]] = False
    return mask


# --------------------------------------------------------------------------- model
def build_model(cfg: MiniatureConfig) -> torch.nn.Module:
    """The training module (upstream key layout), initialised as upstream's ``_init_weights``
    under torch's current RNG."""
    import torch
    from torch import nn

    enc_cfg = encoder_config(cfg)
    dec_cfg = dataclasses.replace(enc_cfg, num_layers=cfg.decoder_layers)

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(cfg.model_dim, enc_cfg.feature_dim)

    class MiniatureMAE(nn.Module):
        """wav_encoder, masker, visible_encoder (+ post_net), head, decoder: upstream's keys."""

        def __init__(self) -> None:
            super().__init__()
            extraction = E.build_encoder(enc_cfg)
            self.wav_encoder = extraction.wav_encoder
            self.masker = extraction.masker
            self.visible_encoder = extraction.visible_encoder
            self.visible_encoder.post_net = nn.Linear(cfg.model_dim, cfg.model_dim)
            self.head = Head()
            other = E.build_encoder(dec_cfg)
            self.decoder = other.visible_encoder
            self.decoder.positional_encoder = other.masker.positional_encoder

        @staticmethod
        def _residual(stack: nn.Module, x: torch.Tensor) -> torch.Tensor:
            x0 = x1 = x
            for layer in stack.encoder_layers:
                x0, x1 = layer(x0, x1, None)
            return x0 + stack.final_norm(x1)

        def forward(self, feats: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
            """(batch, T, bins) features, (batch, T) bool mask of equal counts -> predictions."""
            n, t, _ = feats.shape
            tokens = self.masker.positional_encoder(self.wav_encoder(feats))
            visible = tokens[~masked].view(n, -1, tokens.shape[-1])
            z = self.visible_encoder.post_net(self._residual(self.visible_encoder, visible))
            full = torch.zeros(n, t, z.shape[-1], dtype=z.dtype)
            full = full.masked_scatter((~masked)[..., None].expand_as(full), z)
            y = self._residual(self.decoder, self.decoder.positional_encoder(full))
            return self.head.layer(y)

    model = MiniatureMAE()
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    with torch.no_grad():
        model.masker.positional_encoder.scale.fill_(1.0)
        model.decoder.positional_encoder.scale.fill_(1.0)
    return model


def _loss(pred: torch.Tensor, target: torch.Tensor, masked: torch.Tensor,
          weight: float) -> torch.Tensor:
    frame = (pred - target).pow(2).mean(dim=-1)
    m = masked.to(frame.dtype)
    masked_loss = (frame * m).sum() / m.sum().clamp(min=1)
    unmasked_loss = (frame * (1 - m)).sum() / (1 - m).sum().clamp(min=1)
    return weight * masked_loss + (1 - weight) * unmasked_loss


# --------------------------------------------------------------------------- checkpoints
def lightning_checkpoint(model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                         epoch: int, every: int, dirpath: str) -> dict[str, Any]:
    """The dict a Lightning ``ModelCheckpoint`` saves (no ``hyper_parameters``: upstream never
    calls ``save_hyperparameters``)."""
    import torch

    progress = {"ready": epoch, "started": epoch, "processed": epoch, "completed": epoch}
    callback = (f"ModelCheckpoint{{'monitor': None, 'mode': 'min', 'every_n_train_steps': "
                f"{every}, 'every_n_epochs': 0, 'train_time_interval': None}}")
    return {
        "epoch": epoch,
        "global_step": step,
        "pytorch-lightning_version": LIGHTNING_VERSION,
        "state_dict": model.state_dict(),
        "loops": {
            "fit_loop": {"state_dict": {}, "epoch_loop.state_dict": {
                "_batches_that_stepped": step},
                "epoch_progress": {"total": dict(progress), "current": dict(progress)}},
            "validate_loop": {"state_dict": {}}, "test_loop": {"state_dict": {}},
            "predict_loop": {"state_dict": {}},
        },
        "callbacks": {callback: {
            "monitor": None, "best_model_score": None, "best_model_path": "",
            "current_score": None, "dirpath": dirpath, "best_k_models": {},
            "kth_best_model_path": "", "kth_value": torch.tensor(float("inf")),
            "last_model_path": "",
        }},
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [],
    }


def checkpoint_name(epoch: int, step: int) -> str:
    """Lightning's default ``{epoch}-{step}`` file name."""
    return f"epoch={epoch}-step={step}.ckpt"


def _ckpt_bytes(ckpt: dict[str, Any]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(ckpt, buf)
    return buf.getvalue()


# --------------------------------------------------------------------------- training
def train(cfg: MiniatureConfig, out_dir: str | Path) -> dict[str, Any]:
    """Run the miniature pretraining; write its checkpoints and manifest; return the manifest.

    Files of an earlier run in ``out_dir`` that this run does not write are removed.
    """
    import torch

    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    audio = synthetic_corpus(cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            feats = corpus_features(audio)
            manifest = _train(cfg, feats, out_dir)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    manifest["corpus"] = {
        "generator": "brainalign.downstream.mini_tasks (harmonic tones; source mixtures)",
        "n_clips": int(audio.shape[0]), "sample_rate": E.SAMPLE_RATE,
        "samples": int(audio.shape[1]),
        "sha256": hashlib.sha256(np.ascontiguousarray(audio).tobytes()).hexdigest(),
        "features": list(feats.shape),
    }
    keep = {MANIFEST} | {c["file"] for c in manifest["checkpoints"]}
    for stale in out_dir.glob("*.ckpt"):
        if stale.name not in keep:
            stale.unlink()
    write_json(out_dir / MANIFEST, manifest)
    log.info("miniature pretraining: %d steps, %d checkpoints in %.1f s (final loss %.4f)",
             cfg.steps, len(manifest["checkpoints"]), time.perf_counter() - t0,
             manifest["checkpoints"][-1]["loss"] or float("nan"))
    return manifest


def _train(cfg: MiniatureConfig, feats: torch.Tensor, out_dir: Path) -> dict[str, Any]:
    import torch

    n_clips, n_frames, _ = feats.shape
    if n_frames < cfg.mask_gap:
        raise InputError("pretraining.miniature.mask_gap",
                         f"{cfg.mask_gap} frames exceed the clips' {n_frames} frames")
    model = build_model(cfg)
    model.train()
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, betas=(0.9, 0.95),
                                  weight_decay=cfg.weight_decay, foreach=False)
    rng = np.random.default_rng([cfg.seed, 1])
    per_epoch = max(1, n_clips // cfg.batch_size)
    order = rng.permutation(n_clips)
    enc = encoder_config(cfg)
    checkpoints: list[dict[str, Any]] = []
    running: list[float] = []

    def save(step: int) -> None:
        epoch = step // per_epoch
        data = _ckpt_bytes(lightning_checkpoint(model, optimizer, step, epoch,
                                                cfg.checkpoint_every, CHECKPOINT_DIR))
        name = checkpoint_name(epoch, step)
        write_bytes(out_dir / name, data)
        loss = float(np.mean(running)) if running else None
        checkpoints.append({"file": name, "step": step, "epoch": epoch,
                            "sha256": hashlib.sha256(data).hexdigest(), "loss": loss})
        running.clear()

    save(0)
    for step in range(1, cfg.steps + 1):
        pos = ((step - 1) % per_epoch) * cfg.batch_size
        if pos == 0 and step > 1:
            order = rng.permutation(n_clips)
        idx = order[pos:pos + cfg.batch_size]
        masked = torch.from_numpy(np.stack([
            time_gap_mask(rng, n_frames, cfg.mask_prop, cfg.mask_gap) for _ in idx]))
        batch = feats[torch.from_numpy(idx)]
        loss = _loss(model(batch, masked), batch, masked, cfg.masked_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running.append(float(loss.detach()))
        if step % cfg.checkpoint_every == 0:
            save(step)
    return {
        "kind": KIND, "label": LABEL, "objective": OBJECTIVE,
        "model": E.PRETRAIN_MODEL, "config": cfg.as_dict(), "encoder_config": enc.values(),
        "parameters": sum(p.numel() for p in params), "steps_per_epoch": per_epoch,
        "torch_version": torch.__version__, "checkpoints": checkpoints,
    }
