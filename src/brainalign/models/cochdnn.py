"""The CochDNNs of Tuckute et al. 2023: CochResNet50 and CochCNN9 on a cochleagram.

Eight supervised networks (two architectures x four tasks: word, speaker, AudioSet, all three)
that take 2 s of 20-kHz audio, turn it into the ``cochleagram_1`` cochleagram and run a CNN on
it. Our own implementation, with every fact taken from the public code named below
(jenellefeather/cochdnn @8702294, "CDN"; jenellefeather/chcochleagram @c634ca8, "CHC"; the
reference notes in ``paper-models.md`` sections 3.4-3.6).

Weights [CDN README, ``download_large_files.py``, ``model_directories/<dir>/build_network.py``]:
the eight ``5_checkpoint.pt`` of the lab tar ``cochdnn_model_checkpoints.tar`` (registry
``weights`` group: one archive entry, eight members, each placed in
``data/weights/<model>/5_checkpoint.pt``). A file is ``torch.save(..., pickle_module=dill)`` of
``{'model', 'optimizer', 'schedule', 'epoch'}`` [CDN ``robustness/train.py``]; for plain
dicts, tensors, ints, floats and lists dill writes the same opcodes as pickle, so it is read
with :func:`~brainalign.models.weights.safe_load` (``torch.load(weights_only=True)``, memory-
mapped when the file is a zip checkpoint, no extra globals allowed); dill is never imported.
(Not yet tried on the real files: a dill-specific global there would be refused by name.)

State dict [CDN ``robustness/model_utils.py`` ``make_and_restore_model``,
``robustness/attacker.py``, ``robustness/datasets.py`` ``jsinV3.get_model``,
``robustness/tools/helpers.py``, ``robustness/audio_functions/audio_transforms.py``; CHC
``cochleagram.py``, ``downsampling.py``]:

- every key starts with ``module.`` (DataParallel); the first 7 characters are stripped, as
  upstream does (a key without the prefix is an error here);
- ``AttackerModel(SequentialAttacker(AudioInputRepresentation(cochleagram_1), <arch>))``:
  every entry appears under ``X`` and ``attacker.X``; the copies must be equal;
- ``preproc.normalize.new_mean`` / ``new_std`` ([1,1,1], 0 and 1): the ``InputNormalize``
  after the [-1, 1] clamp; applied as stored;
- cochleagram buffers under ``model.0.full_rep.rep.``: ``Cochleagram.compute_subbands.
  coch_filters`` [211, 20001, 2] (real filters stacked with zeros),
  ``Cochleagram.downsampling.downsample_filter`` and ``downsampling_op.downsample_filter``
  [1, 1, 1001] (the same module registered twice). These paths are derived from the code, not
  seen in a real file: any subset is accepted (the filters and at least one downsampling
  filter must be there), every stored one must equal ours
  (:mod:`brainalign.models.frontends.cochleagram`, max |diff| <= 1e-6), and any other
  ``model.0.`` key is an error naming it;
- the network under ``model.1.`` with the upstream names (torchvision's for the ResNet,
  ``kell2018.py``'s for the CNN); our modules carry exactly these names below a ``model.1``
  container, so the checkpoint loads strictly (:func:`~brainalign.models.weights.load_strict`)
  into a network built on the ``meta`` device (``assign=True``: weights are held once);
- heads, unused and dropped: ``fc`` / ``classification`` (794 words) for the word models, and
  for the six others (``include_all_labels=True``) three heads in a ModuleDict,
  ``fc.signal/word_int`` (794), ``fc.signal/speaker_int`` (433),
  ``fc.noise/labels_binary_via_int`` (517) (``classification.*`` for the CNN);
- anything else is an error naming the key.

The checkpoints carry no config; the hyperparameters are read from the tensor shapes (stem
width and blocks per stage; conv channels and kernels, FC width and input; head sizes) and
checked against ``ModelSpec.config`` after the strict load.

CochResNet50 [CDN ``robustness/audio_models/resnet.py``, ``resnet_multi_task.py``]:
torchvision ResNet-50 (Bottleneck [3, 4, 6, 3], stride on the 3x3 conv) with ``conv1``
Conv2d(1, 64, 7, stride 2, padding 3, no bias), BatchNorm eps 1e-5, max-pool 3/2/1, bias-free
convs, 1x1-conv + BN downsample on the first block of each stage, ``avgpool``
AdaptiveAvgPool2d(1). The word model uses ``resnet50`` (ReLU not in place), the others
``resnet_multi_task50`` (in place): in place only overwrites the untapped ``bn1`` output, so one
implementation serves both. Taps (``all_outputs`` keys): conv1_relu1, maxpool1, layer1-4,
avgpool.

CochCNN9 [CDN ``robustness/audio_models/kell2018.py``, ``kell2018_multi_task.py``,
``layers/conv2d_same.py``, ``pool2d_same.py``, ``padding.py``]: batchnorm0 -> conv0 96 k[7,14]
s[3,3] -> relu0 -> maxpool0 k[2,5] s[2,2] -> batchnorm1 -> conv1 256 k[4,8] s[2,2] -> relu1 ->
maxpool1 -> batchnorm2 -> conv2 512 k[2,5] -> relu2 -> conv3 1024 -> relu3 -> conv4 512 ->
relu4 -> avgpool k[2,5] s[2,2] -> flatten (512*5*9 = 23040) -> fullyconnected 4096 -> relufc.
Convs have no bias. Every conv and pool uses TensorFlow-style dynamic "same" padding: total
pad = max((ceil(n/s) - 1) * s + k - n, 0), the smaller half first (top/left); max-pool pads
with -inf, avg-pool with zeros that count in the mean (count_include_pad). ``relufc`` is 2-D
and kept as is; the dropout and the classifier are not run.

Input path [CDN ``analysis_scripts/measure_layer_activations_165_natural_sounds_pytorch.py``]:
the first 2 s (40000 samples at 20 kHz), mean removed and scaled to RMS 0.1
(:func:`~brainalign.models.frontends.cochleagram.tuckute_level`), clamped to [-1, 1] and
normalised with the stored mean/std (``InputNormalize``), cochleagram [B, 1, 211, 390], the
network. Reductions: a 4-D map [B, C, F, T] is averaged over time and flattened channel-major
(c * F + f); ``relufc`` [B, 4096] is kept; ``avgpool`` of the ResNet is [B, 2048, 1, 1] ->
2048. Dimensions for 2 s: ResNet 6784, 3392, 13568, 13824, 14336, 14336, 2048; CNN 6816, 3456,
4608, 2304, 4608, 9216, 4608, 2560, 4096.

Decisions:

- Length: every sound runs as exactly 40000 samples. The cochleagram buffers in the
  checkpoints are built for ``signal_size`` 40000 and the CNN's FC needs the 211 x 390 input,
  so a fixed length is part of the model. Longer sounds are cropped to their first 2 s (as
  Tuckute did); shorter ones (the 0.5-s downstream clips) are levelled on their own samples
  and then zero-padded at the end, so the sound itself keeps RMS 0.1 (the SpectroTemporal
  baseline pads before levelling instead; both orders agree on the 2-s stimuli).
  ``min_samples`` is therefore 1.
- Each sound runs alone through the whole path (the paper extracted one clip at a time);
  nothing depends on the batch.
- No permutation ("randnetw") logic of CDN ``*_randomize_weights`` is used.

Build option (``extract.options.<model>``):

- ``input_level``: ``tuckute`` (default; Tuckute's RMS 0.1 + clamp, which matches her
  published activations) or ``raw`` (the librosa signal as loaded, only clamped to [-1, 1]).
  Whether the authors' unpublished ``invariant`` wrapper levelled the sounds is not known.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from brainalign.errors import InputError
from brainalign.models.base import Runner, mean_bcft
from brainalign.models.frontends.cochleagram import (
    DOWNSAMPLE_TAPS,
    ENV_SR,
    N_CHANNELS,
    SAMPLE_RATE,
    SIGNAL_SAMPLES,
    cochleagram,
    cochlear_filters,
    downsample_taps,
    tuckute_level,
)
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

RESNET50_LAYERS = ("conv1_relu1", "maxpool1", "layer1", "layer2", "layer3", "layer4", "avgpool")
KELL2018_LAYERS = ("relu0", "maxpool0", "relu1", "maxpool1", "relu2", "relu3", "relu4",
                   "avgpool", "relufc")
TASKS = (("word", "Word"), ("speaker", "Spk"), ("audioset", "AS"),
         ("word_speaker_audioset", "MT"))

CHECKPOINT = "5_checkpoint.pt"
CONTAINER_KEYS = ("model", "optimizer", "schedule", "epoch")
PREFIX = "module."
ATTACKER = "attacker."
NORMALIZE_KEYS = ("preproc.normalize.new_mean", "preproc.normalize.new_std")
COCH_PREFIX = "model.0."
NET_PREFIX = "model.1."
COCH_FILTERS_KEY = "model.0.full_rep.rep.Cochleagram.compute_subbands.coch_filters"
DOWNSAMPLE_KEYS = ("model.0.full_rep.rep.Cochleagram.downsampling.downsample_filter",
                   "model.0.full_rep.rep.downsampling_op.downsample_filter")
BUFFER_ATOL = 1e-6
INPUT_LEVELS = ("tuckute", "raw")
OPTIONS = ("input_level",)
WORD_HEADS = {"": 794}
MULTI_HEADS = {"signal/word_int": 794, "signal/speaker_int": 433,
               "noise/labels_binary_via_int": 517}
HEAD_PREFIX = {"resnet": "fc.", "kell2018": "classification."}

# ResNet-50 [resnet.py]
RESNET_EXPANSION = 4
# CochCNN9 [kell2018.py]: strides of conv0..conv4, pools (kernel, stride)
KELL_STRIDES = ((3, 3), (2, 2), (1, 1), (1, 1), (1, 1))
KELL_POOL = ((2, 5), (2, 2))
KELL_FC_GRID = (5, 9)  # avgpool output (freq, time) for the 211 x 390 cochleagram

RESNET50_CONFIG: dict[str, Any] = {"arch": "resnet", "stem_width": 64, "blocks": (3, 4, 6, 3)}
KELL2018_CONFIG: dict[str, Any] = {
    "arch": "kell2018", "channels": (96, 256, 512, 1024, 512),
    "kernels": ((7, 14), (4, 8), (2, 5), (2, 5), (2, 5)), "fc": 4096,
    "fc_in": 512 * KELL_FC_GRID[0] * KELL_FC_GRID[1],
}


def arch_config(arch: str, task: str) -> dict[str, Any]:
    """The expected hyperparameters of the real checkpoint of ``arch`` trained on ``task``."""
    base = RESNET50_CONFIG if arch == "resnet50" else KELL2018_CONFIG
    heads = WORD_HEADS if task == "word" else MULTI_HEADS
    return {**base, "heads": dict(heads)}


# --------------------------------------------------------------------------- "same" padding
def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding of one axis: (before, after), the smaller half first."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int],
             value: float = 0.0) -> torch.Tensor:
    """Pad the last two axes (freq, time) of ``x`` for a "same" conv/pool."""
    import torch.nn.functional as F

    top, bottom = same_padding(x.shape[-2], kernel[0], stride[0])
    left, right = same_padding(x.shape[-1], kernel[1], stride[1])
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), value=value)
    return x


# --------------------------------------------------------------------------- networks
def build_resnet(config: Mapping[str, Any]) -> torch.nn.Module:
    """The CochResNet50 trunk (no head), with torchvision's module names."""
    from torch import nn

    width = int(config["stem_width"])
    net = nn.Module()
    net.conv1 = nn.Conv2d(1, width, 7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    inplanes = width
    for stage, blocks in enumerate(config["blocks"]):
        planes = width * 2 ** stage
        out = planes * RESNET_EXPANSION
        layer = nn.Sequential()
        for b in range(int(blocks)):
            stride = 2 if stage > 0 and b == 0 else 1
            block = nn.Module()
            block.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            block.bn1 = nn.BatchNorm2d(planes)
            block.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
            block.bn2 = nn.BatchNorm2d(planes)
            block.conv3 = nn.Conv2d(planes, out, 1, bias=False)
            block.bn3 = nn.BatchNorm2d(out)
            if b == 0 and (stride != 1 or inplanes != out):
                block.downsample = nn.Sequential(
                    nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
            layer.append(block)
            inplanes = out
        net.add_module(f"layer{stage + 1}", layer)
    return net


def build_kell(config: Mapping[str, Any]) -> torch.nn.Module:
    """The CochCNN9 trunk up to ``fullyconnected`` (no classifier), with kell2018.py's names."""
    from torch import nn

    channels = [int(c) for c in config["channels"]]
    kernels = [tuple(int(k) for k in ks) for ks in config["kernels"]]
    net = nn.Module()
    cin = 1
    for i, (cout, kernel, stride) in enumerate(zip(channels, kernels, KELL_STRIDES, strict=True)):
        if i < 3:
            net.add_module(f"batchnorm{i}", nn.BatchNorm2d(cin))
        net.add_module(f"conv{i}", nn.Conv2d(cin, cout, kernel, stride=stride, bias=False))
        cin = cout
    net.fullyconnected = nn.Linear(int(config["fc_in"]), int(config["fc"]))
    return net


def build_network(config: Mapping[str, Any]) -> torch.nn.Module:
    """The trunk named by ``config['arch']`` (``resnet`` or ``kell2018``)."""
    if config["arch"] == "resnet":
        return build_resnet(config)
    if config["arch"] == "kell2018":
        return build_kell(config)
    raise ValueError(f"unknown CochDNN arch {config['arch']!r}")


def _bottleneck(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    import torch

    out = torch.relu(block.bn1(block.conv1(x)))
    out = torch.relu(block.bn2(block.conv2(out)))
    out = block.bn3(block.conv3(out))
    identity = block.downsample(x) if hasattr(block, "downsample") else x
    return torch.relu(out + identity)


Step = tuple[str, Callable[[Any], Any]]


def resnet_steps(net: torch.nn.Module) -> list[Step]:
    """One (tap, function) per ResNet layer, in order [resnet.py ``forward``]."""
    import torch
    import torch.nn.functional as F

    def stage(layer: torch.nn.Module) -> Callable[[Any], Any]:
        def run(x: torch.Tensor) -> torch.Tensor:
            for block in layer:
                x = _bottleneck(block, x)
            return x
        return run

    return [
        ("conv1_relu1", lambda x: torch.relu(net.bn1(net.conv1(x)))),
        ("maxpool1", lambda x: F.max_pool2d(x, 3, 2, 1)),
        *[(f"layer{i}", stage(getattr(net, f"layer{i}"))) for i in range(1, 5)],
        ("avgpool", lambda x: x.mean(dim=(-2, -1), keepdim=True)),
    ]


def kell_steps(net: torch.nn.Module) -> list[Step]:
    """One (tap, function) per CochCNN9 layer, in order [kell2018.py ``forward``]."""
    import torch
    import torch.nn.functional as F

    pool_k, pool_s = KELL_POOL

    def conv(i: int, bn: str | None = None) -> Callable[[Any], Any]:
        layer = getattr(net, f"conv{i}")
        norm = getattr(net, bn) if bn else None

        def run(x: torch.Tensor) -> torch.Tensor:
            x = norm(x) if norm is not None else x
            x = F.conv2d(pad_same(x, layer.kernel_size, layer.stride), layer.weight, None,
                         layer.stride)
            return torch.relu(x)
        return run

    def maxpool(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(pad_same(x, pool_k, pool_s, value=-math.inf), pool_k, pool_s)

    def avgpool(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(pad_same(x, pool_k, pool_s, value=0.0), pool_k, pool_s)

    return [
        ("relu0", conv(0, "batchnorm0")), ("maxpool0", maxpool),
        ("relu1", conv(1, "batchnorm1")), ("maxpool1", maxpool),
        ("relu2", conv(2, "batchnorm2")), ("relu3", conv(3)), ("relu4", conv(4)),
        ("avgpool", avgpool),
        ("relufc", lambda x: torch.relu(net.fullyconnected(x.flatten(1)))),
    ]


def run_taps(steps: Sequence[Step], x: torch.Tensor,
             wanted: Sequence[str]) -> dict[str, torch.Tensor]:
    """Run the steps in order up to the last wanted tap; return the wanted outputs."""
    names = [name for name, _ in steps]
    last = max(names.index(k) for k in wanted)
    out = {}
    for name, step in steps[: last + 1]:
        x = step(x)
        out[name] = x
    return {k: out[k] for k in wanted}


# --------------------------------------------------------------------------- checkpoint
@dataclass
class ParsedCheckpoint:
    """A CochDNN state dict split into its parts (keys after the ``module.`` strip)."""

    network: dict[str, Any]
    heads: dict[str, dict[str, Any]]
    buffers: dict[str, Any]
    normalize: tuple[float, float]
    found: dict[str, Any] = field(default_factory=dict)


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    import torch

    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.data_ptr() == b.data_ptr() and a.stride() == b.stride():
        return True  # one storage saved once, as torch.save writes the two copies
    return bool(torch.equal(a, b))


def _heads(network: dict[str, Any], head_prefix: str,
           where: Any) -> dict[str, dict[str, Any]]:
    """Pop the classifier heads (``<prefix>[<task>.]weight|bias``) out of ``network``."""
    heads: dict[str, dict[str, Any]] = {}
    for key in list(network):
        sub = key[len(NET_PREFIX):]
        if not sub.startswith(head_prefix):
            continue
        name, _, param = sub[len(head_prefix):].rpartition(".")
        if param in ("weight", "bias"):
            heads.setdefault(name, {})[param] = network.pop(key)
    for name, params in heads.items():
        if set(params) != {"weight", "bias"} or params["weight"].ndim != 2 or \
                tuple(params["bias"].shape) != (params["weight"].shape[0],):
            raise InputError(where, f"head {NET_PREFIX + head_prefix + name!r} is not a Linear "
                             f"layer (has {sorted(params)})")
    return heads


def found_config(arch: str, network: Mapping[str, Any],
                 heads: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The hyperparameters a state dict implies (None where a key is absent)."""
    def shape(key: str) -> tuple[int, ...] | None:
        t = network.get(NET_PREFIX + key)
        return tuple(t.shape) if t is not None else None

    out: dict[str, Any] = {"arch": arch,
                           "heads": {n: int(p["weight"].shape[0]) for n, p in heads.items()}}
    if arch == "resnet":
        conv1 = shape("conv1.weight")
        out["stem_width"] = conv1[0] if conv1 else None
        blocks = []
        for stage in range(1, 5):
            ids = {k[len(NET_PREFIX):].split(".")[1] for k in network
                   if k.startswith(f"{NET_PREFIX}layer{stage}.")}
            blocks.append(len(ids))
        out["blocks"] = tuple(blocks)
    else:
        convs = [shape(f"conv{i}.weight") for i in range(5)]
        out["channels"] = tuple(c[0] if c else None for c in convs)
        out["kernels"] = tuple(tuple(c[2:]) if c else None for c in convs)
        fc = shape("fullyconnected.weight")
        out["fc"], out["fc_in"] = (fc[0], fc[1]) if fc else (None, None)
    return out


def expected_buffers() -> dict[str, np.ndarray]:
    """Our ``cochleagram_1`` filters in the stored layout (float32), by checkpoint key."""
    bank, _ = cochlear_filters(SIGNAL_SAMPLES)
    taps = downsample_taps(SAMPLE_RATE // ENV_SR)[None, None]
    out = {COCH_FILTERS_KEY: np.stack([bank, np.zeros_like(bank)], axis=-1)}
    out.update({k: taps for k in DOWNSAMPLE_KEYS})
    return out


def check_buffers(buffers: Mapping[str, Any], where: Any) -> list[str]:
    """Compare every stored cochleagram buffer with ours; returns the keys checked."""
    if COCH_FILTERS_KEY not in buffers or not any(k in buffers for k in DOWNSAMPLE_KEYS):
        raise InputError(where, f"cochleagram buffers missing: expected {COCH_FILTERS_KEY!r} "
                         f"and one of {list(DOWNSAMPLE_KEYS)} (has {sorted(buffers)})")
    ours = expected_buffers()
    for key, stored in buffers.items():
        want = ours[key]
        got = stored.detach().cpu().float().numpy()
        if got.shape != want.shape:
            raise InputError(where, f"cochleagram buffer {key!r} has shape {got.shape}, "
                             f"expected {want.shape} (cochleagram_1: {N_CHANNELS} channels, "
                             f"{SIGNAL_SAMPLES} samples, {DOWNSAMPLE_TAPS} taps)")
        diff = float(np.abs(got - want).max())
        if not diff <= BUFFER_ATOL:
            raise InputError(where, f"cochleagram buffer {key!r} differs from our cochleagram_1 "
                             f"(max |diff| {diff:.3g} > {BUFFER_ATOL}): the front end would "
                             "not be the one the network was trained with")
    return sorted(buffers)


def parse_checkpoint(ckpt: Any, arch: str, where: Any) -> ParsedCheckpoint:
    """Split a loaded checkpoint into network, heads, cochleagram buffers and normalisation.

    Raises one InputError naming the key for: a key without ``module.``, an entry without its
    ``attacker.`` copy (or the reverse), a copy that differs, a key in no known part.
    """
    import torch

    expect_keys(ckpt, CONTAINER_KEYS, where, "CochDNN checkpoint (robustness train.py)")
    raw = ckpt["model"]
    if not isinstance(raw, Mapping):
        raise InputError(where, f"'model' is a {type(raw).__name__}, expected a state dict")
    state: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not key.startswith(PREFIX):
            raise InputError(where, f"state-dict key {key!r} lacks the DataParallel prefix "
                             f"{PREFIX!r}")
        if not isinstance(value, torch.Tensor):
            raise InputError(where, f"state-dict entry {key!r} is a {type(value).__name__}, "
                             "expected a tensor")
        state[key[len(PREFIX):]] = value
    main = {k: v for k, v in state.items() if not k.startswith(ATTACKER)}
    copies = {k[len(ATTACKER):]: v for k, v in state.items() if k.startswith(ATTACKER)}
    lone = [k for k in main if k not in copies] + [ATTACKER + k for k in copies if k not in main]
    if lone:
        raise InputError(where, f"key {PREFIX + lone[0]!r} has no {ATTACKER!r} twin "
                         f"({len(lone)} such keys): not an AttackerModel state dict")
    for key, value in main.items():
        if not _same_tensor(value, copies[key]):
            raise InputError(where, f"{PREFIX + ATTACKER + key!r} differs from "
                             f"{PREFIX + key!r}: the two copies of the model must be equal")
    network: dict[str, Any] = {}
    buffers: dict[str, Any] = {}
    normalize: dict[str, Any] = {}
    known_buffers = (COCH_FILTERS_KEY, *DOWNSAMPLE_KEYS)
    for key, value in main.items():
        if key in NORMALIZE_KEYS:
            normalize[key] = value
        elif key.startswith(COCH_PREFIX):
            if key not in known_buffers:
                raise InputError(where, f"unexpected cochleagram key {PREFIX + key!r} (known: "
                                 f"{list(known_buffers)})")
            buffers[key] = value
        elif key.startswith(NET_PREFIX):
            network[key] = value
        else:
            raise InputError(where, f"unexpected state-dict key {PREFIX + key!r}")
    missing = [k for k in NORMALIZE_KEYS if k not in normalize]
    if missing:
        raise InputError(where, f"missing state-dict key {PREFIX + missing[0]!r}")
    mean, std = (normalize[k] for k in NORMALIZE_KEYS)
    if mean.numel() != 1 or std.numel() != 1 or float(std) == 0.0:
        raise InputError(where, f"{PREFIX + NORMALIZE_KEYS[0]!r} / new_std must be single "
                         f"values with std != 0, got shapes {tuple(mean.shape)}, "
                         f"{tuple(std.shape)}")
    heads = _heads(network, HEAD_PREFIX[arch], where)
    return ParsedCheckpoint(network=network, heads=heads, buffers=buffers,
                            normalize=(float(mean), float(std)),
                            found=found_config(arch, network, heads))


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively (JSON-friendly provenance)."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- runner
class CochDNNRunner(Runner):
    """2-s waveform -> level -> cochleagram [B, 1, 211, 390] -> CochResNet50 / CochCNN9 taps."""

    def __init__(self, spec: ModelSpec, device: torch.device, net: torch.nn.Module,
                 input_level: str, normalize: tuple[float, float] = (0.0, 1.0),
                 provenance: Mapping[str, Any] | None = None) -> None:
        super().__init__(spec, device)
        self.net = net.to(device).eval()
        self.arch = spec.config["arch"]
        self.input_level = input_level
        self.normalize = normalize
        self.provenance = dict(provenance or {})
        self.steps = resnet_steps(self.net) if self.arch == "resnet" else kell_steps(self.net)

    def waveform(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, n) -> (B, 40000): first 2 s, levelled, zero-padded, clamped and normalised."""
        import torch.nn.functional as F

        audio = audio[:, :SIGNAL_SAMPLES]
        audio = tuckute_level(audio) if self.input_level == "tuckute" else audio
        if audio.shape[-1] < SIGNAL_SAMPLES:
            audio = F.pad(audio, (0, SIGNAL_SAMPLES - audio.shape[-1]))
        mean, std = self.normalize
        return (audio.clamp(-1.0, 1.0) - mean) / std

    def cochleagram(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, n) waveform -> the network input [B, 1, 211, 390]."""
        return cochleagram(self.waveform(audio))[:, None]

    def maps(self, audio: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """The raw outputs of the requested taps ([B, C, F, T] maps, relufc [B, 4096])."""
        coch = self.cochleagram(audio)
        return run_taps(self.steps, coch, layers)

    def forward(self, audio: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        import torch

        per_clip: dict[str, list[torch.Tensor]] = {k: [] for k in layers}
        for clip in audio:  # one sound at a time, as the paper extracted them
            for key, value in self.maps(clip[None], layers).items():
                per_clip[key].append(mean_bcft(value) if value.ndim == 4 else value)
        return {k: torch.cat(v) for k, v in per_clip.items()}

    def info(self) -> dict[str, Any]:
        return {"arch": self.arch, "config": _plain(dict(self.spec.config)),
                "input_level": self.input_level, "signal_samples": SIGNAL_SAMPLES,
                "pad_crop": "first 2 s; shorter sounds levelled, then zero-padded at the end",
                "normalize_mean_std": list(self.normalize), **_plain(self.provenance)}


def _options(spec: ModelSpec, options: Mapping[str, Any]) -> str:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InputError(f"extract.options.{spec.name}.{unknown[0]}",
                         f"unknown option; {spec.name} takes {list(OPTIONS)}")
    level = options.get("input_level", spec.options.get("input_level", INPUT_LEVELS[0]))
    if level not in INPUT_LEVELS:
        raise InputError(f"extract.options.{spec.name}.input_level",
                         f"expected one of {list(INPUT_LEVELS)}, got {level!r}")
    return str(level)


def load_runner(spec: ModelSpec, ckpt: Any, path: Any, device: torch.device,
                input_level: str) -> CochDNNRunner:
    """A runner from a loaded checkpoint dict (parsed, checked, strictly loaded)."""
    import torch

    config = dict(spec.config)
    parsed = parse_checkpoint(ckpt, config["arch"], path)
    checked = check_buffers(parsed.buffers, path)
    with torch.device("meta"):
        net = build_network(config)
        holder = torch.nn.Module()
        holder.model = torch.nn.Module()
        holder.model.add_module("1", net)
    load_strict(holder, parsed.network, path=path, model=spec.name, assign=True)
    check_config(parsed.found, config, path=path, model=spec.name)
    provenance = {"checkpoint_epoch": ckpt.get("epoch"), "heads_dropped": parsed.found["heads"],
                  "cochleagram_buffers_checked": checked, "attacker_copies_equal": True}
    return CochDNNRunner(spec, device, net, input_level, parsed.normalize, provenance)


def build(spec: ModelSpec, ctx: BuildContext) -> Runner:
    """Option ``input_level`` (``tuckute`` | ``raw``); weights ``5_checkpoint.pt``."""
    level = _options(spec, ctx.options)
    path = weight_file(spec, ctx, CHECKPOINT)
    ckpt = safe_load(path)  # memory-mapped when the file is a zip checkpoint
    return load_runner(spec, ckpt, path, ctx.device, level)


SPECS = [
    ModelSpec(
        name=f"braindnn_{arch}_{task}", label=f"{short} ({label})", family=family,
        training="supervised", sample_rate=SAMPLE_RATE, layers=layers,
        paper_keys={layer: f"braindnn_{arch}_{task}_{layer}" for layer in layers},
        build="brainalign.models.cochdnn:build", fetched=True,
        frontend="brainalign.models.frontends.cochleagram",
        config=arch_config(arch, task), min_samples=1,
        options={"input_level": "tuckute"},
        description=(f"Tuckute et al. 2023 {family} trained on {task}: 2 s at 20 kHz, RMS 0.1, "
                     f"cochleagram 211 x 390 (cochdnn checkpoints tar, {CHECKPOINT})"),
    )
    for arch, short, family, layers in (
        ("resnet50", "CRN50", "CochResNet50", RESNET50_LAYERS),
        ("kell2018", "CNN9", "CochCNN9", KELL2018_LAYERS),
    )
    for task, label in TASKS
]
