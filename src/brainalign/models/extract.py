"""Activation extraction: audio at any rate -> {layer: one time-averaged vector per sound}.

Each sound is resampled to the model's rate, zero-padded at the end if it is shorter than the
model's receptive field (``ModelSpec.min_samples``; the padded names are recorded in the
metadata), and run in inference mode in batches of equal-length sounds, on CPU or CUDA, with
torch's RNG seeded (random-init controls draw their weights from it). The result is an
:class:`~brainalign.models.activations.Activations` whose metadata records the stimulus order,
layer names and dimensions, package version and weight sha256.

Determinism: on CPU two runs with the same config (incl. ``batch_size`` and ``threads``) give
identical arrays; a different batch size can change float rounding.

Stage for DVC (``extract@<model>``): :func:`run_extract`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from brainalign.errors import InputError
from brainalign.models.activations import Activations, save_activations
from brainalign.models.base import Runner, check_layers, seeded
from brainalign.models.registry import get_spec
from brainalign.models.spec import BuildContext, ModelSpec
from brainalign.models.weights import sha256_file, weights_dir, weights_provenance
from brainalign.params import section

if TYPE_CHECKING:
    import torch

    from brainalign.data.stimuli import StimulusSet

log = logging.getLogger(__name__)

DEMO_MODELS: tuple[str, ...] = (
    "spectemp", "crepe-tiny", "crepe-tiny-random", "pesto", "fcpe", "resemblyzer", "aisfx",
    "aisfx-random", "soundnet", "soundnet-random",
)
"""Offline demo model set (spectemp baseline, six pretrained families, three random controls)."""

_SECTION = "params.yaml: extract"
RESAMPLERS = ("soxr_hq", "torchaudio")


@dataclass(frozen=True)
class ExtractConfig:
    """Extraction settings (params.yaml ``extract:``).

    ``options`` maps a model name to its build options (e.g. ``{"crepe-full": {"hop_ms": 50}}``);
    the reserved option ``layers`` selects a subset of the candidate layers. ``resampler``:
    ``soxr_hq`` (the authors' librosa 0.11 default: ``librosa.load(sr=...)`` resamples with
    soxr at HQ quality) or ``torchaudio`` (band-limited sinc interpolation).
    """

    models: tuple[str, ...] = DEMO_MODELS
    device: str = "auto"
    resampler: str = "soxr_hq"
    batch_size: int = 8
    seed: int = 0
    threads: int | None = None
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        models = self.models
        if (not isinstance(models, tuple) or not models
                or not all(isinstance(m, str) for m in models)):
            raise InputError("extract.models",
                             f"expected a non-empty list of names, got {models!r}")
        if len(set(models)) != len(models):
            raise InputError("extract.models", f"duplicate model names in {list(models)}")
        for m in models:
            if not m.startswith("hear:"):
                get_spec(m, where="extract.models")
        device = self.device
        if not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:")):
            raise InputError("extract.device",
                             f"expected auto, cpu, cuda or cuda:N, got {device!r}")
        if self.resampler not in RESAMPLERS:
            raise InputError("extract.resampler",
                             f"expected one of {list(RESAMPLERS)}, got {self.resampler!r}")
        if self.batch_size < 1:
            raise InputError("extract.batch_size",
                             f"expected an integer >= 1, got {self.batch_size}")
        if self.seed < 0:
            raise InputError("extract.seed", f"expected an integer >= 0, got {self.seed}")
        if self.threads is not None and self.threads < 1:
            raise InputError("extract.threads",
                             f"expected null or an integer >= 1, got {self.threads}")
        options = self.options if self.options is not None else {}
        if not isinstance(options, Mapping):
            raise InputError("extract.options",
                             f"expected a mapping model -> options, got {options!r}")
        for name, opts in options.items():
            if not isinstance(opts, Mapping):
                raise InputError(f"extract.options.{name}", f"expected a mapping, got {opts!r}")
            if not str(name).startswith("hear:"):
                get_spec(str(name), where=f"extract.options.{name}")
            layers = opts.get("layers")
            if layers is not None and (not isinstance(layers, list) or not layers
                                       or not all(isinstance(x, str) for x in layers)):
                raise InputError(f"extract.options.{name}.layers",
                                 f"expected a non-empty list of layer keys, got {layers!r}")
        object.__setattr__(self, "options", {str(k): dict(v) for k, v in options.items()})

    def model_options(self, name: str) -> dict[str, Any]:
        return dict(self.options.get(name, {}))


def parse_config(params: Mapping[str, Any] | None) -> ExtractConfig:
    """Validate a params.yaml ``extract`` section into an :class:`ExtractConfig`."""
    return section(ExtractConfig, params, "extract")


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA if available, else CPU."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"{_SECTION}.device", f"{device!r} requested but CUDA is not available")
    return torch.device(device)


def build_runner(name: str, config: ExtractConfig | None = None,
                 device: torch.device | None = None,
                 data_root: str | Path = "data") -> Runner:
    """Build the runner of model ``name`` (weights checked, random controls seeded).

    Fetched checkpoints are read from ``<data_root>/weights/<name>/``.
    """
    config = config or ExtractConfig()
    spec = get_spec(name, where=f"{_SECTION}.models")
    opts = {**spec.options, **config.model_options(name)}
    opts.pop("layers", None)
    ctx = BuildContext(device=device or resolve_device(config.device), options=opts,
                       weights_dir=weights_dir(data_root, name))
    with seeded(config.seed):
        runner = spec.builder()(spec, ctx)
    runner.context = ctx
    return runner


def _batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Consecutive runs of equal-length sounds, at most ``batch_size`` each (order kept)."""
    out: list[list[int]] = []
    for i, n in enumerate(lengths):
        if out and len(out[-1]) < batch_size and lengths[out[-1][0]] == n:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def _provenance(spec: ModelSpec, runner: Runner) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "label": spec.label, "family": spec.family, "training": spec.training,
        "random_init": spec.random_init, "description": spec.description,
        "weights": weights_provenance(spec, getattr(runner, "context", None)),
    }
    if spec.weights is not None:
        meta["package_version"] = meta["weights"]["version"]
    if spec.paper_keys:
        meta["paper_keys"] = dict(spec.paper_keys)
    meta["runner"] = runner.info()
    return meta


