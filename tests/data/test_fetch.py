"""Fetcher: mirror hits, checksum mismatches, trust-on-first-use, no network, unsafe archives."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import os
import socket
import tarfile
import threading
from pathlib import Path

import pytest

from brainalign.data.fetch import (
    RemoteFile,
    fetch,
    fetch_file,
    load_registry,
    mirror_path,
    safe_extract,
)
from brainalign.errors import InputError


def test_registry_pins_every_github_input(mirror_root):
    """Every GitHub file has the sha256 listed in the mirror's SHA256SUMS; the rest are TOFU."""
    sums = {}
    for line in (mirror_root / "SHA256SUMS").read_text().splitlines():
        digest, rel = line.split(None, 1)
        sums["https://" + rel] = digest
    entries = load_registry()
    github = [e for e in entries if e.group == "github"]
    assert len(github) == 168
    assert {e.url: e.sha256 for e in github} == sums
    assert {e.group for e in entries if e.sha256 is None} <= {"lab", "hear", "weights", "reference",
                                                                 "pretraining"}
    assert len([e for e in entries if e.group == "hear"]) == 6


def test_fetch_github_from_mirror(mirror_root, tmp_path):
    placed = fetch(["github"], tmp_path / "data", mirror_root)
    assert len(placed) == 168
    assert len(list((tmp_path / "data" / "stimuli" / "wav").glob("*.wav"))) == 165
    # A second fetch verifies and skips; a damaged local copy is replaced.
    wav = tmp_path / "data" / "stimuli" / "wav" / "stim5_alarm_clock.wav"
    wav.write_bytes(wav.read_bytes()[:1000])
    fetch(["github"], tmp_path / "data", mirror_root)
    assert wav.stat().st_size == (mirror_root / mirror_rel(wav.name)).stat().st_size


def mirror_rel(name: str) -> str:
    return (
        "raw.githubusercontent.com/snormanhaignere/natsound165-neuron2015/"
        f"b41b99ff620d7997dbf278fc770f58566707726a/stimuli/wav/{name}"
    )


def _tmp_mirror(tmp_path: Path, url: str, data: bytes) -> Path:
    root = tmp_path / "mirror"
    target = mirror_path(url, root)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return root


def test_checksum_mismatch_in_mirror_is_an_error(tmp_path):
    url = "https://example.org/a/file.bin"
    entry = RemoteFile("github", "x/file.bin", url, hashlib.sha256(b"good").hexdigest())
    root = _tmp_mirror(tmp_path, url, b"bad!")
    with pytest.raises(InputError, match="checksum mismatch"):
        fetch_file(entry, tmp_path / "data", root)
    assert not (tmp_path / "data" / "x" / "file.bin").exists()


def test_no_network_and_no_mirror_gives_clear_error(tmp_path):
    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    entry = RemoteFile("github", "x/f.bin", f"http://127.0.0.1:{port}/f.bin", "0" * 64)
    with pytest.raises(InputError, match="download failed") as err:
        fetch_file(entry, tmp_path / "data", tmp_path, retries=0)
    assert "BRAINALIGN_MIRROR" in str(err.value)
    assert not any((tmp_path / "data").rglob("*.bin"))


