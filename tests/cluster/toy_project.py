"""The toy DVC project of the cluster tests, and small helpers to run commands on it.

The toy project has the pipeline's shape (a first stage, a ``foreach`` stage writing folders,
an aggregate) in stages of a second: its ``work@b`` can be told to fail, or to hold after
writing part of its output until a file ``release`` appears, so a test can kill, time out or
requeue it mid-stage.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent

DVC_YAML = """\
stages:
  prep:
    cmd: python3 toy.py prep
    deps:
      - toy.py
      - src.txt
    outs:
      - out/prep.txt
  work:
    foreach: [a, b]
    do:
      cmd: python3 toy.py work ${item}
      deps:
        - toy.py
        - out/prep.txt
      params:
        - toy.${item}
      outs:
        - out/work/${item}
  total:
    cmd: python3 toy.py total
    deps:
      - toy.py
      - out/work
    outs:
      - out/total.txt
    metrics:
      - metrics.json:
          cache: false
"""

TOY_PY = '''\
"""Toy stages: prep, work ITEM (writes part1, maybe fails or holds, then part2), total."""
import json
import sys
import time
from pathlib import Path

import yaml

params = yaml.safe_load(Path("params.yaml").read_text())["toy"]
what = sys.argv[1]
if what == "prep":
    Path("out").mkdir(exist_ok=True)
    Path("out/prep.txt").write_text(Path("src.txt").read_text().upper())
elif what == "work":
    item = sys.argv[2]
    p = params[item]
    folder = Path("out/work") / item
    folder.mkdir(parents=True)  # an output left over from a killed run would fail here
    (folder / "part1.txt").write_text(f"{item} {p['value']}\\n")
    if p.get("fail"):
        print(f"toy: stage {item} fails on purpose", file=sys.stderr)
        sys.exit(3)
    while p.get("hold") and not Path("release").exists():
        time.sleep(0.2)
    (folder / "part2.txt").write_text(Path("out/prep.txt").read_text() * p["value"])
elif what == "total":
    parts = sorted(Path("out/work").rglob("*.txt"))
    text = "".join(f.read_text() for f in parts)
    Path("out/total.txt").write_text(text)
    Path("metrics.json").write_text(json.dumps({"chars": len(text), "files": len(parts)}))
'''

TOY_PARAMS = {
    "toy": {"a": {"value": 2}, "b": {"value": 3, "hold": True}},
    "cluster": {
        "poll_seconds": 0.5,
        "signal_delay_s": 10,
        "resources": {"default": {"cpus": 1, "mem": "200M", "time": 60}},
    },
}


def run(cmd: list[str], cwd: Path, env: dict, check: bool = True,
        timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command; with ``check`` it must succeed (its output is shown when it does not)."""
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check:
        assert done.returncode == 0, (f"{cmd} failed ({done.returncode}):\n"
                                      f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done


def wait_until(predicate, timeout: float = 120, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def make_toy(root: Path, params: dict | None = None) -> Path:
    """Write the toy DVC project (no git) at ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "toy.py").write_text(TOY_PY)
    (root / "src.txt").write_text("hello cluster\n")
    (root / "params.yaml").write_text(yaml.safe_dump(params or TOY_PARAMS, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    run([str(BIN / "dvc"), "init", "--no-scm", "-q"], root, env)
    return root


def outputs(root: Path) -> dict[str, bytes]:
    """Every file the toy stages wrote, by relative path."""
    files = sorted(p for p in (root / "out").rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files} | {
        "metrics.json": (root / "metrics.json").read_bytes()}
