"""Fetch every external input from a pinned source, verified by sha256, mirror first.

- The registry (``registry.json`` in this package, committed; ``$BRAINALIGN_REGISTRY`` names
  another) lists each file's source, sha256 and destination under the data root, in groups:
  ``github`` (the public inputs, hashes published), ``lab`` (the lab release tar), ``hear`` (the
  HEAR tarballs), ``weights`` (the paper's model checkpoints, ``weights/<model>/...``),
  ``reference`` (published outputs to check against: Tuckute et al.'s activations) and
  ``pretraining`` (the 100 EnCodecMAE pretraining checkpoints of Fig. 5).
- A source is a URL, or a Hugging Face file (repo id, file path, revision). A revision that is a
  branch is resolved to its commit at the first download, recorded in the registry, and every
  later download asks for that commit. Entries may list ``alternates`` (other URLs of the same
  bytes), tried in order when the source fails.
- A Hugging Face **directory listing** (``listing``: repo, folder, glob pattern, revision,
  expected count, a ``rename`` template) stands for every matching file of one folder. The
  first fetch resolves the revision to a commit, lists the folder through the Hub API
  (``<endpoint>/api/models/<repo>/tree/<commit>/<folder>``, pages followed), keeps the files
  matching the pattern (their number must be the expected count), names each
  ``<entry path>/<rename>`` (``{step}``: the integer after the last ``=`` of the file's stem,
  ``{name}``, ``{stem}``, ``{suffix}``) and records the commit and the file list in the
  registry: repo path, step, size and sha256, which is the Hub's LFS oid (the sha256 of the
  content) where the Hub gives one, else learned on first use. Later fetches use the recorded
  list and verify every file; the folder is not listed again. Mirrors hold the revision answer
  and the listing at the API URLs' paths and the files at their ``resolve`` URLs.
- Mirrors (``$BRAINALIGN_MIRROR``, one or more roots separated by ``os.pathsep``) map
  ``https://<host>/<path>`` to ``<root>/<host>/<path>``; a mirror copy is used first and
  verified like a download.
- Downloads go through pooch (progress bar, hash check, atomic move into place), with retries.
- Files without a published hash (the lab tar, the HEAR tarballs, the checkpoints): the first
  successful download records its sha256 in the registry (trust on first use) and every later
  fetch verifies it. Commit the registry afterwards.
- Archives are verified before unpacking; unpacking refuses absolute paths, ``..`` and links,
  and lands atomically. An archive entry may instead list ``members``: only those files are
  extracted (each found by its path suffix inside the archive), each hash learned on first use
  like the archive's, so a present, verified member never needs the archive again.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import tarfile
import time
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, urlparse

from brainalign.atomic import atomic_path, temp_dir, write_text
from brainalign.errors import InputError

log = logging.getLogger(__name__)

MIRROR_ENV = "BRAINALIGN_MIRROR"
REGISTRY_ENV = "BRAINALIGN_REGISTRY"
HF_ENDPOINT_ENV = "HF_ENDPOINT"
HF_ENDPOINT = "https://huggingface.co"
GROUPS = ("github", "lab", "hear", "weights", "reference", "pretraining")
WEIGHTS_PREFIX = "weights/"
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class HubFile:
    """A file of a Hugging Face repository at a revision (a branch until resolved to a commit)."""

    repo: str
    file: str
    revision: str = "main"
    commit: str | None = None

    def __post_init__(self) -> None:
        if self.commit is None and _COMMIT_RE.match(self.revision):
            object.__setattr__(self, "commit", self.revision)

    def url(self, endpoint: str = HF_ENDPOINT, pinned: bool = True) -> str:
        """``<endpoint>/<repo>/resolve/<commit or revision>/<file>``."""
        rev = self.commit if (pinned and self.commit) else self.revision
        return f"{endpoint.rstrip('/')}/{self.repo}/resolve/{rev}/{self.file}"


@dataclass(frozen=True)
class ListedFile:
    """One file of a resolved directory listing: repo path, destination, step, size, sha256."""

    file: str
    path: str
    step: int | None = None
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class HubListing:
    """The files of one Hugging Face folder matching ``pattern``, at a revision (resolved to a
    commit at the first fetch); ``files`` is the resolved list (empty until then)."""

    repo: str
    folder: str
    pattern: str = "*"
    revision: str = "main"
    commit: str | None = None
    expected_count: int | None = None
    rename: str = "{name}"
    files: tuple[ListedFile, ...] = ()

    def __post_init__(self) -> None:
        if self.commit is None and _COMMIT_RE.match(self.revision):
            object.__setattr__(self, "commit", self.revision)

    def api_url(self, endpoint: str = HF_ENDPOINT, pinned: bool = True) -> str:
        """``<endpoint>/api/models/<repo>/tree/<commit or revision>/<folder>``."""
        rev = self.commit if (pinned and self.commit) else self.revision
        return (f"{endpoint.rstrip('/')}/api/models/{self.repo}/tree/{quote(rev, safe='')}/"
                f"{self.folder.strip('/')}")

    def revision_url(self, endpoint: str = HF_ENDPOINT) -> str:
        """The Hub's answer naming the commit of ``revision``."""
        return (f"{endpoint.rstrip('/')}/api/models/{self.repo}/revision/"
                f"{quote(self.revision, safe='')}")