def extract_activations(
    model: str | Runner,
    audio: Sequence[np.ndarray],
    sample_rate: int,
    names: Sequence[str],
    config: ExtractConfig | None = None,
    progress: bool = True,
) -> Activations:
    """Run one model over ``audio`` (mono float arrays at ``sample_rate``) -> Activations.

    ``model`` is a registered name (``hear:<module>`` included) or an already built runner.
    """
    import torch

    from brainalign.data.stimuli import resample

    config = config or ExtractConfig()
    if len(audio) != len(names) or not audio:
        raise InputError("audio", f"expected one name per sound, got {len(audio)} sounds and "
                         f"{len(names)} names")
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    runner = model if isinstance(model, Runner) else build_runner(model, config)
    spec = runner.spec
    layers = check_layers(runner, config.model_options(spec.name).get("layers"),
                          f"{_SECTION}.options.{spec.name}.layers")
    clips, padded = [], []
    for name, clip in zip(names, audio, strict=True):
        clip = np.asarray(clip, dtype=np.float32)
        if clip.ndim != 1 or clip.size == 0:
            raise InputError(name, f"expected non-empty mono audio, got shape {clip.shape}")
        if not np.isfinite(clip).all():
            raise InputError(name, "audio holds NaN or infinite samples")
        clip = resample(clip, sample_rate, runner.sample_rate, config.resampler)
        if clip.size < runner.min_samples:
            clip = np.pad(clip, (0, runner.min_samples - clip.size))
            padded.append(name)
        clips.append(clip)
    if padded:
        log.warning("%s: %d sound(s) shorter than the receptive field (%d samples at %d Hz) "
                    "were zero-padded: %s", spec.name, len(padded), runner.min_samples,
                    runner.sample_rate, padded[:5])
    t0 = time.perf_counter()
    chunks: dict[str, list[np.ndarray]] = {k: [] for k in layers}
    with torch.inference_mode():
        for idx in tqdm(_batches([c.size for c in clips], config.batch_size),
                        desc=f"extract {spec.name}", unit="batch", leave=False,
                        disable=not progress):
            batch = torch.from_numpy(np.stack([clips[i] for i in idx])).to(runner.device)
            out = runner.forward(batch, layers)
            for key in layers:
                arr = out[key].detach().float().cpu().numpy()
                if arr.ndim != 2 or arr.shape[0] != len(idx):
                    raise RuntimeError(f"{spec.name}:{key} returned shape {arr.shape}")
                chunks[key].append(arr)
    seconds = time.perf_counter() - t0
    acts = {k: np.ascontiguousarray(np.concatenate(v), dtype=np.float32) for k, v in chunks.items()}
    for key, arr in acts.items():
        if not np.isfinite(arr).all():
            log.warning("%s:%s holds non-finite values", spec.name, key)
    meta = {
        **_provenance(spec, runner),
        "sample_rate": runner.sample_rate,
        "source_sample_rate": sample_rate,
        "resampler": config.resampler if sample_rate != runner.sample_rate else None,
        "layer_dims": {k: int(v.shape[1]) for k, v in acts.items()},
        "min_samples": runner.min_samples,
        "padded": list(padded),
        "device": str(runner.device),
        "torch_version": torch.__version__,
        "config": {**asdict(config), "models": list(config.models)},
    }
    # The timing is logged, not stored: the file must be the same bytes on every run.
    log.debug("%s: %d sounds through %d layers in %.1f s on %s", spec.name, len(clips),
             len(acts), seconds, runner.device)
    return Activations(model=spec.name, layers=acts, stimuli=tuple(names), meta=meta)


