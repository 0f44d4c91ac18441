"""Fetch every external input with a pinned URL and sha256, from a local mirror or the network.

- The registry (``registry.json`` in this package, committed) lists each file's URL, sha256 and
  destination under the data root.
- A mirror root (``$BRAINALIGN_MIRROR``) maps ``https://<host>/<path>`` to
  ``<mirror>/<host>/<path>``; a mirror copy is used first and verified like a download.
- Downloads go through pooch (progress bar, retries, hash check, atomic move into place).
- The lab tar and the HEAR tarballs have no published hash: the first successful download
  records its sha256 in the registry (trust on first use) and every later fetch verifies it.
- Archives are verified before unpacking; unpacking refuses absolute paths, ``..`` and links,
  and lands atomically (temporary folder, then rename).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from brainalign.atomic import atomic_path, write_text
from brainalign.errors import InputError

log = logging.getLogger(__name__)

MIRROR_ENV = "BRAINALIGN_MIRROR"
GROUPS = ("github", "lab", "hear")


@dataclass(frozen=True)
class RemoteFile:
    """One external input: URL, sha256 (None until the first download) and destination."""

    group: str
    path: str
    url: str
    sha256: str | None
    unpack_to: str | None = None


def default_registry_path() -> Path:
    return Path(str(resources.files("brainalign.data").joinpath("registry.json")))


def load_registry(path: str | Path | None = None) -> list[RemoteFile]:
    """All registry entries, in file order."""
    path = Path(path) if path is not None else default_registry_path()
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not a readable registry ({exc})") from None
    entries = []
    for group in GROUPS:
        for item in raw.get(group, []):
            entries.append(RemoteFile(group=group, **item))
    return entries


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def mirror_path(url: str, mirror_root: str | Path) -> Path:
    """Map ``https://host/a/b`` to ``<mirror_root>/host/a/b``."""
    parsed = urlparse(url)
    rel = PurePosixPath(parsed.netloc) / parsed.path.lstrip("/")
    if ".." in rel.parts:
        raise InputError(url, "URL path must not contain '..'")
    return Path(mirror_root) / rel


def resolve_mirror(mirror_root: str | Path | None = None) -> Path | None:
    """The mirror root from the argument or ``$BRAINALIGN_MIRROR`` (None when unset)."""
    root = mirror_root if mirror_root is not None else os.environ.get(MIRROR_ENV) or None
    if root is None:
        return None
    root = Path(root)
    if not root.is_dir():
        raise InputError(
            f"${MIRROR_ENV}" if mirror_root is None else root, f"mirror root {root} is not a folder"
        )
    return root


def _verify(path: Path, expected: str | None, origin: str) -> str:
    actual = sha256_of(path)
    if expected is not None and actual != expected:
        raise InputError(
            origin,
            f"checksum mismatch: expected sha256 {expected}, got {actual} "
            "(truncated, corrupted or changed upstream)",
        )
    return actual


def _download(entry: RemoteFile, dest: Path, retries: int) -> None:
    """Download ``entry.url`` to ``dest`` with pooch (atomic, progress bar, hash check, retries)."""
    import pooch
    import requests

    url = entry.url
    base, fname = url.rsplit("/", 1)
    known = f"sha256:{entry.sha256}" if entry.sha256 else None
    fetcher = pooch.create(
        path=dest.parent,
        base_url=base + "/",
        registry={fname: known},
        retry_if_failed=retries,
    )
    try:
        downloaded = Path(fetcher.fetch(fname, progressbar=True))
    except ValueError as exc:  # pooch's hash mismatch
        raise InputError(url, f"checksum mismatch on download ({exc})") from None
    except (requests.exceptions.RequestException, OSError) as exc:
        raise InputError(
            url,
            f"download failed ({type(exc).__name__}); no network? Set ${MIRROR_ENV} to a "
            "folder laid out as <host>/<path> holding a copy",
        ) from None
    if downloaded != dest:
        os.replace(downloaded, dest)