@dataclass(frozen=True)
class Member:
    """One file to extract from an archive: its path suffix inside it and its destination."""

    member: str
    path: str
    sha256: str | None = None


@dataclass(frozen=True)
class RemoteFile:
    """One external input: source, sha256 (None until the first download) and destination."""

    group: str
    path: str
    url: str = ""
    sha256: str | None = None
    unpack_to: str | None = None
    hf: HubFile | None = None
    members: tuple[Member, ...] = ()
    alternates: tuple[str, ...] = ()
    size: int | None = None
    sha256_prefix: str | None = None
    git_blob_sha1: str | None = None
    note: str = ""
    listing: HubListing | None = None

    def __post_init__(self) -> None:
        if not self.url and self.hf is None and self.listing is None:
            raise InputError(self.path, "registry entry has neither 'url', 'hf' nor 'listing'")
        if self.hf is not None and not self.url:
            object.__setattr__(self, "url", self.hf.url())
        if self.listing is not None and not self.url:
            object.__setattr__(self, "url", self.listing.api_url())

    @property
    def source(self) -> str:
        """What identifies the bytes: the URL, ``hf://repo@revision/file`` or, for a listing,
        ``hf-tree://repo@revision/folder/pattern``."""
        if self.hf is not None:
            return f"hf://{self.hf.repo}@{self.hf.revision}/{self.hf.file}"
        if self.listing is not None:
            lst = self.listing
            return f"hf-tree://{lst.repo}@{lst.revision}/{lst.folder.strip('/')}/{lst.pattern}"
        return self.url

    def destinations(self) -> list[str]:
        """Data-root paths this entry places: the file itself, its extracted members or the
        files of its resolved listing."""
        if self.listing is not None:
            return [f.path for f in self.listing.files] or [self.path]
        return [m.path for m in self.members] if self.members else [self.path]


def _entry(group: str, item: dict[str, Any], where: Path) -> RemoteFile:
    try:
        item = dict(item)
        hf = item.pop("hf", None)
        members = item.pop("members", ())
        listing = item.pop("listing", None)
        if listing:
            listing = dict(listing)
            files = tuple(ListedFile(**f) for f in listing.pop("files", None) or ())
            listing = HubListing(**listing, files=files)
        return RemoteFile(
            group=group,
            hf=HubFile(**hf) if hf else None,
            listing=listing or None,
            members=tuple(Member(**m) for m in members),
            alternates=tuple(item.pop("alternates", ())),
            **item,
        )
    except TypeError as exc:
        raise InputError(where, f"malformed {group} entry {item.get('path')!r} ({exc})") from None


def default_registry_path() -> Path:
    """``$BRAINALIGN_REGISTRY`` when set, else the committed ``registry.json``."""
    env = os.environ.get(REGISTRY_ENV)
    if env:
        return Path(env)
    return Path(str(resources.files("brainalign.data").joinpath("registry.json")))


def load_registry(path: str | Path | None = None) -> list[RemoteFile]:
    """All registry entries, in file order."""
    path = Path(path) if path is not None else default_registry_path()
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not a readable registry ({exc})") from None
    return [_entry(group, item, path) for group in GROUPS for item in raw.get(group, [])]


def model_entries(entries: Iterable[RemoteFile], model: str) -> list[RemoteFile]:
    """The ``weights`` entries that place files under ``weights/<model>/``."""
    prefix = f"{WEIGHTS_PREFIX}{model}/"
    return [e for e in entries if e.group == "weights"
            and any(d.startswith(prefix) for d in e.destinations())]


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def mirror_path(url: str, mirror_root: str | Path) -> Path:
    """Map ``https://host/a/b?q`` to ``<mirror_root>/host/a/b`` (the query is dropped)."""
    parsed = urlparse(url)
    rel = PurePosixPath(parsed.netloc) / parsed.path.lstrip("/")
    if ".." in rel.parts:
        raise InputError(url, "URL path must not contain '..'")
    return Path(mirror_root) / rel