@pytest.fixture
def http_server(tmp_path):
    """Serve tmp_path/www on loopback (a stand-in for the lab's server)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_trust_on_first_use_records_then_verifies(tmp_path, http_server):
    www, base = http_server
    (www / "data.tar").write_bytes(_tar_bytes({"data/neural/NH2015/x.txt": b"hello"}))
    registry = tmp_path / "registry.json"
    registry.write_text(
        json.dumps(
            {
                "github": [],
                "hear": [],
                "lab": [
                    {
                        "path": "downloads/data.tar",
                        "url": f"{base}/data.tar",
                        "sha256": None,
                        "unpack_to": "lab",
                    }
                ],
            }
        )
    )
    placed = fetch(["lab"], tmp_path / "data", None, registry)
    assert (placed[0] / "data" / "neural" / "NH2015" / "x.txt").read_bytes() == b"hello"
    recorded = json.loads(registry.read_text())["lab"][0]["sha256"]
    assert recorded == hashlib.sha256((www / "data.tar").read_bytes()).hexdigest()
    # Upstream changes: the next fetch (of a fresh data root) refuses it.
    (www / "data.tar").write_bytes(_tar_bytes({"data/evil.txt": b"changed"}))
    with pytest.raises(InputError, match="checksum mismatch"):
        fetch(["lab"], tmp_path / "data2", None, registry)
    assert not (tmp_path / "data2" / "lab").exists()


@pytest.mark.parametrize("name", ["../escape.txt", "/abs/path.txt", "a/../../escape.txt"])
def test_unpacking_refuses_traversal(tmp_path, name):
    archive = tmp_path / "evil.tar"
    archive.write_bytes(_tar_bytes({"ok.txt": b"1", name: b"2"}))
    with pytest.raises(InputError, match="unsafe member path"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "escape.txt").exists()


def test_unpacking_refuses_links(tmp_path):
    archive = tmp_path / "link.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("passwd")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(InputError, match="link or device"):
        safe_extract(archive, tmp_path / "out")


def test_truncated_archive_is_an_error(tmp_path):
    archive = tmp_path / "t.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(InputError, match="not a readable tar archive"):
        safe_extract(archive, tmp_path / "out")


def test_unknown_group(tmp_path):
    with pytest.raises(InputError, match="unknown group"):
        fetch(["zenodo"], tmp_path)


# --------------------------------------------------------------------------- the weights group
def _weights_registry(tmp_path: Path, entries: list[dict]) -> Path:
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"github": [], "lab": [], "hear": [], "weights": entries}))
    return registry


def test_hub_branch_is_resolved_to_a_commit_and_recorded(tmp_path, http_server, monkeypatch):
    www, base = http_server
    commit = "0123456789abcdef0123456789abcdef01234567"
    api = www / "api" / "models" / "org" / "repo" / "revision"
    api.mkdir(parents=True)
    (api / "main").write_text(json.dumps({"sha": commit}))
    blob = www / "org" / "repo" / "resolve" / commit / "model.pt"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"weights v1")
    monkeypatch.setenv("HF_ENDPOINT", base)
    registry = _weights_registry(tmp_path, [
        {"path": "weights/m1/model.pt", "sha256": None,
         "hf": {"repo": "org/repo", "file": "model.pt", "revision": "main", "commit": None}},
        {"path": "weights/m2/model.pt", "sha256": None,  # the same bytes in another folder
         "hf": {"repo": "org/repo", "file": "model.pt", "revision": "main", "commit": None}},
    ])
    fetch(["weights"], tmp_path / "data", None, registry, models=["m1", "m2"])
    raw = json.loads(registry.read_text())["weights"]
    digest = hashlib.sha256(b"weights v1").hexdigest()
    assert [(e["hf"]["commit"], e["sha256"]) for e in raw] == [(commit, digest)] * 2
    assert (tmp_path / "data/weights/m2/model.pt").read_bytes() == b"weights v1"
    # later fetches ask for the recorded commit, not the branch: a moved branch changes nothing
    (api / "main").write_text(json.dumps({"sha": "f" * 40}))
    fetch(["weights"], tmp_path / "data2", None, registry, models=["m1"])
    assert (tmp_path / "data2/weights/m1/model.pt").read_bytes() == b"weights v1"
    assert not (tmp_path / "data2/weights/m2").exists()  # only the requested model


def test_published_prefix_and_blob_id_are_checked_on_first_use(tmp_path):
    data = b"some checkpoint"
    url = "https://example.org/files/ckpt.pt"
    root = _tmp_mirror(tmp_path, url, data)
    good = hashlib.sha256(data).hexdigest()
    for extra, ok in (({"sha256_prefix": good[:8]}, True), ({"sha256_prefix": "00000000"}, False),
                      ({"git_blob_sha1": hashlib.sha1(b"blob 15\0" + data).hexdigest()}, True),
                      ({"git_blob_sha1": "0" * 40}, False), ({"size": 15}, True),
                      ({"size": 16}, False)):
        registry = _weights_registry(tmp_path, [
            {"path": "weights/m/ckpt.pt", "url": url, "sha256": None, **extra}])
        dest = tmp_path / "data" / "weights" / "m" / "ckpt.pt"
        if ok:
            fetch(["weights"], tmp_path / "data", root, registry)
            assert json.loads(registry.read_text())["weights"][0]["sha256"] == good
            dest.unlink()
        else:
            with pytest.raises(InputError, match="refusing it"):
                fetch(["weights"], tmp_path / "data", root, registry)
            assert not dest.exists()
            assert json.loads(registry.read_text())["weights"][0]["sha256"] is None


def test_archive_members_are_extracted_alone_and_pinned(tmp_path):
    url = "https://example.org/ckpts.tar"
    archive = _tar_bytes({"model_checkpoints/run/a/5_checkpoint.pt": b"A" * 10,
                          "model_checkpoints/run/b/5_checkpoint.pt": b"B" * 10,
                          "model_checkpoints/huge/other.bin": b"x" * 1000})
    root = _tmp_mirror(tmp_path, url, archive)
    registry = _weights_registry(tmp_path, [{
        "path": "downloads/ckpts.tar", "url": url, "sha256": None,
        "members": [{"member": "run/a/5_checkpoint.pt", "path": "weights/ma/5_checkpoint.pt",
                     "sha256": None},
                    {"member": "run/b/5_checkpoint.pt", "path": "weights/mb/5_checkpoint.pt",
                     "sha256": None}]}])
    data = tmp_path / "data"
    placed = fetch(["weights"], data, root, registry, models=["ma"])
    assert placed == [data / "weights/ma/5_checkpoint.pt"]
    assert (data / "weights/ma/5_checkpoint.pt").read_bytes() == b"A" * 10
    assert not (data / "weights/mb").exists() and not (data / "model_checkpoints").exists()
    raw = json.loads(registry.read_text())["weights"][0]
    assert raw["sha256"] == hashlib.sha256(archive).hexdigest()
    assert raw["members"][0]["sha256"] == hashlib.sha256(b"A" * 10).hexdigest()
    assert raw["members"][1]["sha256"] is None
    # a verified member needs no archive: remove it everywhere and fetch again
    (data / "downloads/ckpts.tar").unlink()
    (root / "example.org/ckpts.tar").unlink()
    fetch(["weights"], data, root, registry, models=["ma"])
    # a member replaced on disk is re-extracted from the (re-fetched, verified) archive
    _tmp_mirror(tmp_path, url, archive)
    (data / "weights/ma/5_checkpoint.pt").write_bytes(b"tampered")
    fetch(["weights"], data, root, registry, models=["ma"])
    assert (data / "weights/ma/5_checkpoint.pt").read_bytes() == b"A" * 10


def test_archive_member_must_be_unique_and_regular(tmp_path):
    archive = tmp_path / "a.tar"
    archive.write_bytes(_tar_bytes({"x/5_checkpoint.pt": b"1", "y/5_checkpoint.pt": b"2"}))
    from brainalign.data.fetch import Member, extract_members

    with pytest.raises(InputError, match="exactly one member"):
        extract_members(archive, [Member("5_checkpoint.pt", "w/m/c.pt")], tmp_path / "d")
    with tarfile.open(tmp_path / "l.tar", "w") as tar:
        info = tarfile.TarInfo("run/5_checkpoint.pt")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(InputError, match="link or device"):
        extract_members(tmp_path / "l.tar", [Member("run/5_checkpoint.pt", "w/m/c.pt")],
                        tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_alternate_source_is_tried_when_the_first_fails(tmp_path, http_server):
    www, base = http_server
    (www / "mirror2.bin").write_bytes(b"same bytes")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/gone.bin"
    registry = _weights_registry(tmp_path, [
        {"path": "weights/m/w.bin", "url": dead, "alternates": [f"{base}/mirror2.bin"],
         "sha256": None}])
    from brainalign.data import fetch as fetch_module

    fetch_module.fetch(["weights"], tmp_path / "data", None, registry, retries=0)
    assert (tmp_path / "data/weights/m/w.bin").read_bytes() == b"same bytes"


def test_several_mirror_roots(tmp_path, monkeypatch):
    url = "https://example.org/a/w.bin"
    first, second = tmp_path / "m1", tmp_path / "m2"
    first.mkdir()
    _tmp_mirror(tmp_path / "x", url, b"payload")
    monkeypatch.setenv("BRAINALIGN_MIRROR", os.pathsep.join([str(first), str(tmp_path / "x" /
                                                                             "mirror")]))
    registry = _weights_registry(tmp_path, [{"path": "weights/m/w.bin", "url": url,
                                             "sha256": None}])
    fetch(["weights"], tmp_path / "data", None, registry)
    assert (tmp_path / "data/weights/m/w.bin").read_bytes() == b"payload"
    assert not second.exists()


def test_unreachable_sources_are_listed_in_one_error(tmp_path):
    """Offline, a fetch places what it can and names every URL it could not reach, once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    url_ok = "https://example.org/present.bin"
    root = _tmp_mirror(tmp_path, url_ok, b"here")
    registry = _weights_registry(tmp_path, [
        {"path": "weights/a/one.bin", "url": f"{dead}/one.bin", "sha256": None},
        {"path": "weights/b/two.bin", "url": f"{dead}/two.bin", "sha256": None},
        {"path": "weights/c/present.bin", "url": url_ok, "sha256": None},
    ])
    with pytest.raises(InputError, match="2 of 3 inputs could not be downloaded") as err:
        fetch(["weights"], tmp_path / "data", root, registry, retries=0)
    assert f"{dead}/one.bin" in str(err.value) and f"{dead}/two.bin" in str(err.value)
    assert (tmp_path / "data/weights/c/present.bin").read_bytes() == b"here"
    assert not (tmp_path / "data/weights/a").exists()


