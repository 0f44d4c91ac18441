"""Benchmark: the 16-configuration probe grid, batched vs sequential, on HEAR-sized synthetic tasks.

Two synthetic tasks with the layout of a 13-layer x 768 model's embeddings: a multilabel task
with 200 classes (FSD50K's size) and a 10-class multiclass one (GTZAN's classes). The paper's
grid and probe settings (batch 1024, dropout 0.1, both depths, four learning rates, two inits);
``--epochs`` epochs per fit with early stopping out of reach, so every mode does exactly the
same work and the ratio is per epoch.

Each mode runs in its own subprocess (peak memory is its own), on the same data (seeded):

- ``sequential``: ``downstream.batched: false``, one ``fit_probe`` per configuration, torch 1
  thread, ``workers: 1`` (today's default) and ``workers: 2`` (forked processes);
- ``batched``: ``batched: true`` (exact mode, bit-identical), ``workers: 1`` and ``2`` threads;
- ``batched-fast``: the matrix-product layer mix and torch monitors (the CUDA default);
- on CUDA (``--device cuda``, or ``auto`` when a GPU is present): sequential and batched.

Reported: wall and CPU seconds, peak RSS (CUDA: peak device memory), the ratio against the
sequential 1-worker run, and whether the results are identical (every configuration's scores,
curves and epochs; the selection). The full size is 40,000 training clips (``--train 40000``);
the default is a documented reduced size (8,192 training clips, 1,024 validation and test
clips, 2 epochs) that fits the time box of the 2 shared build cores; the per-epoch cost is
linear in the clips, so ``extrapolated_40000_clips_per_epoch_s`` scales each run's wall time
per clip-epoch to 40,000 clips (an upper bound: it includes the once-per-fit model building
and final scoring; ``train_epochs_s``, for batched-1, is the training and validation alone).

    python benchmarks/bench_probe.py [--train 8192] [--epochs 2] [--device auto|cpu|cuda]
        [--modes sequential-1 batched-2 ...] [--tasks multilabel multiclass]

Writes ``benchmarks/results/probe.{json,md}`` (``probe_cuda.*`` for a CUDA run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS, DIM = 13, 768
TASKS = {"multilabel": ("multilabel", 200, "mAP"), "multiclass": ("multiclass", 10, "top1_acc")}
CPU_MODES = ["sequential-1", "sequential-2", "batched-1", "batched-2", "batched-fast-2"]
CUDA_MODES = ["cuda-sequential", "cuda-batched"]


def make_inputs(kind: str, n_train: int, n_valid: int, seed: int = 0):  # type: ignore[no-untyped-def]
    """Synthetic embeddings with a learnable signal: class centres per layer plus noise."""
    import numpy as np

    from brainalign.downstream.probe import SplitInputs

    prediction, n_labels, _ = TASKS[kind]
    rng = np.random.default_rng(seed)
    scale = np.linspace(0.05, 0.3, LAYERS, dtype=np.float32)[None, :, None]
    centres = rng.standard_normal((n_labels, LAYERS, DIM), dtype=np.float32) * scale

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        if prediction == "multilabel":
            y = (rng.random((n, n_labels)) < 2.0 / n_labels).astype(np.float32)
            signal = (y @ centres.reshape(n_labels, -1)).reshape(n, LAYERS, DIM)
        else:
            idx = rng.integers(0, n_labels, n)
            y = np.eye(n_labels, dtype=np.float32)[idx]
            signal = centres[idx]
        x = rng.standard_normal((n, LAYERS, DIM), dtype=np.float32)
        x += signal
        return x, y

    return SplitInputs(*draw(n_train), *draw(n_valid), *draw(n_valid), None)


def worker(mode: str, kind: str, n_train: int, n_valid: int, epochs: int) -> dict:
    """One mode on one task in this process: times, peak memory, every fit's record."""
    import torch

    from brainalign.downstream import batched as batched_mod
    from brainalign.downstream import probe
    from brainalign.downstream.config import DownstreamConfig
    from brainalign.downstream.metrics import get_metric

    prediction, _, metric = TASKS[kind]
    inputs = make_inputs(kind, n_train, n_valid)
    device = torch.device("cuda" if mode.startswith("cuda") else "cpu")
    workers = int(mode.rsplit("-", 1)[1]) if mode[-1].isdigit() else 1
    cfg = DownstreamConfig(max_epochs=epochs, patience=epochs + 1, workers=workers,
                           device=device.type, metrics_backend="builtin")
    metrics = {metric: get_metric(metric, "builtin")}
    grid = cfg.grid()
    # time spent in training epochs (excluding model building and final scoring)
    train_s = [0.0]

    def timed(fn):  # type: ignore[no-untyped-def]
        def inner(*a, **k):  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            out = fn(*a, **k)
            train_s[0] += time.perf_counter() - t
            return out
        return inner

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0, c0 = time.perf_counter(), time.process_time()
    if "sequential" in mode:
        jobs = [probe._Job(0, prediction, (metric,), "builtin", c, cfg, device.type) for c in grid]
        probe._SHARED_INPUTS[0] = inputs
        bar = type("Bar", (), {"update": lambda self, n: None})()
        results = probe._run_jobs(jobs, workers if device.type == "cpu" else 1, bar)
        train_s[0] = float("nan")  # inside forked workers; the total is reported
    else:
        mode_name = "fast" if ("fast" in mode or device.type == "cuda") else "exact"
        batched_mod._Stack.run_epoch = timed(batched_mod._Stack.run_epoch)  # type: ignore[method-assign]
        with probe.deterministic_torch(1, device):
            results = batched_mod.fit_members(
                {0: inputs}, [batched_mod.Member(c, 0, 0) for c in grid], prediction, metrics,
                metric, cfg, device, mode=mode_name)
        if workers > 1:
            train_s[0] = float("nan")  # summed over threads: not a wall time
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    row = {
        "mode": mode, "task": kind, "device": device.type, "workers": workers,
        "train_clips": n_train, "valid_clips": n_valid, "epochs": epochs,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu + child.ru_utime + child.ru_stime, 2),
        "train_epochs_s": None if train_s[0] != train_s[0] else round(train_s[0], 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3),
        "peak_rss_children_gb": round(child.ru_maxrss / 1e6, 3),
        "fits": [{"config": r.config.as_dict(), "valid": r.valid, "test": r.test,
                  "curve": r.valid_curve, "best_epoch": r.best_epoch,
                  "layer_weights": r.layer_weights} for r in results],
        "chosen": probe.select_best(results, metric),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        row["cuda_peak_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 3)
        row["gpu"] = torch.cuda.get_device_name()
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=8192, help="training clips (full: 40000)")
    ap.add_argument("--valid", type=int, default=None,
                    help="validation and test clips (default: train / 8, FSD50K's ratio)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--modes", nargs="*", default=None)
    ap.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--repeat", type=int, default=2,
                    help="runs per mode (interleaved); the fastest is reported")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--worker", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    n_valid = args.valid or max(64, args.train // 8)
    if args.worker:
        row = worker(args.worker[0], args.worker[1], args.train, n_valid, args.epochs)
        print("RESULT " + json.dumps(row))
        return 0

    import torch

    from brainalign.atomic import write_json, write_text

    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    modes = args.modes or (CUDA_MODES if cuda else CPU_MODES)
    rows: list[dict] = []
    load_before = os.getloadavg()
    for kind in args.tasks:
        for rep in range(args.repeat):  # interleaved, so a busy spell hits every mode alike
            for mode in modes:
                cmd = [sys.executable, __file__, "--worker", mode, kind, "--train",
                       str(args.train), "--valid", str(n_valid), "--epochs", str(args.epochs)]
                env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
                load = os.getloadavg()[0]
                done = subprocess.run(cmd, capture_output=True, text=True, env=env)
                found = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
                if done.returncode != 0 or not found:
                    print(f"{kind} {mode}: FAILED\n{done.stderr[-2000:]}", file=sys.stderr)
                    rows.append({"mode": mode, "task": kind, "error": done.stderr[-800:]})
                    continue
                row = json.loads(found[0][7:])
                row["repeat"], row["load_average_before"] = rep, load
                rows.append(row)
                print(f"{kind:10s} {mode:16s} wall {row['wall_s']:8.1f} s  cpu "
                      f"{row['cpu_s']:8.1f} s  peak "
                      f"{max(row['peak_rss_gb'], row['peak_rss_children_gb']):.2f} GB  "
                      f"load {load:.1f}", flush=True)
    summary = summarise(rows, modes, cuda)
    meta = {"machine": platform.platform(), "cpus": os.cpu_count(), "cuda": cuda,
            "torch": torch.__version__, "load_average_before": load_before,
            "load_average_after": os.getloadavg(), "layers": LAYERS, "dim": DIM,
            "train_clips": args.train, "valid_clips": n_valid, "epochs": args.epochs,
            "repeat": args.repeat,
            "note": "2 shared build cores: other jobs ran alongside (see load averages)"}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "probe_cuda" if cuda else "probe"
    write_json(args.out / f"{stem}.json", {"meta": meta, "summary": summary, "runs": rows})
    write_text(args.out / f"{stem}.md", report(meta, summary))
    print(json.dumps(summary, indent=1))
    return 0 if all(s.get("identical_to_reference", True) for s in summary) else 1


