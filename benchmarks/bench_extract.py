"""Benchmark: extract the demo model set over the 165 sounds on CPU (target <= 10 min, 2 cores).

Runs :func:`brainalign.models.extract.run_extract` for every model of the params.yaml
``extract`` section (default: :data:`DEMO_MODELS`) with torch limited to ``--threads`` threads
and writes ``benchmarks/results/extract.json`` and ``extract.md`` (per-model wall time incl.
model build and stimulus loading, total, machine load). Activations go to a temporary folder.

    python benchmarks/bench_extract.py [--threads 2] [--params params.yaml] [--models a b ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 600.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--mirror", type=Path, default=REPO.parent / "shared" / "mirror")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch
    import yaml

    from brainalign.atomic import write_json, write_text
    from brainalign.models.extract import parse_config, run_extract

    torch.set_num_threads(args.threads)
    section = {}
    if args.params.is_file():
        section = (yaml.safe_load(args.params.read_text()) or {}).get("extract") or {}
    section = {**section, "device": "cpu", "threads": args.threads}
    if args.models:
        section["models"] = args.models
    config = parse_config(section)
    nat = next((args.mirror / "raw.githubusercontent.com/snormanhaignere/natsound165-neuron2015")
               .iterdir())
    wav_dir, labels = nat / "stimuli" / "wav", nat / "stimuli" / "category_labels.csv"

    rows = []
    load_before = os.getloadavg()[0]
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in config.models:
            t0 = time.perf_counter()
            info = run_extract(name, wav_dir, labels, Path(tmp) / f"{name}.npz", section)
            wall = time.perf_counter() - t0
            rows.append({"model": name, "wall_s": round(wall, 2),
                         "extract_s": info["seconds"], "layers": len(info["layers"]),
                         "max_dim": max(info["layer_dims"].values())})
            print(f"{name:20s} {wall:7.1f} s", flush=True)
    total = time.perf_counter() - t_all
    result = {
        "benchmark": "extract demo model set, 165 x 2-s sounds, CPU",
        "threads": args.threads, "models": list(config.models),
        "options": {k: dict(v) for k, v in config.options.items()},
        "total_s": round(total, 1), "budget_s": BUDGET_S, "within_budget": total <= BUDGET_S,
        "per_model": rows, "loadavg_1min_before": round(load_before, 2),
        "loadavg_1min_after": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count(),
        "machine": platform.platform(), "python": sys.version.split()[0],
        "torch": torch.__version__,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "extract.json", result)
    lines = [
        "# Extraction benchmark (demo model set, 165 sounds, CPU)", "",
        f"Threads: {args.threads}; total {total:.1f} s (budget {BUDGET_S:.0f} s: "
        f"{'within' if total <= BUDGET_S else 'OVER'}); 1-min load average before/after: "
        f"{result['loadavg_1min_before']}/{result['loadavg_1min_after']} "
        f"on {os.cpu_count()} CPUs (other jobs share the machine).", "",
        "| model | wall s (build + load + extract) | extract s | layers | largest dim |",
        "|---|---|---|---|---|",
        *(f"| {r['model']} | {r['wall_s']} | {r['extract_s']} | {r['layers']} | {r['max_dim']} |"
          for r in rows),
        "",
    ]
    write_text(args.out / "extract.md", "\n".join(lines))
    print(f"total {total:.1f} s")
    return 0 if total <= BUDGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
