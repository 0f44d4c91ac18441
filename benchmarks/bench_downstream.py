"""Benchmark: the full downstream protocol on the three offline mini tasks for one demo model.

Target (issue 5): all three mini tasks (16-configuration grid, paper probe settings) for one demo
model in <= 60 s on 2 CPU cores. The mini tasks are built first (not timed in the target);
the timed part is ``run_downstream`` itself: audio reading, embedding, probe grid, k-fold splits.

The demo model here is a small deterministic spectral embedder with two layers of different
sizes (so the per-layer PCA path runs), standing in for a registry model: it costs ~1 s of the
total; ``--model <name>`` uses a registry model through ``brainalign.models.extract`` instead.
Writes ``benchmarks/results/downstream[_<model>].json`` and ``.md``.

    .venv/bin/python benchmarks/bench_downstream.py [--repeat 2] [--model crepe-tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

T_START = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from brainalign.atomic import write_json, write_text  # noqa: E402
from brainalign.downstream.config import MINI_TASKS  # noqa: E402
from brainalign.downstream.stages import run_build_mini_tasks, run_downstream  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - T_START
REPO = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("BRAINALIGN_MIRROR", REPO.parent / "shared" / "mirror"))
NATSOUND = MIRROR / ("raw.githubusercontent.com/snormanhaignere/natsound165-neuron2015/"
                     "b41b99ff620d7997dbf278fc770f58566707726a/stimuli")
FOLDS = MIRROR / ("raw.githubusercontent.com/mrpep/braindnn/"
                  "1222378faacf8bbb5503a0b5de522397adbb1a19/lists/stratified-fold-assignment.pkl")
TARGET_SECONDS = 60.0


def demo_embedder(seed: int = 0):  # type: ignore[no-untyped-def]
    """Layer "bands": 32 log band energies; layer "proj": 48-d tanh random projection of the
    log power spectrum; both averaged over 32 ms frames (batched numpy, deterministic)."""
    n_fft, hop = 512, 256
    proj = np.random.default_rng(seed).normal(size=(n_fft // 2 + 1, 48)) / 50
    edges = np.unique(np.geomspace(1, n_fft // 2 + 1, 33).astype(int))
    window = np.hanning(n_fft)

    def embed(audio: list[np.ndarray], sample_rate: int) -> dict[str, np.ndarray]:
        bands, projs = [], []
        for clip in audio:
            n_frames = 1 + (len(clip) - n_fft) // hop
            idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
            logspec = np.log(np.abs(np.fft.rfft(clip[idx] * window, axis=1)) ** 2 + 1e-8)
            bands.append(np.add.reduceat(logspec, edges[:-1], axis=1).mean(axis=0)
                         / np.diff(edges))
            projs.append(np.tanh(logspec @ proj).mean(axis=0))
        return {"bands": np.asarray(bands, np.float32), "proj": np.asarray(projs, np.float32)}

    return embed


def registry_embedder(name: str):  # type: ignore[no-untyped-def]
    """(embed, rate) for registry model ``name`` via brainalign.models.extract (optional)."""
    from brainalign.models.extract import ExtractConfig, build_runner, extract_activations

    config = ExtractConfig()
    runner = build_runner(name, config)

    def embed(audio: list[np.ndarray], sample_rate: int) -> dict[str, np.ndarray]:
        names = [f"clip{i}" for i in range(len(audio))]
        return extract_activations(runner, audio, sample_rate, names, config).layers

    return embed, runner.sample_rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the timed part this many times; scores must be identical")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--model", default=None,
                        help="a registry model instead of the demo spectral embedder")
    args = parser.parse_args()
    if args.model is None:
        model, make_embed, rate = "demo-spectral", demo_embedder, 16_000
        label = "demo spectral (layers: bands 32-d, proj 48-d; PCA to 32)"
    else:
        model = args.model
        embed_fn, rate = registry_embedder(args.model)
        make_embed = lambda: embed_fn  # noqa: E731
        label = f"registry model {args.model} ({rate} Hz)"
    suffix = "" if args.model is None else f"_{args.model}"

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-downstream-") as tmp:
        tmp_path = Path(tmp)
        t0 = time.perf_counter()
        counts = run_build_mini_tasks(NATSOUND / "wav", NATSOUND / "category_labels.csv", FOLDS,
                                      tmp_path / "tasks", None)
        build_seconds = time.perf_counter() - t0
        runs = []
        embed_seconds = [0.0]

        def timed(embed):  # type: ignore[no-untyped-def]
            def wrapper(audio: list[np.ndarray], sample_rate: int) -> dict[str, np.ndarray]:
                t = time.perf_counter()
                out = embed(audio, sample_rate)
                embed_seconds[0] += time.perf_counter() - t
                return out

            return wrapper

        for r in range(args.repeat):
            embed_seconds[0] = 0.0
            per_task = {}
            scores = {}
            cpu0 = time.process_time()
            t_run = time.perf_counter()
            for task in MINI_TASKS:
                t1 = time.perf_counter()
                out = run_downstream(model, timed(make_embed()), rate, tmp_path / "tasks",
                                     [task], tmp_path / f"out{r}" / task, None,
                                     cache_dir=tmp_path / f"cache{r}", progress=False)
                per_task[task] = round(time.perf_counter() - t1, 2)
                scores.update(out)
            runs.append({"seconds": round(time.perf_counter() - t_run, 2),
                         "cpu_seconds": round(time.process_time() - cpu0, 2),
                         "embedding_seconds": round(embed_seconds[0], 2),
                         "seconds_per_task": per_task, "scores": scores})
            print(f"run {r + 1}: {runs[-1]['seconds']:.1f} s {per_task} {scores}", flush=True)
    identical = all(run["scores"] == runs[0]["scores"] for run in runs)
    best = min(run["seconds"] for run in runs)
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = {
        "benchmark": "downstream mini tasks, one demo model, paper probe protocol",
        "target_seconds": TARGET_SECONDS,
        "seconds": runs[0]["seconds"],
        "best_seconds": best,
        "within_target": runs[0]["seconds"] <= TARGET_SECONDS,
        "import_seconds": round(IMPORT_SECONDS, 2),
        "build_mini_tasks_seconds": round(build_seconds, 2),
        "clips": counts,
        "runs": runs,
        "repeat_scores_identical": identical,
        "child_cpu_seconds": round(child.ru_utime + child.ru_stime, 2),
        "machine": {"cpu_count": os.cpu_count(), "load_average_before": load_before,
                    "load_average_after": os.getloadavg(), "platform": platform.platform(),
                    "python": sys.version.split()[0], "torch": torch.__version__,
                    "torch_threads_during_fits": 1},
        "embedder": label,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    write_json(args.results / f"downstream{suffix}.json", result)
    lines = [
        "# Downstream benchmark: three mini tasks, one demo model",
        "",
        f"Model: {label}.",
        "",
        f"Target: <= {TARGET_SECONDS:.0f} s on 2 CPU cores (issue 5). Paper probe protocol: "
        "16-config grid, batch 1024, <= 200 epochs, patience 20; nat165-category 5 folds.",
        "",
        f"- timed run_downstream (3 tasks): **{runs[0]['seconds']:.1f} s** wall, "
        f"{runs[0]['cpu_seconds']:.1f} s CPU"
        + (f" (best of {len(runs)}: {best:.1f} s)" if len(runs) > 1 else ""),
        f"- of which the model's embedding calls: {runs[0]['embedding_seconds']:.1f} s; "
        f"reading audio, probe grid and k-fold splits: "
        f"{runs[0]['seconds'] - runs[0]['embedding_seconds']:.1f} s",
        f"- per task: {runs[0]['seconds_per_task']}",
        f"- scores: {runs[0]['scores']}",
        f"- repeated runs identical: {identical}" if len(runs) > 1 else "- single run",
        f"- not timed: imports {IMPORT_SECONDS:.1f} s, building the mini tasks "
        f"{build_seconds:.1f} s ({counts})",
        f"- machine: {os.cpu_count()} cores, load average {load_before[0]:.2f} before (shared "
        "with other jobs), torch 1 thread",
        "",
    ]
    write_text(args.results / f"downstream{suffix}.md", "\n".join(lines))
    print(json.dumps({k: result[k] for k in ("seconds", "within_target",
                                              "repeat_scores_identical")}))
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
