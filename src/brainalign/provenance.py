"""Content digests that say which code and which environment produced a result.

A git commit cannot appear in an output that is committed with it (the commit that records
``dvc.lock`` is made after the run), so the manuscript names its code by content instead: the
sha256 of the package's source files and of ``uv.lock``. Both are the same for the same code on
every machine, so a rebuild reproduces the PDF's bytes, and ``brainalign --version`` prints them
for comparison.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from brainalign.data.fetch import sha256_of

PACKAGE_DIR = Path(__file__).resolve().parent
_SOURCE_SUFFIXES = {".py", ".json", ".yaml"}


def source_sha256(package_dir: Path = PACKAGE_DIR) -> str:
    """sha256 over (relative path, sha256) of the package's .py/.json/.yaml files, sorted."""
    digest = hashlib.sha256()
    files = sorted(
        p for p in package_dir.rglob("*")
        if p.is_file() and p.suffix in _SOURCE_SUFFIXES and "__pycache__" not in p.parts
    )
    for path in files:
        rel = path.relative_to(package_dir).as_posix()
        digest.update(f"{rel}\0{sha256_of(path)}\n".encode())
    return digest.hexdigest()


def lock_sha256() -> str | None:
    """sha256 of the environment's lock file: $BRAINALIGN_LOCK_SHA256 (set in the Docker image),
    else the checkout's ``uv.lock`` next to ``src/``; None when neither exists."""
    env = os.environ.get("BRAINALIGN_LOCK_SHA256")
    if env:
        return env
    lock = PACKAGE_DIR.parents[1] / "uv.lock"
    if lock.is_file():
        return sha256_of(lock)
    return None