def resolve_mirrors(mirror_root: str | Path | None = None) -> list[Path]:
    """The mirror roots: the argument, else ``$BRAINALIGN_MIRROR`` (``os.pathsep``-separated)."""
    if mirror_root is not None:
        roots, where = [Path(mirror_root)], str(mirror_root)
    else:
        env = os.environ.get(MIRROR_ENV) or ""
        roots, where = [Path(p) for p in env.split(os.pathsep) if p], f"${MIRROR_ENV}"
    for root in roots:
        if not root.is_dir():
            raise InputError(where, f"mirror root {root} is not a folder")
    return roots


def resolve_mirror(mirror_root: str | Path | None = None) -> Path | None:
    """The first mirror root (None when none is configured)."""
    roots = resolve_mirrors(mirror_root)
    return roots[0] if roots else None


def _verify(path: Path, expected: str | None, origin: str) -> str:
    actual = sha256_of(path)
    if expected is not None and actual != expected:
        raise InputError(
            origin,
            f"checksum mismatch: expected sha256 {expected}, got {actual} "
            "(truncated, corrupted or changed upstream)",
        )
    return actual


def _no_network(url: str, exc: Exception) -> InputError:
    return InputError(
        url,
        f"download failed ({type(exc).__name__}); no network? Set ${MIRROR_ENV} to a "
        "folder laid out as <host>/<path> holding a copy",
    )


def hf_endpoint() -> str:
    return os.environ.get(HF_ENDPOINT_ENV) or HF_ENDPOINT


def resolve_hub_commit(hf: HubFile, timeout: float = 30.0) -> str:
    """The commit a branch of a Hugging Face repo points at (the Hub's revision API)."""
    import requests

    url = f"{hf_endpoint().rstrip('/')}/api/models/{hf.repo}/revision/{hf.revision}"
    try:
        response = requests.get(url, timeout=timeout)
        response.raise_for_status()
        sha = response.json().get("sha", "")
    except (requests.exceptions.RequestException, ValueError) as exc:
        raise _no_network(url, exc) from None
    if not _COMMIT_RE.match(str(sha)):
        raise InputError(url, f"expected a 40-hex commit in the Hub's answer, got {sha!r}")
    return str(sha)


def _download_url(url: str, dest: Path, known: str | None, retries: int) -> None:
    """One URL to ``dest`` with pooch (atomic, progress bar, hash check), retried."""
    import pooch
    import requests

    last: Exception | None = None
    for attempt in range(retries + 1):
        try:
            got = pooch.retrieve(url, known_hash=f"sha256:{known}" if known else None,
                                 fname=dest.name, path=dest.parent, progressbar=True)
            if Path(got) != dest:
                os.replace(got, dest)
            return
        except ValueError as exc:  # pooch's hash mismatch: retrying will not help
            raise InputError(url, f"checksum mismatch on download ({exc})") from None
        except (requests.exceptions.RequestException, OSError) as exc:
            last = exc
            if attempt < retries:
                time.sleep(min(2.0**attempt, 10.0))
    assert last is not None
    raise _no_network(url, last)


