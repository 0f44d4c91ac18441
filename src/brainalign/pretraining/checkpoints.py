"""Which checkpoints a Fig. 5 run scores: their steps, files, pinned sha256 and model.

A checkpoint folder is one of:

- the **miniature** run's (``miniature.json`` beside Lightning ``epoch=E-step=N.ckpt`` files):
  the manifest pins each file's sha256 and the miniature's configuration;
- the **published** checkpoints placed by the fetch registry's Hub directory listing
  (``step-<N:06d>.ckpt``): the registry pins each file's sha256 (the Hub's LFS oid) and step;
- any other folder of ``.ckpt`` files of mel256-ec-base (sha256 computed when scored).

Steps come from the file names: :func:`~brainalign.models.encodecmae.checkpoint_step` (the
integer after the last ``=``, as the authors' ``Path(f).stem.split('=')[-1]``) for Lightning
names, ``step-<N>`` for the names the listing entry gives the published files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainalign.errors import InputError
from brainalign.models import encodecmae as E
from brainalign.models.spec import ModelSpec

PLACED = re.compile(r"^step-(\d+)$")
MINIATURE = "miniature pretraining"
PUBLISHED = "published checkpoints"
FOLDER = "checkpoint folder"


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint file: its step, path, pinned sha256 (None: unknown) and origin."""

    step: int
    path: Path
    sha256: str | None = None
    origin: str = ""

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class CheckpointSet:
    """The checkpoints of one run, in step order, and the model they load into."""

    folder: Path
    kind: str
    spec: ModelSpec
    checkpoints: tuple[Checkpoint, ...]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def miniature(self) -> bool:
        return self.kind == MINIATURE

    @property
    def steps(self) -> list[int]:
        return [c.step for c in self.checkpoints]


def step_of(path: str | Path) -> int:
    """The step of a checkpoint file: ``…=N.ckpt`` (Lightning) or ``step-N.ckpt`` (placed)."""
    stem = Path(path).stem
    placed = PLACED.match(stem)
    if placed:
        return int(placed.group(1))
    return E.checkpoint_step(path)


def order_checkpoints(paths: Iterable[str | Path]) -> list[Path]:
    """Checkpoint files in step order; two files with one step are an error."""
    paths = [Path(p) for p in paths]
    if all("=" in p.stem for p in paths):
        return E.sort_checkpoints(paths)
    seen: dict[int, Path] = {}
    for p in paths:
        step = step_of(p)
        if step in seen:
            raise InputError(p, f"step {step} also in {seen[step].name}")
        seen[step] = p
    return [seen[s] for s in sorted(seen)]


def _miniature(folder: Path) -> CheckpointSet:
    from brainalign.pretraining.miniature import MANIFEST, miniature_spec

    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        files = manifest["checkpoints"]
        spec = miniature_spec(manifest["encoder_config"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(path, f"not a miniature pretraining manifest ({exc}); rerun "
                         "`dvc repro pretrain-mini`") from None
    ckpts = []
    for item in files:
        ckpt = folder / item["file"]
        if not ckpt.is_file():
            raise InputError(ckpt, "listed in the miniature manifest but missing (rerun `dvc "
                             "repro pretrain-mini`)")
        if step_of(ckpt) != int(item["step"]):
            raise InputError(ckpt, f"the manifest says step {item['step']}")
        ckpts.append(Checkpoint(int(item["step"]), ckpt, item["sha256"], item["file"]))
    order = {p: i for i, p in enumerate(order_checkpoints(c.path for c in ckpts))}
    ckpts.sort(key=lambda c: order[c.path])
    prov = {k: manifest.get(k) for k in ("objective", "config", "encoder_config",
                                         "parameters", "corpus", "label")}
    return CheckpointSet(folder, MINIATURE, spec, tuple(ckpts), prov)


def _listing_entry(folder: Path, data_root: Path, registry: str | Path | None) -> Any:
    from brainalign.data.fetch import load_registry

    target = folder.resolve()
    for entry in load_registry(registry):
        if entry.listing is not None and (data_root / entry.path).resolve() == target:
            return entry
    return None


def _published(folder: Path, entry: Any) -> CheckpointSet:
    listing = entry.listing
    hint = f"run `brainalign fetch --group {entry.group}`"
    if not listing.files:
        raise InputError(folder, f"the registry lists no files for {entry.source} yet ({hint})")
    prefix = entry.path.rstrip("/") + "/"
    ckpts, missing = [], []
    for f in listing.files:
        path = folder / f.path[len(prefix):] if f.path.startswith(prefix) else folder / f.path
        if not path.is_file():
            missing.append(path.name)
            continue
        ckpts.append(Checkpoint(int(f.step), path, f.sha256, f"{listing.repo}/{f.file}"))
    if missing:
        raise InputError(folder, f"{len(missing)} of {len(listing.files)} listed checkpoints "
                         f"are missing (e.g. {missing[0]}; {hint})")
    ckpts.sort(key=lambda c: c.step)
    prov = {"repo": listing.repo, "folder": listing.folder, "revision": listing.revision,
            "commit": listing.commit, "n_files": len(listing.files)}
    return CheckpointSet(folder, PUBLISHED, _base_spec(), tuple(ckpts), prov)


def _base_spec() -> ModelSpec:
    from brainalign.models.registry import get_spec

    return get_spec(E.PRETRAIN_MODEL)


def discover(folder: str | Path, data_root: str | Path = "data",
             registry: str | Path | None = None) -> CheckpointSet:
    """The checkpoints in ``folder``: a miniature run, the listed published files, or a plain
    folder of mel256-ec-base ``.ckpt`` files."""
    from brainalign.pretraining.miniature import MANIFEST

    folder = Path(folder)
    if (folder / MANIFEST).is_file():
        return _miniature(folder)
    entry = _listing_entry(folder, Path(data_root), registry)
    if entry is not None:
        return _published(folder, entry)
    if not folder.is_dir():
        raise InputError(folder, "checkpoint folder not found (the miniature: `dvc repro "
                         "pretrain-mini`; the published checkpoints: `brainalign fetch --group "
                         "pretraining`)")
    paths = order_checkpoints(folder.glob("*.ckpt"))
    if not paths:
        raise InputError(folder, "no .ckpt files here")
    ckpts = tuple(Checkpoint(step_of(p), p, None, p.name) for p in paths)
    return CheckpointSet(folder, FOLDER, _base_spec(), ckpts, {})