# --------------------------------------------------------------------------- Hub directory listing
LISTED_REPO = "org/pretrained"
LISTED_FOLDER = "full_exps/base/pretrain_checkpoints/finegrained"
LISTED_COMMIT = "89abcdef0123456789abcdef0123456789abcdef"


def _listing_registry(tmp_path: Path, expected: int = 3, **extra) -> Path:
    registry = tmp_path / "registry.json"
    entry = {"path": "weights/m-pretraining", "sha256": None, "note": "test listing",
             "listing": {"repo": LISTED_REPO, "folder": LISTED_FOLDER, "pattern": "*.ckpt",
                         "revision": "main", "commit": None, "expected_count": expected,
                         "rename": "step-{step:06d}.ckpt", "files": None, **extra}}
    registry.write_text(json.dumps({"github": [], "pretraining": [entry]}))
    return registry


def _listed_files() -> dict[str, bytes]:
    return {f"epoch={s // 2000}-step={s}.ckpt": f"checkpoint {s}".encode() * (1 + s // 1000)
            for s in (0, 1000, 12000)}


def _tree_json(files: dict[str, bytes], lfs: bool = True) -> list[dict]:
    out: list[dict] = [{"type": "directory", "oid": "0" * 40, "size": 0,
                        "path": f"{LISTED_FOLDER}/old"},
                       {"type": "file", "oid": "1" * 40, "size": 5,
                        "path": f"{LISTED_FOLDER}/README.md"}]
    for name, data in files.items():
        item = {"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data),
                "path": f"{LISTED_FOLDER}/{name}"}
        if lfs:
            item["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                           "pointerSize": 134}
        out.append(item)
    return out


def _serve_listing(root: Path, files: dict[str, bytes], *, lfs: bool = True,
                   commit_path: bool = True) -> None:
    """Revision answer, tree listing and files at the Hub's paths under ``root``."""
    api = root / "api" / "models" / LISTED_REPO
    (api / "revision").mkdir(parents=True, exist_ok=True)
    (api / "revision" / "main").write_text(json.dumps({"sha": LISTED_COMMIT}))
    rev = LISTED_COMMIT if commit_path else "main"
    tree = api / "tree" / rev / LISTED_FOLDER
    tree.parent.mkdir(parents=True, exist_ok=True)
    tree.write_text(json.dumps(_tree_json(files, lfs)))
    for name, data in files.items():
        blob = root / LISTED_REPO / "resolve" / rev / LISTED_FOLDER / name
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)


def test_hub_listing_is_resolved_pinned_and_verified(tmp_path, http_server, monkeypatch):
    """First fetch: commit resolved, folder listed (pattern, count), files placed as
    step-<N>.ckpt with the LFS oid as their sha256; later fetches use the recorded list."""
    www, base = http_server
    files = _listed_files()
    _serve_listing(www, files)
    monkeypatch.setenv("HF_ENDPOINT", base)
    registry = _listing_registry(tmp_path)
    data = tmp_path / "data"
    placed = fetch(["pretraining"], data, None, registry)
    names = ["step-000000.ckpt", "step-001000.ckpt", "step-012000.ckpt"]
    assert [p.name for p in placed] == names
    assert (data / "weights/m-pretraining/step-012000.ckpt").read_bytes() == files[
        "epoch=6-step=12000.ckpt"]
    listing = json.loads(registry.read_text())["pretraining"][0]["listing"]
    assert listing["commit"] == LISTED_COMMIT
    assert [(f["step"], f["path"], f["sha256"], f["size"]) for f in listing["files"]] == [
        (s, f"weights/m-pretraining/{n}", hashlib.sha256(d).hexdigest(), len(d))
        for s, n, d in zip((0, 1000, 12000), names, files.values(), strict=True)]
    assert listing["files"][0]["file"] == f"{LISTED_FOLDER}/epoch=0-step=0.ckpt"
    entry = next(e for e in load_registry(registry) if e.listing is not None)
    assert entry.destinations() == [f"weights/m-pretraining/{n}" for n in names]
    # the listing is not asked again; a damaged copy is replaced from the pinned commit
    (www / "api").rename(www / "api-gone")
    (data / "weights/m-pretraining/step-001000.ckpt").write_bytes(b"damaged")
    fetch(["pretraining"], data, None, registry)
    assert (data / "weights/m-pretraining/step-001000.ckpt").read_bytes() == files[
        "epoch=0-step=1000.ckpt"]
    # the Hub now serves other bytes: the pinned sha256 refuses them
    blob = www / LISTED_REPO / "resolve" / LISTED_COMMIT / LISTED_FOLDER / "epoch=0-step=0.ckpt"
    blob.write_bytes(b"changed upstream")
    with pytest.raises(InputError, match="checksum mismatch"):
        fetch(["pretraining"], tmp_path / "data2", None, registry, retries=0)
    assert not (tmp_path / "data2/weights/m-pretraining/step-000000.ckpt").exists()


def test_hub_listing_from_a_mirror_offline(tmp_path, monkeypatch):
    """Mirror first: the revision answer and the listing at the API URLs' paths, the files at
    their resolve URLs; no network needed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{s.getsockname()[1]}")
    files = _listed_files()
    mirror = tmp_path / "mirror"
    _serve_listing(mirror / "huggingface.co", files)
    registry = _listing_registry(tmp_path)
    placed = fetch(["pretraining"], tmp_path / "data", mirror, registry, retries=0)
    assert len(placed) == 3 and all(p.is_file() for p in placed)
    listing = json.loads(registry.read_text())["pretraining"][0]["listing"]
    assert listing["commit"] == LISTED_COMMIT and len(listing["files"]) == 3
    # a mirror holding only the branch listing (no revision answer): fetched at the branch,
    # commit left unrecorded
    branch = tmp_path / "branch"
    _serve_listing(branch / "huggingface.co", files, commit_path=False)
    (branch / "huggingface.co/api/models" / LISTED_REPO / "revision/main").unlink()
    (tmp_path / "b").mkdir()
    registry = _listing_registry(tmp_path / "b")
    fetch(["pretraining"], tmp_path / "data3", branch, registry, retries=0)
    listing = json.loads(registry.read_text())["pretraining"][0]["listing"]
    assert listing["commit"] is None and len(listing["files"]) == 3
    assert len(list((tmp_path / "data3/weights/m-pretraining").glob("step-*.ckpt"))) == 3


def test_hub_listing_count_names_and_first_use(tmp_path, monkeypatch):
    """The expected count is enforced, names must carry a step, files without an LFS oid are
    pinned on first use."""
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    files = _listed_files()
    mirror = tmp_path / "mirror"
    _serve_listing(mirror / "huggingface.co", files)
    with pytest.raises(InputError, match="expected 100 files matching '\\*.ckpt'.*has 3"):
        fetch(["pretraining"], tmp_path / "d1", mirror, _listing_registry(tmp_path, 100))
    assert not (tmp_path / "d1").exists() or not any((tmp_path / "d1").rglob("*.ckpt"))
    bad = tmp_path / "bad"
    _serve_listing(bad / "huggingface.co", {"last.ckpt": b"x", **files})
    with pytest.raises(InputError, match="ending in '=<step>'"):
        fetch(["pretraining"], tmp_path / "d2", bad, _listing_registry(tmp_path, 4))
    plain = tmp_path / "plain"
    _serve_listing(plain / "huggingface.co", files, lfs=False)
    registry = _listing_registry(tmp_path)
    fetch(["pretraining"], tmp_path / "d3", plain, registry)
    recorded = json.loads(registry.read_text())["pretraining"][0]["listing"]["files"]
    assert [f["sha256"] for f in recorded] == [hashlib.sha256(d).hexdigest()
                                               for d in files.values()]


def test_hub_listing_follows_pages(tmp_path, monkeypatch):
    """The Hub pages long listings (``Link: <...>; rel="next"``): every page is read."""
    files = _listed_files()
    entries = _tree_json(files)
    blobs = {f"/{LISTED_REPO}/resolve/{LISTED_COMMIT}/{LISTED_FOLDER}/{n}": d
             for n, d in files.items()}
    tree = f"/api/models/{LISTED_REPO}/tree/{LISTED_COMMIT}/{LISTED_FOLDER}"

    class Pages(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            path, _, query = self.path.partition("?")
            headers, body = {}, b""
            if path == f"/api/models/{LISTED_REPO}/revision/main":
                body = json.dumps({"sha": LISTED_COMMIT}).encode()
            elif path == tree:
                page = entries[:3] if query != "cursor=2" else entries[3:]
                if query != "cursor=2":
                    host = self.headers["Host"]
                    headers["Link"] = f'<http://{host}{tree}?cursor=2>; rel="next"'
                body = json.dumps(page).encode()
            elif path in blobs:
                body = blobs[path]
            else:
                self.send_error(404)
                return
            self.send_response(200)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        registry = _listing_registry(tmp_path)
        placed = fetch(["pretraining"], tmp_path / "data", None, registry)
    finally:
        server.shutdown()
        server.server_close()
    assert [p.name for p in placed] == ["step-000000.ckpt", "step-001000.ckpt",
                                        "step-012000.ckpt"]