@dataclass
class _Registry:
    """The registry file being fetched against; hashes and commits learned are written back."""

    path: Path
    learned: list[str] = field(default_factory=list)

    def record(self, entry: RemoteFile, sha256: str | None = None, commit: str | None = None,
               member: Member | None = None) -> None:
        raw = json.loads(self.path.read_text())
        changed = False
        for item in raw.get(entry.group, []):
            if _entry(entry.group, item, self.path).source != entry.source:
                continue
            if member is not None:
                for m in item.get("members", []):
                    if m["member"] == member.member and m.get("sha256") is None:
                        m["sha256"], changed = sha256, True
            else:
                if sha256 is not None and item.get("sha256") is None:
                    item["sha256"], changed = sha256, True
                if commit is not None and item.get("hf") and item["hf"].get("commit") is None:
                    item["hf"]["commit"], changed = commit, True
        if not changed:
            return
        write_text(self.path, json.dumps(raw, indent=1) + "\n")
        what = f"commit {commit}" if commit else f"sha256 {sha256}"
        target = f"{entry.source} :: {member.member}" if member else entry.source
        self.learned.append(f"{target}: {what}")
        log.warning("recorded %s for %s in %s (trust on first use): commit this file so every "
                    "later fetch verifies against it", what, target, self.path)


    def _edit_listing(self, entry: RemoteFile, edit: Any) -> bool:
        """Apply ``edit(listing_dict) -> changed`` to the entry's item; write it back if so."""
        raw = json.loads(self.path.read_text())
        changed = False
        for item in raw.get(entry.group, []):
            if item.get("path") == entry.path and isinstance(item.get("listing"), dict):
                changed = bool(edit(item["listing"])) or changed
        if changed:
            write_text(self.path, json.dumps(raw, indent=1) + "\n")
        return changed

    def record_listing(self, entry: RemoteFile, commit: str | None,
                       files: Sequence[ListedFile]) -> None:
        """A resolved listing: its commit and file list (only where none is recorded yet)."""

        def edit(lst: dict[str, Any]) -> bool:
            changed = False
            if commit is not None and not lst.get("commit"):
                lst["commit"], changed = commit, True
            if files and not lst.get("files"):
                lst["files"], changed = [dataclasses.asdict(f) for f in files], True
            return changed

        if self._edit_listing(entry, edit):
            what = (f"{len(files)} files" if files else "") + (
                f"{' at ' if files else ''}commit {commit}" if commit else "")
            self.learned.append(f"{entry.source}: {what}")
            log.warning("recorded %s of %s in %s: commit this file so every later fetch "
                        "verifies against it", what, entry.source, self.path)

    def record_listed(self, entry: RemoteFile, listed: ListedFile, sha256: str) -> None:
        """Trust on first use for a listed file the Hub gave no LFS oid for."""

        def edit(lst: dict[str, Any]) -> bool:
            for f in lst.get("files") or []:
                if f.get("path") == listed.path and f.get("sha256") is None:
                    f["sha256"] = sha256
                    return True
            return False

        if self._edit_listing(entry, edit):
            self.learned.append(f"{entry.source} :: {listed.file}: sha256 {sha256}")
            log.warning("recorded sha256 %s for %s in %s (trust on first use)", sha256,
                        listed.file, self.path)


@dataclass
class _ListedRegistry(_Registry):
    """What :func:`_place` records for one listed file goes into its listing entry."""

    entry: RemoteFile | None = None
    listed: ListedFile | None = None

    def record(self, entry: RemoteFile, sha256: str | None = None, commit: str | None = None,
               member: Member | None = None) -> None:
        assert self.entry is not None and self.listed is not None
        if sha256 is not None:
            self.record_listed(self.entry, self.listed, sha256)
        if commit is not None:
            self.record_listing(self.entry, commit, ())


def record_hash(entry: RemoteFile, sha256: str, registry_path: str | Path | None = None) -> None:
    """Trust on first use: write the hash of a first download into the registry file."""
    path = Path(registry_path) if registry_path is not None else default_registry_path()
    _Registry(path).record(entry, sha256=sha256)


def _candidates(entry: RemoteFile) -> list[str]:
    """Source URLs in the order tried: the pinned one, the branch one (mirrors), alternates."""
    urls = [entry.hf.url() if entry.hf else entry.url]
    if entry.hf is not None and entry.hf.commit and entry.hf.revision != entry.hf.commit:
        urls.append(entry.hf.url(pinned=False))
    return urls + list(entry.alternates)


def _from_mirror(entry: RemoteFile, dest: Path, mirrors: Sequence[Path]) -> str | None:
    for url in _candidates(entry):
        for root in mirrors:
            local = mirror_path(url, root)
            if local.is_file():
                actual = _verify(local, entry.sha256, str(local))
                with atomic_path(dest) as tmp:
                    shutil.copyfile(local, tmp)
                log.debug("copied %s from the mirror %s", entry.path, root)
                return actual
    return None


def _download(entry: RemoteFile, dest: Path, retries: int, registry: _Registry) -> str:
    hf = entry.hf
    if hf is not None and hf.commit is None:
        commit = resolve_hub_commit(hf)
        registry.record(entry, commit=commit)
        hf = HubFile(hf.repo, hf.file, hf.revision, commit)
    urls = ([hf.url(hf_endpoint())] if hf else [entry.url]) + list(entry.alternates)
    errors = []
    for url in urls:
        try:
            _download_url(url, dest, entry.sha256, retries)
            return _verify(dest, entry.sha256, url)
        except InputError as exc:
            if "checksum mismatch" in exc.problem:
                raise
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    raise InputError(entry.path, "every source failed: " + "; ".join(str(e) for e in errors))