def run_extract(
    model_name: str,
    wav_dir: str | Path,
    labels_csv: str | Path,
    out_path: str | Path,
    params: Mapping[str, Any] | None = None,
    data_root: str | Path = "data",
    stimuli: StimulusSet | None = None,
) -> dict[str, Any]:
    """DVC stage ``extract@<model>``: the 165 sounds -> ``out_path`` (NPZ); returns a summary.

    ``params`` is the params.yaml ``extract`` section. The sounds are read in canonical order at
    their own rate and each is resampled, one at a time, straight to the model's rate with the
    configured resampler; the activation file records the files (name, sha256), their rate and
    the resampler. ``stimuli``: an already loaded stimulus set in its order (a NIfTI dataset's
    own sounds, :meth:`brainalign.data.layout.DataLayout.stimulus_set`) instead of the 165.
    """
    from brainalign.data.stimuli import load_stimuli

    config = parse_config(params)
    runner = build_runner(model_name, config, data_root=data_root)
    if stimuli is None:
        stimuli = load_stimuli(wav_dir, labels_csv, sample_rate=None, source_rate=None)
    t0 = time.perf_counter()
    acts = extract_activations(runner, stimuli.audio, stimuli.sample_rate, stimuli.names, config)
    seconds = time.perf_counter() - t0
    acts.meta["stimuli_source"] = {
        "folder": str(wav_dir),
        "sample_rate": stimuli.sample_rate,
        "sha256": dict(zip(stimuli.names, stimuli.sha256, strict=True)),
    }
    save_activations(out_path, acts)
    return {
        "model": acts.model,
        "n_sounds": len(acts.stimuli),
        "layers": acts.layer_names,
        "layer_dims": acts.meta["layer_dims"],
        "seconds": round(seconds, 3),
        "device": acts.meta["device"],
        "weights": _weights_digest(acts.meta.get("weights") or {}),
        "output_sha256": sha256_file(out_path),
    }


def _weights_digest(weights: Mapping[str, Any]) -> str | dict[str, str] | None:
    """The weights' sha256: one packaged file, {file: sha256} of fetched ones, or None."""
    if weights.get("kind") == "packaged":
        return weights["sha256"]
    if weights.get("kind") == "fetched":
        return {name: info.get("sha256") for name, info in weights["files"].items()}
    return None


def registry_embedder(
    name: str, config: ExtractConfig | None = None, data_root: str | Path = "data",
) -> tuple[Callable[[list[np.ndarray], int], dict[str, np.ndarray]], int]:
    """(embed, sample_rate) for the downstream probe: every candidate layer, time-averaged.

    ``embed(audio_list, sample_rate)`` takes clips at the model's rate (the returned rate) and
    runs the same extraction as the ``extract`` stage.
    """
    config = config or ExtractConfig()
    runner = build_runner(name, config, data_root=data_root)

    def embed(audio: list[np.ndarray], sample_rate: int) -> dict[str, np.ndarray]:
        names = [f"clip{i}" for i in range(len(audio))]
        return extract_activations(runner, audio, sample_rate, names, config,
                                   progress=False).layers

    return embed, runner.sample_rate