def fetch_file(
    entry: RemoteFile,
    data_root: str | Path,
    mirror_root: str | Path | None = None,
    registry_path: str | Path | None = None,
    retries: int = 3,
) -> Path:
    """Place ``entry`` under ``data_root`` verified; returns its path. Skips a verified copy."""
    data_root = Path(data_root)
    dest = data_root / entry.path
    if dest.is_file():
        if entry.sha256 is not None and sha256_of(dest) == entry.sha256:
            return dest
        log.warning("%s exists but does not match its registry hash: fetching again", dest)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    mirror = resolve_mirror(mirror_root)
    local = mirror_path(entry.url, mirror) if mirror is not None else None
    if local is not None and local.is_file():
        actual = _verify(local, entry.sha256, str(local))
        with atomic_path(dest) as tmp:
            shutil.copyfile(local, tmp)
        log.debug("copied %s from the mirror", entry.path)
    else:
        _download(entry, dest, retries)
        actual = _verify(dest, entry.sha256, entry.url) if entry.sha256 is None else entry.sha256
    if entry.sha256 is None:
        record_hash(entry, actual, registry_path)
    return dest


def record_hash(entry: RemoteFile, sha256: str, registry_path: str | Path | None = None) -> None:
    """Trust on first use: write the hash of a first download into the registry file."""
    path = Path(registry_path) if registry_path is not None else default_registry_path()
    raw = json.loads(path.read_text())
    for item in raw[entry.group]:
        if item["url"] == entry.url:
            item["sha256"] = sha256
    write_text(path, json.dumps(raw, indent=1) + "\n")
    log.warning(
        "recorded sha256 %s for %s in %s (trust on first use): commit this file so every later "
        "fetch verifies against it",
        sha256,
        entry.url,
        path,
    )


def safe_extract(archive: str | Path, dest_dir: str | Path) -> Path:
    """Unpack a tar archive into ``dest_dir`` atomically, refusing unsafe member paths."""
    archive, dest_dir = Path(archive), Path(dest_dir)
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                name = PurePosixPath(member.name)
                if name.is_absolute() or ".." in name.parts:
                    raise InputError(archive, f"refusing unsafe member path {member.name!r}")
                if member.issym() or member.islnk() or member.isdev():
                    raise InputError(archive, f"refusing link or device member {member.name!r}")
            dest_dir.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", dir=dest_dir.parent))
            try:
                # Members were vetted above; the "data" filter (Python >= 3.11.4) adds a second
                # line of defence where the interpreter has it (Debian bookworm's 3.11.2 does not).
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, members=members, filter="data")
                else:
                    tar.extractall(tmp, members=members)
                if dest_dir.exists():
                    shutil.rmtree(dest_dir)
                os.replace(tmp, dest_dir)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise InputError(archive, f"not a readable tar archive ({exc})") from None
    return dest_dir


def fetch(
    groups: tuple[str, ...] | list[str],
    data_root: str | Path,
    mirror_root: str | Path | None = None,
    registry_path: str | Path | None = None,
) -> list[Path]:
    """Fetch (and unpack) every registry entry of ``groups``; returns the placed paths."""
    from tqdm import tqdm

    bad = sorted(set(groups) - set(GROUPS))
    if bad:
        raise InputError("fetch groups", f"unknown group(s) {bad}; expected some of {list(GROUPS)}")
    entries = [e for e in load_registry(registry_path) if e.group in groups]
    placed = []
    for entry in tqdm(entries, desc="fetch", unit="file", disable=len(entries) < 2):
        path = fetch_file(entry, data_root, mirror_root, registry_path)
        if entry.unpack_to is not None:
            target = Path(data_root) / entry.unpack_to
            if not target.is_dir():
                safe_extract(path, target)
            path = target
        placed.append(path)
    return placed