def _link_or_copy(src: Path, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        try:
            tmp.unlink()
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def _place(entry: RemoteFile, data_root: Path, mirrors: Sequence[Path], registry: _Registry,
           retries: int, placed: dict[str, Path]) -> Path:
    """Put the entry's file at ``data_root/entry.path`` verified; returns the path."""
    dest = data_root / entry.path
    if dest.is_file():
        if entry.sha256 is not None and sha256_of(dest) == entry.sha256:
            placed.setdefault(entry.source, dest)
            return dest
        log.warning("%s exists but does not match its registry hash: fetching again", dest)
        dest.unlink()
    created = not dest.parent.exists()
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        twin = placed.get(entry.source)
        if twin is not None and twin.is_file():  # the same bytes under another model's folder
            _link_or_copy(twin, dest)
            actual = _verify(dest, entry.sha256, str(twin))
        else:
            found = _from_mirror(entry, dest, mirrors)
            actual = found if found is not None else _download(entry, dest, retries, registry)
    except InputError:
        if created and dest.parent.is_dir() and not any(dest.parent.iterdir()):
            dest.parent.rmdir()
        raise
    if entry.sha256 is None:
        try:
            _first_use_checks(entry, dest, actual)
        except InputError:
            dest.unlink()
            raise
        registry.record(entry, sha256=actual)
    placed[entry.source] = dest
    return dest


def git_blob_sha1(path: str | Path) -> str:
    """Git's object id of a file's content (``git hash-object``)."""
    path = Path(path)
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _first_use_checks(entry: RemoteFile, dest: Path, sha256: str) -> None:
    """What is published about a file without a full hash, checked before trusting it."""
    if entry.sha256_prefix and not sha256.startswith(entry.sha256_prefix):
        raise InputError(entry.url, f"first download has sha256 {sha256}, but the source "
                         f"publishes the prefix {entry.sha256_prefix}: refusing it")
    if entry.size is not None and dest.stat().st_size != entry.size:
        raise InputError(entry.url, f"first download has {dest.stat().st_size} bytes, expected "
                         f"{entry.size}: refusing it")
    if entry.git_blob_sha1 and git_blob_sha1(dest) != entry.git_blob_sha1:
        raise InputError(entry.url, f"first download is not git blob {entry.git_blob_sha1}: "
                         "refusing it")


def fetch_file(
    entry: RemoteFile,
    data_root: str | Path,
    mirror_root: str | Path | None = None,
    registry_path: str | Path | None = None,
    retries: int = 3,
) -> Path:
    """Place ``entry`` under ``data_root`` verified; returns its path. Skips a verified copy."""
    registry = _Registry(Path(registry_path) if registry_path else default_registry_path())
    mirrors = resolve_mirrors(mirror_root)
    if entry.listing is not None:
        _fetch_listing(entry, Path(data_root), mirrors, registry, retries, {})
        return Path(data_root) / entry.path
    return _place(entry, Path(data_root), mirrors, registry, retries, {})


def _safe_member_name(archive: Path, member: tarfile.TarInfo) -> None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise InputError(archive, f"refusing unsafe member path {member.name!r}")
    if member.issym() or member.islnk() or member.isdev():
        raise InputError(archive, f"refusing link or device member {member.name!r}")


def safe_extract(archive: str | Path, dest_dir: str | Path) -> Path:
    """Unpack a tar archive into ``dest_dir`` atomically, refusing unsafe member paths."""
    archive, dest_dir = Path(archive), Path(dest_dir)
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                _safe_member_name(archive, member)
            dest_dir.parent.mkdir(parents=True, exist_ok=True)
            tmp = temp_dir(f".{dest_dir.name}.", dest_dir.parent)
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


def _open_members(archive: Path):
    """(names, open(name) -> binary stream, check(name)) for a tar or zip archive."""
    # a tar whose last member is a zip (a torch checkpoint) also passes is_zipfile: tar first
    if not tarfile.is_tarfile(archive) and zipfile.is_zipfile(archive):
        zf = zipfile.ZipFile(archive)
        infos = {i.filename: i for i in zf.infolist() if not i.is_dir()}

        def check_zip(name: str) -> None:
            p = PurePosixPath(name)
            if p.is_absolute() or ".." in p.parts:
                raise InputError(archive, f"refusing unsafe member path {name!r}")
            if (infos[name].external_attr >> 16) & 0o170000 == 0o120000:
                raise InputError(archive, f"refusing link member {name!r}")

        return zf, list(infos), (lambda n: zf.open(infos[n])), check_zip
    tar = tarfile.open(archive)  # noqa: SIM115 - closed by the caller's with block
    members = {m.name: m for m in tar.getmembers()}

    def check_tar(name: str) -> None:
        _safe_member_name(archive, members[name])
        if not members[name].isfile():
            raise InputError(archive, f"member {name!r} is not a regular file")

    return tar, list(members), (lambda n: tar.extractfile(members[n])), check_tar


def _find_member(archive: Path, names: Sequence[str], suffix: str) -> str:
    suffix = suffix.strip("/")
    hits = [n for n in names if n.strip("/") == suffix or n.endswith("/" + suffix)]
    if len(hits) != 1:
        what = "no member" if not hits else f"{len(hits)} members"
        raise InputError(archive, f"expected exactly one member ending in {suffix!r}, found "
                         f"{what}" + (f": {hits[:3]}" if hits else ""))
    return hits[0]


def extract_members(archive: str | Path, wanted: Sequence[Member], data_root: str | Path,
                    ) -> dict[str, str]:
    """Extract only ``wanted`` from a (verified) tar or zip archive; returns {member: sha256}.

    Each member is found by its path suffix, must be a regular file with a safe path, and lands
    atomically at ``data_root/<member.path>``; a member whose recorded sha256 differs from the
    extracted bytes is an error and leaves nothing behind.
    """
    archive, data_root = Path(archive), Path(data_root)
    hashes: dict[str, str] = {}
    try:
        handle, names, open_member, check = _open_members(archive)
        with handle:
            for want in wanted:
                name = _find_member(archive, names, want.member)
                check(name)
                src = open_member(name)
                assert src is not None
                dest = data_root / want.path
                digest = hashlib.sha256()
                with atomic_path(dest) as tmp:
                    with tmp.open("wb") as out:
                        while block := src.read(1 << 20):
                            digest.update(block)
                            out.write(block)
                    actual = digest.hexdigest()
                    if want.sha256 is not None and actual != want.sha256:
                        raise InputError(f"{archive}:{name}",
                                         f"checksum mismatch: expected sha256 {want.sha256}, "
                                         f"got {actual}")
                hashes[want.member] = actual
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
        raise InputError(archive, f"not a readable archive ({exc})") from None
    return hashes


def _member_ok(data_root: Path, member: Member) -> bool:
    dest = data_root / member.path
    return member.sha256 is not None and dest.is_file() and sha256_of(dest) == member.sha256


def _select(entries: list[RemoteFile], groups: Sequence[str],
            models: Sequence[str] | None) -> list[RemoteFile]:
    chosen = [e for e in entries if e.group in groups and e.group != "weights"]
    if "weights" in groups:
        weights = [e for e in entries if e.group == "weights"]
        if models is not None:
            prefixes = tuple(f"{WEIGHTS_PREFIX}{m}/" for m in models)
            keep = []
            for e in weights:
                if e.members:
                    members = tuple(m for m in e.members if m.path.startswith(prefixes))
                    if members:
                        keep.append(RemoteFile(**{**e.__dict__, "members": members}))
                elif e.path.startswith(prefixes):
                    keep.append(e)
            weights = keep
        chosen += weights
    return chosen


def fetch(
    groups: tuple[str, ...] | list[str],
    data_root: str | Path,
    mirror_root: str | Path | None = None,
    registry_path: str | Path | None = None,
    models: Sequence[str] | None = None,
    retries: int = 3,
) -> list[Path]:
    """Fetch (and unpack) every registry entry of ``groups``; returns the placed paths.

    ``models`` restricts the ``weights`` group to the files of those models (None: all).
    """
    from tqdm import tqdm

    bad = sorted(set(groups) - set(GROUPS))
    if bad:
        raise InputError("fetch groups", f"unknown group(s) {bad}; expected some of {list(GROUPS)}")
    data_root = Path(data_root)
    registry = _Registry(Path(registry_path) if registry_path else default_registry_path())
    mirrors = resolve_mirrors(mirror_root)
    chosen = _select(load_registry(registry.path), groups, models)
    out: list[Path] = []
    placed: dict[str, Path] = {}
    failed: list[tuple[RemoteFile, InputError]] = []
    dead_hosts: set[str] = set()
    for entry in tqdm(chosen, desc="fetch", unit="file", disable=len(chosen) < 2):
        entry = _refresh(entry, registry.path)
        host = urlparse(entry.url).netloc
        try:
            if host in dead_hosts and not _locally_available(entry, data_root, mirrors, placed):
                raise InputError(entry.url, f"skipped: an earlier download from {host} failed")
            out += _fetch_entry(entry, data_root, mirrors, registry, retries, placed)
        except InputError as exc:
            if "download failed" not in exc.problem and "skipped" not in exc.problem:
                raise  # a checksum mismatch or a bad archive: stop at once
            dead_hosts.add(host)
            failed.append((entry, exc))
    if failed:
        lines = "\n".join(f"  {e.url}  ({e.path})" for e, _ in failed)
        placed_note = ("everything else is in place" if len(failed) < len(chosen)
                       else "nothing could be placed")
        raise InputError(
            "brainalign fetch",
            f"{len(failed)} of {len(chosen)} inputs could not be downloaded (no network, and no "
            f"copy under ${MIRROR_ENV}); {placed_note}. Unreachable:\n{lines}",
        )
    return out


def _refresh(entry: RemoteFile, registry: Path) -> RemoteFile:
    """The entry as the registry holds it now (an earlier entry may have taught it a hash)."""
    for current in load_registry(registry):
        if current.group == entry.group and current.path == entry.path:
            if entry.members:  # keep the caller's selection of members
                wanted = {m.member for m in entry.members}
                members = tuple(m for m in current.members if m.member in wanted)
                return RemoteFile(**{**current.__dict__, "members": members})
            return current
    return entry


def _locally_available(entry: RemoteFile, data_root: Path, mirrors: Sequence[Path],
                       placed: dict[str, Path]) -> bool:
    """Whether the entry can be placed without the network (on disk, a twin, or a mirror)."""
    if entry.members and all(_member_ok(data_root, m) for m in entry.members):
        return True
    if entry.listing is not None:
        lst = entry.listing
        if not lst.files:
            urls = [lst.api_url(), lst.api_url(pinned=False)]
            return any(mirror_path(u, r).is_file() for u in urls for r in mirrors)
        return all((data_root / f.path).is_file() or any(
            mirror_path(u, r).is_file() for u in _candidates(_listed_entry(entry, f))
            for r in mirrors) for f in lst.files)
    if (data_root / entry.path).is_file() or entry.source in placed:
        return True
    return any(mirror_path(u, r).is_file() for u in _candidates(entry) for r in mirrors)


def _fetch_entry(entry: RemoteFile, data_root: Path, mirrors: Sequence[Path],
                 registry: _Registry, retries: int, placed: dict[str, Path]) -> list[Path]:
    if entry.listing is not None:
        return _fetch_listing(entry, data_root, mirrors, registry, retries, placed)
    if entry.members:
        todo = {m.member for m in entry.members if not _member_ok(data_root, m)}
        if todo:
            archive = _place(entry, data_root, mirrors, registry, retries, placed)
            fresh = _refresh(entry, registry.path)
            wanted = [m for m in fresh.members if m.member in todo]
            for member in wanted:
                log.info("extracting %s from %s", member.member, archive.name)
            hashes = extract_members(archive, wanted, data_root)
            for member in wanted:
                if member.sha256 is None:
                    registry.record(fresh, sha256=hashes[member.member], member=member)
        return [data_root / m.path for m in entry.members]
    path = _place(entry, data_root, mirrors, registry, retries, placed)
    if entry.unpack_to is not None:
        target = data_root / entry.unpack_to
        if not target.is_dir():
            safe_extract(path, target)
        path = target
    return [path]


# --------------------------------------------------------------------------- directory listings
def listed_step(name: str) -> int:
    """The step in a listed file's name: the integer after the last ``=`` of its stem."""
    stem = PurePosixPath(name).stem
    tail = stem.rpartition("=")[2] if "=" in stem else ""
    if not tail.isdigit():
        raise InputError(name, "expected a file name ending in '=<step>' (e.g. "
                         "'epoch=0-step=1000.ckpt') for the listing's {step}")
    return int(tail)


def _listed_entry(entry: RemoteFile, listed: ListedFile) -> RemoteFile:
    """One listed file as a Hugging Face file entry (pinned to the listing's commit)."""
    lst = entry.listing
    assert lst is not None
    return RemoteFile(entry.group, listed.path, sha256=listed.sha256, size=listed.size,
                      hf=HubFile(lst.repo, listed.file, lst.revision, lst.commit),
                      note=entry.note)


def _read_mirror_json(urls: Sequence[str], mirrors: Sequence[Path]) -> tuple[Any, str] | None:
    for url in urls:
        for root in mirrors:
            local = mirror_path(url, root)
            if local.is_file():
                try:
                    return json.loads(local.read_text()), str(local)
                except (OSError, ValueError) as exc:
                    raise InputError(local, f"not a readable Hub API answer ({exc})") from None
    return None


def _get_json_pages(url: str, retries: int, timeout: float = 30.0) -> list[Any]:
    """GET a Hub API list, following ``Link: <...>; rel="next"`` pages, with retries."""
    import requests

    items: list[Any] = []
    next_url: str | None = url
    while next_url:
        last: Exception | None = None
        for attempt in range(retries + 1):
            try:
                response = requests.get(next_url, timeout=timeout)
                response.raise_for_status()
                page = response.json()
                break
            except (requests.exceptions.RequestException, ValueError) as exc:
                last = exc
                if attempt < retries:
                    time.sleep(min(2.0**attempt, 10.0))
        else:
            assert last is not None
            raise _no_network(next_url, last)
        if not isinstance(page, list):
            raise InputError(next_url, f"expected a JSON list of files, got {type(page).__name__}")
        items += page
        next_url = response.links.get("next", {}).get("url")
    return items


def _lfs_sha256(item: dict[str, Any]) -> str | None:
    lfs = item.get("lfs")
    oid = str(lfs.get("oid") or lfs.get("sha256") or "") if isinstance(lfs, dict) else ""
    oid = oid.removeprefix("sha256:").lower()
    return oid if re.fullmatch(r"[0-9a-f]{64}", oid) else None


def _listed_files(entry: RemoteFile, data: Any, origin: str) -> tuple[ListedFile, ...]:
    """The files of a Hub tree answer that the listing keeps, named and checked."""
    lst = entry.listing
    assert lst is not None
    if not isinstance(data, list):
        raise InputError(origin, "expected the Hub's JSON list of the folder's entries")
    out: list[ListedFile] = []
    for item in data:
        if not isinstance(item, dict) or item.get("type") != "file":
            continue
        repo_path = str(item.get("path", ""))
        name = PurePosixPath(repo_path).name
        if not fnmatch.fnmatchcase(name, lst.pattern):
            continue
        step = listed_step(name) if "{step" in lst.rename else None
        pure = PurePosixPath(name)
        rel = lst.rename.format(step=step, name=name, stem=pure.stem, suffix=pure.suffix)
        dest = PurePosixPath(entry.path.rstrip("/")) / rel
        if PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
            raise InputError(origin, f"refusing the destination {rel!r} of {repo_path!r}")
        size = item.get("size")
        out.append(ListedFile(file=repo_path, path=str(dest), step=step,
                              size=int(size) if isinstance(size, int) else None,
                              sha256=_lfs_sha256(item)))
    what = f"files matching {lst.pattern!r} in {lst.repo}/{lst.folder}"
    if lst.expected_count is not None and len(out) != lst.expected_count:
        raise InputError(origin, f"expected {lst.expected_count} {what}, the listing has "
                         f"{len(out)}: refusing it")
    if not out:
        raise InputError(origin, f"no {what}")
    dests = [f.path for f in out]
    dup = sorted({d for d in dests if dests.count(d) > 1})
    if dup:
        raise InputError(origin, f"two listed files would both land at {dup[0]}")
    return tuple(sorted(out, key=lambda f: (f.step if f.step is not None else -1, f.file)))


def _resolve_listing(entry: RemoteFile, mirrors: Sequence[Path], registry: _Registry,
                     retries: int) -> HubListing:
    """Commit and file list of a listing not resolved yet (mirror first), recorded."""
    lst = entry.listing
    assert lst is not None
    commit = lst.commit
    if commit is None:
        found = _read_mirror_json([lst.revision_url()], mirrors)
        if found is not None:
            sha = str(found[0].get("sha", "")) if isinstance(found[0], dict) else ""
            if not _COMMIT_RE.match(sha):
                raise InputError(found[1], f"expected a 40-hex commit, got {sha!r}")
            commit = sha
    pinned = dataclasses.replace(lst, commit=commit)
    urls = [pinned.api_url()] if commit else []
    found = _read_mirror_json(urls + [lst.api_url(pinned=False)], mirrors)
    if found is None:
        if commit is None:
            commit = resolve_hub_commit(HubFile(lst.repo, "", lst.revision))
            pinned = dataclasses.replace(lst, commit=commit)
        url = pinned.api_url(hf_endpoint())
        found = (_get_json_pages(url, retries), url)
    elif commit is None:
        log.warning("%s: the mirror holds the listing of %s but not the commit it points at; "
                    "the files are fetched at the branch", entry.source, lst.revision)
    files = _listed_files(entry, found[0], found[1])
    registry.record_listing(entry, commit, files)
    return dataclasses.replace(lst, commit=commit, files=files)


def _fetch_listing(entry: RemoteFile, data_root: Path, mirrors: Sequence[Path],
                   registry: _Registry, retries: int, placed: dict[str, Path]) -> list[Path]:
    """Every file of a directory listing placed and verified (the listing resolved first)."""
    lst = entry.listing
    assert lst is not None
    if not lst.files:
        lst = _resolve_listing(entry, mirrors, registry, retries)
        entry = dataclasses.replace(entry, listing=lst)
    out = []
    for listed in lst.files:
        sub = _ListedRegistry(registry.path, registry.learned, entry=entry, listed=listed)
        out.append(_place(_listed_entry(entry, listed), data_root, mirrors, sub, retries, placed))
    return out
