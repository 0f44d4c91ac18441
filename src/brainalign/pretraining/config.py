"""params.yaml ``pretraining``: the Fig. 5 analysis and the miniature pretraining run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from brainalign.data.fmri import ROI_LABELS
from brainalign.errors import InputError

DATASETS = ("NH2015", "B2021")
ALL_VOXELS = "all"
DEFAULT_TARGETS = ("NH2015", "B2021", "NH2015/Primary", "NH2015/Posterior")
"""Fig. 5: both datasets with all voxels (panel a) and NH2015's Primary and Posterior ROIs (b)."""
MINIATURE_DIR = "build/pretraining/miniature"
HUB_DIR = "weights/mel256-ec-base-pretraining"
"""Where the fetch registry's listing entry places the 100 published checkpoints (data root)."""


@dataclass(frozen=True)
class MiniatureConfig:
    """``pretraining.miniature``: the small masked-prediction run of the embedded default.

    The model is EnCodecMAE's (mel256 front end, ResiDual encoder with one shared FFN, 2-layer
    decoder) at a reduced width; the EnCodec targets are unavailable offline, so the head
    reconstructs the masked mel frames (mean squared error) instead of predicting tokens.
    """

    seed: int = 0
    steps: int = 400
    checkpoint_every: int = 20
    model_dim: int = 32
    num_heads: int = 2
    ff_dim: int = 64
    num_layers: int = 10
    decoder_layers: int = 2
    n_clips: int = 128
    clip_seconds: float = 1.0
    batch_size: int = 8
    learning_rate: float = 3.0e-4
    weight_decay: float = 0.05
    mask_prop: float = 0.5
    mask_gap: int = 15
    masked_weight: float = 0.9
    threads: int = 1

    def __post_init__(self) -> None:
        ints = {"steps": 1, "checkpoint_every": 1, "model_dim": 2, "num_heads": 1, "ff_dim": 1,
                "num_layers": 1, "decoder_layers": 1, "n_clips": 1, "batch_size": 1,
                "mask_gap": 1, "threads": 1, "seed": 0}
        for name, low in ints.items():
            if getattr(self, name) < low:
                raise InputError(f"pretraining.miniature.{name}",
                                 f"expected an integer >= {low}, got {getattr(self, name)}")
        if self.model_dim % self.num_heads:
            raise InputError("pretraining.miniature.num_heads",
                             f"model_dim {self.model_dim} is not a multiple of {self.num_heads}")
        if self.steps % self.checkpoint_every:
            raise InputError("pretraining.miniature.checkpoint_every",
                             f"steps {self.steps} is not a multiple of {self.checkpoint_every}")
        if not 0.2 <= self.clip_seconds <= 4.0:
            raise InputError("pretraining.miniature.clip_seconds",
                             f"expected 0.2 to 4 s (one EnCodecMAE chunk), got {self.clip_seconds}")
        if not 0.0 < self.mask_prop < 1.0:
            raise InputError("pretraining.miniature.mask_prop",
                             f"expected a fraction in (0, 1), got {self.mask_prop}")
        if not 0.0 <= self.masked_weight <= 1.0:
            raise InputError("pretraining.miniature.masked_weight",
                             f"expected a weight in [0, 1], got {self.masked_weight}")
        for name in ("learning_rate", "weight_decay"):
            if not getattr(self, name) >= 0:
                raise InputError(f"pretraining.miniature.{name}",
                                 f"expected a number >= 0, got {getattr(self, name)}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PretrainingParams:
    """``pretraining``: which checkpoints are scored, on what, and how Fig. 5 draws them.

    ``checkpoints`` is the folder the ``dynamics`` stage scores: the miniature run's
    (``build/pretraining/miniature``, the embedded default) or the published checkpoints
    (``data/weights/mel256-ec-base-pretraining``, fetched by the registry's listing entry).
    ``layers_a``/``layers_b``: the 0-based layer keys of panels a and b, labelled key + 1.
    """

    checkpoints: str = MINIATURE_DIR
    targets: tuple[str, ...] = DEFAULT_TARGETS
    keep_activations: bool = False
    layers_a: tuple[int | str, ...] = ("1", "3", "5", "7", "9")
    layers_b: tuple[int | str, ...] = ("0", "2", "4", "6", "8")
    smoothing_window: int = 10
    smoothing_order: int = 3
    miniature: MiniatureConfig = field(default_factory=MiniatureConfig)

    def __post_init__(self) -> None:
        for name in ("layers_a", "layers_b"):
            keys = tuple(str(k) for k in getattr(self, name))
            if not keys or not all(k.isdigit() for k in keys) or len(set(keys)) != len(keys):
                raise InputError(f"pretraining.{name}",
                                 f"expected distinct 0-based layer indices, got {list(keys)}")
            object.__setattr__(self, name, keys)
        if not self.targets or len(set(self.targets)) != len(self.targets):
            raise InputError("pretraining.targets",
                             f"expected distinct targets, got {list(self.targets)}")
        for target in self.targets:
            parse_target(target)
        if self.smoothing_window < 1:
            raise InputError("pretraining.smoothing_window",
                             f"expected an integer >= 1 (1: no smoothing), got "
                             f"{self.smoothing_window}")
        if self.smoothing_window > 1 and not 0 <= self.smoothing_order < self.smoothing_window:
            raise InputError("pretraining.smoothing_order",
                             f"expected 0 <= order < window ({self.smoothing_window}), got "
                             f"{self.smoothing_order}")


def parse_target(target: str) -> tuple[str, str]:
    """``NH2015`` -> (NH2015, all); ``NH2015/Primary`` -> (NH2015, Primary)."""
    dataset, _, roi = str(target).partition("/")
    roi = roi or ALL_VOXELS
    if dataset not in DATASETS or roi not in (ALL_VOXELS, *ROI_LABELS):
        raise InputError("pretraining.targets",
                         f"unknown target {target!r}; expected <dataset>[/<roi>] with a dataset "
                         f"of {list(DATASETS)} and an ROI of {list(ROI_LABELS)}")
    return dataset, roi


def parse_params(params: Any) -> PretrainingParams:
    """Validate a params.yaml ``pretraining`` section."""
    from brainalign.params import section

    return section(PretrainingParams, params, "pretraining")
