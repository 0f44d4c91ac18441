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
    assert {e.group for e in entries if e.sha256 is None} <= {"lab", "hear", "weights", "reference"}
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
