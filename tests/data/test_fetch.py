"""Fetcher: mirror hits, checksum mismatches, trust-on-first-use, no network, unsafe archives."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
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
    assert {e.group for e in entries if e.sha256 is None} <= {"lab", "hear"}
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
