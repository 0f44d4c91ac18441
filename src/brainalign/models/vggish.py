"""VGGish (Hershey et al. 2017), the torchvggish port, as Tuckute et al. 2023 tapped it.

Our own implementation of the torchvggish network and of the VGGish log-mel front end, loaded
strictly from the harritaylor/torchvggish v0.1 release files. The tests compare both with the
torchvggish 0.2 PyPI package (``VGG``, ``vggish_input.waveform_to_examples``) on random weights.

**Sources of the facts** (read, not copied):

- gretatuckute/torchvggish @722bdf0: ``hubconf.py`` (the two release URLs), ``run_model.py``
  (``torch.hub.load('harritaylor/torchvggish', 'vggish')``, hooks on every ReLU / MaxPool2d,
  ``model.forward(wav path)``), ``extractor_utils.py`` (``SaveOutput``: key =
  ``str(module) + '--<occurrence>'``; 4-D maps [N, C, T, M] -> moveaxis(2, 1) -> [N, T, C*M]
  -> mean over T -> mean over the N examples; 2-D -> mean over N), ``torchvggish/vggish.py``
  (``make_layers`` [64, M, 128, M, 256, 256, M, 512, 512, M], the transpose(1, 3) /
  transpose(1, 2) flatten, ``embeddings`` Linear-ReLU x 3 ending in a ReLU; the fork only sets
  ``inplace=False``), ``vggish_input.py``, ``mel_features.py``, ``vggish_params.py``.
- harritaylor/torchvggish @f3f9096 (what ``torch.hub.load`` runs): the same network with
  ``ReLU(inplace=True)`` (the repr in the paper's keys); ``wavfile_to_examples``:
  ``soundfile.read(dtype='int16') / 32768``.
- torchvggish 0.2 (PyPI, the harritaylor code): same network, front end and parameters.
- /work/shared/docs/paper-models.md sections 1.2 (rows "VGGish", "CNN maps"), 3.8 and 4.2
  (72,141,184 parameters; 2 s -> 198 frames -> 2 examples of 96).

**Files** (``data/weights/braindnn_vggish/``): ``vggish-10086976.pth``, a flat state dict
(``features.{0,3,6,8,11,13}`` 3x3 convs, ``embeddings.{0,2,4}`` Linear 12288 -> 4096 -> 4096 ->
128), read with ``torch.load(weights_only=True)`` (memory mapped if it is a zip checkpoint;
a 2019 release is probably the legacy format) after the sha256 check, built on the ``meta``
device and adopted (``assign=True``); the widths come from the shapes and are checked against
the spec's ``config``. ``vggish_pca_params-970ea276.pth``: {``pca_eigen_vectors`` (128, 128),
``pca_means`` (128,)} as numpy arrays, read by the same restricted unpickler with exactly the
numpy globals an array needs (``_reconstruct`` under its numpy 1 and 2 names, ``ndarray``,
``dtype`` and the float32 / float64 dtype classes) and validated (keys, shapes, finite), but
NOT applied: the paper's layers are all before the PCA / quantisation post-processing.

**Front end** (one clip at a time, float64 as upstream, examples cast to float32):
frames of 400 samples, hop 160 (no padding) -> periodic Hann -> |rfft_512| (magnitude) -> 64
triangular mel bands 125-7500 Hz on the HTK scale 1127 ln(1 + f / 700) (DC bin zeroed) ->
log(mel + 0.01) -> examples of 96 frames, hop 96, the incomplete last one dropped. 2 s -> 198
frames -> 2 examples (the last 6 frames unused). ``min_samples`` = 15600 (one example).
The audio arrives as float32 at 16 kHz (soxr HQ from the original rate, as the paper loads
it); Tuckute read int16 PCM / 32768 from a 16-kHz copy and would have resampled with resampy
(no resampling at 16 kHz) -- a small input difference, documented, not emulated.

**Layers** (network order ReLU0, MP0, ReLU1, MP1, ReLU2, ReLU3, MP2, ReLU4, ReLU5, MP3,
ReLU6-8; listed ReLUs first as the paper's ``layer_map``): conv / pool maps [N, C, T, M] ->
mean over T per example -> channel-major flatten (c * M + m) -> mean over the N examples
(ReLU0-5 4096, MP0-3 2048); the FC ReLUs [N, F] -> mean over N (4096, 4096, 128). No options.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from brainalign.errors import InputError
from brainalign.models.base import Runner
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
WEIGHT_FILE = "vggish-10086976.pth"
PCA_FILE = "vggish_pca_params-970ea276.pth"
PCA_KEYS = ("pca_eigen_vectors", "pca_means")

# front end (vggish_params.py)
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
FFT = 512  # next power of two
N_MELS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s
EXAMPLE_HOP = 96
MIN_SAMPLES = WINDOW + (EXAMPLE_FRAMES - 1) * HOP  # 15600: one example

CONFIG: Mapping[str, Any] = {"channels": (64, 128, 256, 256, 512, 512), "fc": (4096, 4096, 128)}
"""The widths of the release checkpoint (paper-models 3.8)."""

PLAN = (0, "M", 1, "M", 2, 3, "M", 4, 5, "M")
"""``make_layers``: conv i (``channels[i]``, 3x3, pad 1) + ReLU, or a 2x2 max-pool."""

CONV_KEYS = (0, 3, 6, 8, 11, 13)  # features.<k> of the six convs
FC_KEYS = (0, 2, 4)  # embeddings.<k> of the three Linears

_MAXPOOL = "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)"
# The paper's layer_map lists the nine ReLUs first, then the four max-pools.
LAYERS = (*(f"ReLU_{i}" for i in range(9)), *(f"MaxPool_{i}" for i in range(4)))
PAPER_KEYS = {
    **{f"ReLU_{i}": f"ReLU(inplace=True)--{i}" for i in range(9)},
    **{f"MaxPool_{i}": f"{_MAXPOOL}--{i}" for i in range(4)},
}
NETWORK_ORDER = ("ReLU_0", "MaxPool_0", "ReLU_1", "MaxPool_1", "ReLU_2", "ReLU_3", "MaxPool_2",
                 "ReLU_4", "ReLU_5", "MaxPool_3", "ReLU_6", "ReLU_7", "ReLU_8")
"""The tapped modules in forward order."""


def _numpy_globals() -> list[Any]:
    """Exactly what unpickling a float numpy array needs, under numpy 1 and 2 names."""
    from numpy._core import multiarray

    rebuild = multiarray._reconstruct
    return [rebuild, (rebuild, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype,
            type(np.dtype(np.float32)), type(np.dtype(np.float64))]


# --------------------------------------------------------------------------- front end
@cache
def mel_matrix() -> np.ndarray:
    """(257, 64) float64: rows = rfft bins 0..8 kHz, columns = HTK-mel triangles 125-7500 Hz
    (linear in mel between neighbouring band edges; the DC row is zero)."""
    def mel(hz: np.ndarray | float) -> np.ndarray:
        return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)

    bins_mel = mel(np.linspace(0.0, SAMPLE_RATE / 2, FFT // 2 + 1))
    edges = np.linspace(mel(MEL_MIN_HZ), mel(MEL_MAX_HZ), N_MELS + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rise = (bins_mel[:, None] - lower) / (centre - lower)
    fall = (upper - bins_mel[:, None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rise, fall))
    weights[0] = 0.0
    return weights


def log_mel(wave: torch.Tensor) -> torch.Tensor:
    """(samples,) -> (frames, 64) float64 log-mel magnitudes (frames = 1 + (n - 400) // 160)."""
    import torch

    x = wave.to(torch.float64)
    if x.numel() < WINDOW:
        raise InputError("braindnn_vggish", f"a clip needs >= {WINDOW} samples, got {x.numel()}")
    frames = x.unfold(0, WINDOW, HOP)
    n = torch.arange(WINDOW, dtype=torch.float64, device=x.device)
    window = 0.5 - 0.5 * torch.cos(2 * torch.pi / WINDOW * n)  # periodic Hann
    magnitude = torch.fft.rfft(frames * window, n=FFT).abs()
    weights = torch.from_numpy(mel_matrix()).to(x.device)
    return torch.log(magnitude @ weights + LOG_OFFSET)


def examples(wave: torch.Tensor) -> torch.Tensor:
    """(samples,) -> (N, 1, 96, 64) float32 examples (the incomplete last one dropped)."""
    mel = log_mel(wave)
    n = 1 + (mel.shape[0] - EXAMPLE_FRAMES) // EXAMPLE_HOP
    if n < 1:
        raise InputError("braindnn_vggish", f"a clip needs >= {MIN_SAMPLES} samples (one "
                         f"0.96-s example), got {wave.numel()}")
    frames = mel.unfold(0, EXAMPLE_FRAMES, EXAMPLE_HOP)  # (N, 64, 96)
    return frames.transpose(1, 2)[:, None].float().contiguous()


# --------------------------------------------------------------------------- network
@cache
def _classes() -> SimpleNamespace:
    from torch import nn

    class VGGishNet(nn.Module):
        """torchvggish ``VGG`` without the post-processor (keys ``features.*`` /
        ``embeddings.*``); ``forward`` returns the 13 tapped outputs in network order."""

        def __init__(self, cfg: Mapping[str, Any]) -> None:
            super().__init__()
            channels, fc = tuple(cfg["channels"]), tuple(cfg["fc"])
            layers: list[nn.Module] = []
            cin = 1
            for step in PLAN:
                if step == "M":
                    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                else:
                    layers += [nn.Conv2d(cin, channels[step], kernel_size=3, padding=1),
                               nn.ReLU(inplace=True)]
                    cin = channels[step]
            self.features = nn.Sequential(*layers)
            # 96 x 64 after four 2x2 pools: 6 x 4
            self.embeddings = nn.Sequential(
                nn.Linear(cin * 6 * 4, fc[0]), nn.ReLU(inplace=True),
                nn.Linear(fc[0], fc[1]), nn.ReLU(inplace=True),
                nn.Linear(fc[1], fc[2]), nn.ReLU(inplace=True))

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            taps = []
            for module in self.features:
                x = module(x)
                if isinstance(module, nn.ReLU | nn.MaxPool2d):
                    taps.append(x)
            # [N, C, T, M] -> [N, T, M, C] -> flatten (TF VGGish order)
            x = x.transpose(1, 3).transpose(1, 2).contiguous().flatten(1)
            for module in self.embeddings:
                x = module(x)
                if isinstance(module, nn.ReLU):
                    taps.append(x)
            return taps

    return SimpleNamespace(VGGishNet=VGGishNet)


def network(cfg: Mapping[str, Any] = CONFIG) -> torch.nn.Module:
    """The VGGish network for ``cfg``, default-initialised (build under
    ``torch.device('meta')`` to allocate nothing)."""
    return _classes().VGGishNet(cfg)


def reduce(tap: torch.Tensor) -> torch.Tensor:
    """One clip's tap -> its vector: [N, C, T, M] -> time mean per example, channel-major
    C * M, mean over the N examples; [N, F] -> mean over N."""
    if tap.ndim == 4:
        tap = tap.mean(dim=2).flatten(1)
    return tap.mean(dim=0)


# --------------------------------------------------------------------------- checkpoint
def read_config(state: Mapping[str, Any], path: Any, model: str) -> dict[str, Any]:
    """The widths the tensor shapes give."""
    conv = [f"features.{k}.weight" for k in CONV_KEYS]
    fc = [f"embeddings.{k}.weight" for k in FC_KEYS]
    expect_keys(state, conv + fc, path, f"{model} state dict")
    return {"channels": tuple(int(state[k].shape[0]) for k in conv),
            "fc": tuple(int(state[k].shape[0]) for k in fc)}


def check_pca(obj: Any, path: Any, model: str, size: int) -> dict[str, Any]:
    """Validate the PCA parameters (not applied); returns their shapes and dtypes."""
    expect_keys(obj, PCA_KEYS, path, f"{model} PCA parameter dict")
    out = {}
    for key in PCA_KEYS:
        value = obj[key]
        arr = value.numpy() if hasattr(value, "numpy") else value
        if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f":
            raise InputError(path, f"{key}: expected a float array, got {type(value).__name__}")
        if not np.isfinite(arr).all():
            raise InputError(path, f"{key}: holds NaN or infinite values")
        out[key] = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
    vec, means = obj["pca_eigen_vectors"], obj["pca_means"]
    if tuple(vec.shape) != (size, size) or int(np.prod(means.shape)) != size:
        raise InputError(path, f"{model}: PCA parameters of shapes {tuple(vec.shape)} / "
                         f"{tuple(means.shape)} do not fit a {size}-d embedding "
                         f"(expected ({size}, {size}) / ({size},))")
    return out


def load_network(spec: ModelSpec, ctx: BuildContext) -> tuple[torch.nn.Module, dict[str, Any],
                                                               dict[str, Any]]:
    """The checked, strictly loaded network (CPU), its config and the PCA file's summary."""
    import torch

    path = weight_file(spec, ctx, WEIGHT_FILE)
    pca_path = weight_file(spec, ctx, PCA_FILE)
    state = safe_load(path)
    expect_keys(state, (), path, "state dict")
    found = read_config(state, path, spec.name)
    cfg = {**CONFIG, **spec.config}
    cfg = {k: tuple(v) for k, v in cfg.items()}
    check_config(found, cfg, path=path, model=spec.name)
    pca = check_pca(safe_load(pca_path, allow=_numpy_globals()), pca_path, spec.name,
                    cfg["fc"][-1])
    with torch.device("meta"):
        net = network(cfg)
    load_strict(net, state, path=path, model=spec.name, assign=True)
    return net.eval(), cfg, pca


class VGGishRunner(Runner):
    """One clip at a time: log-mel examples -> VGGish; 9 ReLU and 4 max-pool taps."""

    def __init__(self, spec: ModelSpec, ctx: BuildContext) -> None:
        super().__init__(spec, ctx.device)
        for key in ctx.options:
            raise InputError(f"extract.options.{spec.name}.{key}",
                             f"{spec.name!r} has no build options")
        net, self.cfg, self.pca = load_network(spec, ctx)
        self.net = net.to(ctx.device)

    def forward(self, audio: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        import torch

        rows: dict[str, list[torch.Tensor]] = {k: [] for k in layers}
        for clip in audio:
            taps = dict(zip(NETWORK_ORDER, self.net(examples(clip)), strict=True))
            for key in layers:
                rows[key].append(reduce(taps[key]))
        return {k: torch.stack(v) for k, v in rows.items()}

    def info(self) -> dict[str, Any]:
        return {
            "config": {k: list(v) for k, v in self.cfg.items()},
            "pca": {"file": PCA_FILE, "applied": False, **self.pca},
            "frontend": {"window": WINDOW, "hop": HOP, "fft": FFT, "mel_bins": N_MELS,
                         "mel_hz": [MEL_MIN_HZ, MEL_MAX_HZ], "log_offset": LOG_OFFSET,
                         "example_frames": EXAMPLE_FRAMES, "example_hop": EXAMPLE_HOP},
            "reduction": "4-D: time mean per example, channel-major, mean over examples; "
                         "FC: mean over examples",
        }


def build(spec: ModelSpec, ctx: BuildContext) -> Runner:
    """No options."""
    return VGGishRunner(spec, ctx)


SPECS = [
    ModelSpec(
        name="braindnn_vggish", label="VGGish", family="Others", training="supervised",
        sample_rate=SAMPLE_RATE, layers=LAYERS, paper_keys=PAPER_KEYS,
        build="brainalign.models.vggish:build", fetched=True,
        config=dict(CONFIG), min_samples=MIN_SAMPLES,
        description="VGGish, harritaylor/torchvggish release v0.1 weights: the 9 ReLU and 4 "
                    "max-pool outputs, averaged per 0.96-s example, then over examples",
    )
]