def _same_fits(a: dict, b: dict) -> bool:
    return a["fits"] == b["fits"] and a["chosen"] == b["chosen"]


def _close_fits(a: dict, b: dict) -> float:
    """Largest difference of a validation curve point between two runs."""
    return max(max(abs(x - y) for x, y in zip(fa["curve"], fb["curve"], strict=True))
               for fa, fb in zip(a["fits"], b["fits"], strict=True))


def summarise(rows: list[dict], modes: list[str], cuda: bool) -> list[dict]:
    """Per task and mode: times, ratio to the reference mode, equality of the results."""
    ref_mode = "cuda-sequential" if cuda else "sequential-1"
    out = []
    for kind in dict.fromkeys(r["task"] for r in rows):
        runs: dict[str, dict] = {}
        for r in rows:  # the fastest repeat of each mode; every repeat must agree
            if r["task"] != kind or "error" in r:
                continue
            best = runs.get(r["mode"])
            if best is not None and not _same_fits(best, r):
                raise SystemExit(f"{kind} {r['mode']}: repeats differ")
            if best is None or r["wall_s"] < best["wall_s"]:
                runs[r["mode"]] = {**r, "cpu_s": min(r["cpu_s"], best["cpu_s"]) if best
                                   else r["cpu_s"]}
        ref = runs.get(ref_mode)
        for mode in modes:
            r = runs.get(mode)
            if r is None:
                out.append({"task": kind, "mode": mode, "error": True})
                continue
            item = {"task": kind, "mode": mode, "wall_s": r["wall_s"], "cpu_s": r["cpu_s"],
                    "train_epochs_s": r["train_epochs_s"],
                    "load_average_before": r.get("load_average_before"),
                    "peak_gb": max(r["peak_rss_gb"], r["peak_rss_children_gb"]),
                    "chosen": r["chosen"]}
            if "cuda_peak_gb" in r:
                item["cuda_peak_gb"] = r["cuda_peak_gb"]
            if ref is not None:
                item["speedup_wall"] = round(ref["wall_s"] / r["wall_s"], 2)
                item["speedup_cpu"] = round(ref["cpu_s"] / r["cpu_s"], 2)
                item["same_selection"] = r["chosen"] == ref["chosen"]
                item["identical_to_reference"] = _same_fits(r, ref) or "fast" in mode or cuda
                item["bit_identical"] = _same_fits(r, ref)
                item["max_curve_diff"] = _close_fits(r, ref)
                per_clip = r["wall_s"] / (r["train_clips"] * r["epochs"])
                item["extrapolated_40000_clips_per_epoch_s"] = round(per_clip * 40_000, 1)
            out.append(item)
    return out


