"""Helpers for the loader tests of the paper's models: synthetic checkpoints at their real URLs.

A test writes a checkpoint in the exact upstream container (same top-level keys, state-dict key
names and shapes; random values) at the path its real URL maps to in a test mirror
(``<mirror>/<host>/<path>``), then runs the real code path: ``brainalign fetch --group weights``
(mirror first, sha256 trust on first use recorded in a copy of the registry) and ``brainalign
extract`` on the 165 sounds.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from brainalign.data.fetch import HubFile, load_registry, mirror_path
from brainalign.models.activations import Activations, load_activations
from brainalign.models.spec import BuildContext, ModelSpec

REPO = Path(__file__).resolve().parents[2]


def hf_url(repo: str, file: str, revision: str = "main") -> str:
    """The Hub URL of a file at a revision (what the mirror is keyed by)."""
    return HubFile(repo, file, revision).url()


def source_urls(model: str) -> dict[str, str]:
    """{file name under data/weights/<model>/: the URL its bytes come from} for a model.

    For an archive member the URL is the archive's (the test writes the archive there).
    """
    out: dict[str, str] = {}
    prefix = f"weights/{model}/"
    for entry in load_registry(REPO / "src/brainalign/data/registry.json"):
        for dest in entry.destinations():
            if dest.startswith(prefix):
                out[dest[len(prefix):]] = entry.url
    return out


def put(mirror: Path, url: str, source: bytes | str | Path) -> Path:
    """Place bytes (or a copy of a file) where ``url`` maps to in the mirror."""
    target = mirror_path(url, mirror)
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(source, bytes):
        target.write_bytes(source)
    else:
        shutil.copyfile(source, target)
    return target


class _Evil:
    """Pickles to a call of os.system: a loader must refuse the file before it runs."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("echo brainalign-test-payload-ran > /dev/null",))


def add_payload(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a checkpoint dict carrying an ``os.system`` payload under an extra key."""
    return {**checkpoint, "__payload__": _Evil()}


def evil_pickle_bytes() -> bytes:
    return pickle.dumps({"state_dict": _Evil()})


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def context(tmp: Path, model: str, registry: Path | None = None, device: str = "cpu",
            **options: Any) -> BuildContext:
    """A BuildContext reading ``<tmp>/weights/<model>`` (fetched there by :func:`fetch`)."""
    import torch

    return BuildContext(device=torch.device(device), options=options,
                        weights_dir=tmp / "weights" / model, registry=registry)


@dataclasses.dataclass
class Workspace:
    """A project folder for the CLI: params.yaml, data root, a registry copy, mirrors."""

    root: Path
    mirror: Path
    registry: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    def params(self, models: list[str], extract: Mapping[str, Any] | None = None) -> Path:
        from brainalign.models.registry import stage_dependencies

        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["models"] = {m: stage_dependencies(m) for m in models}
        params["extract"].update(dict(extract or {}))
        path = self.root / "params.yaml"
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        return path

    def cli(self, *args: str) -> str:
        from brainalign.cli import app

        result = CliRunner().invoke(app, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    def fetch_weights(self, *models: str) -> str:
        """``brainalign fetch --group github --group weights [--model M ...] --no-dvc``."""
        margs = [a for m in models for a in ("--model", m)]
        return self.cli("fetch", "--group", "github", "--group", "weights", *margs, "--no-dvc")

    def extract(self, model: str) -> Activations:
        self.cli("extract", "--model", model)
        return load_activations(self.root / "build" / "activations" / f"{model}.npz")


def workspace(tmp_path: Path, monkeypatch: Any, shared_mirror: Path) -> Workspace:
    """A fresh project folder; the registry is a copy (TOFU writes land there), the mirror
    roots are a test mirror (synthetic checkpoints) and the shared one (the 165 sounds)."""
    root = tmp_path / "project"
    root.mkdir()
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    registry = tmp_path / "registry.json"
    shutil.copyfile(REPO / "src/brainalign/data/registry.json", registry)
    monkeypatch.chdir(root)
    monkeypatch.setenv("BRAINALIGN_REGISTRY", str(registry))
    monkeypatch.setenv("BRAINALIGN_MIRROR", os.pathsep.join([str(mirror), str(shared_mirror)]))
    return Workspace(root, mirror, registry)


def override_spec(monkeypatch: Any, spec: ModelSpec) -> None:
    """Register ``spec`` under its name for this test (e.g. a reduced-depth variant)."""
    from brainalign.models import registry

    monkeypatch.setitem(registry._registry(), spec.name, spec)