def report(meta: dict, summary: list[dict]) -> str:
    lines = [
        "# Probe grid: batched vs sequential (synthetic HEAR-sized tasks)", "",
        f"{meta['train_clips']:,} training clips, {meta['valid_clips']:,} validation and test "
        f"clips, {meta['layers']} layers x {meta['dim']}, the paper's 16-configuration grid "
        f"(batch 1024), {meta['epochs']} epochs per fit (no early stopping, so every mode does "
        f"the same work); fastest of {meta['repeat']} interleaved runs per mode (wall and CPU "
        f"minimum). Machine: {meta['cpus']} cores, {'CUDA' if meta['cuda'] else 'CPU'}, "
        f"load average {meta['load_average_before'][0]:.1f} before / "
        f"{meta['load_average_after'][0]:.1f} after (shared with other jobs).", "",
        "| task | mode | wall s | CPU s | speed-up (wall) | peak GB | same selection | "
        "bit-identical | max curve diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        if s.get("error"):
            lines.append(f"| {s['task']} | {s['mode']} | failed | | | | | | |")
            continue
        lines.append(
            f"| {s['task']} | {s['mode']} | {s['wall_s']} | {s['cpu_s']} | "
            f"{s.get('speedup_wall', '')} | {s['peak_gb']} | {s.get('same_selection', '')} | "
            f"{s.get('bit_identical', '')} | {s.get('max_curve_diff', 0):.2g} |")
    lines += ["", "Modes: sequential-N = `batched: false` with N forked workers; batched-N = "
              "`batched: true` with N threads (exact: bit-identical); batched-fast-N = the "
              "matrix-product layer mix (the CUDA default). Speed-ups are against "
              "sequential-1 (today's default: one core).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
