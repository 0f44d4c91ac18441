"""Benchmark: the paper's pretrained models on random weights in their real checkpoint formats.

For each model, in its own subprocess (so peak memory is the model's own): the test fixture of
its family (``tests/models/fixtures/<family>.py``) writes every weight file in the exact upstream
container with random values (``--reduced``: the families' reduced-depth variants instead of the
real sizes); the files go through the real fetch path (a temporary mirror and registry copy:
``data/weights/<model>/``, sha256 recorded on first use); then the runner is built (time, peak
RSS) and, after one untimed warm-up sound, ``--sounds`` of the 165 stimuli are extracted (time
per sound, extrapolated to 165 when fewer are run). On CUDA (``--device cuda``, when available)
the same sounds also run on the CPU and the largest absolute difference between the two is
reported.

Writes ``benchmarks/results/paper_models.{json,md}``. Real weights are not needed; the timings
are those of the real architectures (or of the reduced ones, marked), not of trained models.

    python benchmarks/bench_paper_models.py [--models m1 m2 ...] [--reduced] [--sounds 165]
        [--threads 2] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NATSOUND = ("raw.githubusercontent.com/snormanhaignere/natsound165-neuron2015/"
            "b41b99ff620d7997dbf278fc770f58566707726a")


def _fixture(family: str):
    path = REPO / "tests" / "models" / "fixtures" / f"{family}.py"
    sys.path.insert(0, str(REPO / "tests" / "models"))
    spec = importlib.util.spec_from_file_location(f"bench_fixture_{family}", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module  # dataclasses in the fixture look their module up
    spec.loader.exec_module(module)
    return module


def _pack(archive: Path, member: str, source: Path) -> None:
    """An archive (zip or tar, by the name) with ``source`` stored as ``member``."""
    import tarfile
    import zipfile

    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zf:
            zf.write(source, member)
    else:
        with tarfile.open(archive, "w") as tar:
            tar.add(source, arcname=member)


def _write_files(family: str, model: str, out: str, reduced: bool, queue) -> None:
    files = _fixture(family).write_files(model, Path(out), reduced=reduced, seed=0)
    queue.put({k: str(v) for k, v in files.items()})


def _write_in_child(family: str, model: str, out: Path, reduced: bool) -> dict[str, Path]:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_write_files, args=(family, model, str(out), reduced, queue))
    proc.start()
    files = queue.get()
    proc.join()
    if proc.exitcode != 0:
        raise SystemExit(f"{model}: writing the synthetic files failed")
    return {k: Path(v) for k, v in files.items()}


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB -> GB


def worker(model: str, reduced: bool, n_sounds: int, threads: int, device: str,
           mirror_root: Path) -> dict:
    """Run one model in this process; returns its measurements."""
    import numpy as np
    import torch

    from brainalign.data.fetch import fetch, mirror_path
    from brainalign.data.stimuli import load_stimuli
    from brainalign.models.extract import ExtractConfig, build_runner, extract_activations
    from brainalign.models.registry import get_spec

    torch.set_num_threads(threads)
    spec = get_spec(model)
    family = spec.module.rsplit(".", 1)[1]
    fixture = _fixture(family)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        # written in a child process, so this process's peak memory is the model's own
        files = _write_in_child(family, model, tmp / "written", reduced)
        if reduced:
            from brainalign.models import registry

            registry._registry()[model] = fixture.reduced_spec(model)
        # through the real fetch path: the files at their URLs in a mirror, a registry copy
        reg = tmp / "registry.json"
        raw = json.loads((REPO / "src/brainalign/data/registry.json").read_text())
        for item in raw.get("weights", []):  # random stand-ins cannot have a published prefix
            item.pop("sha256_prefix", None)
            item.pop("git_blob_sha1", None)
            item.pop("size", None)
        reg.write_text(json.dumps(raw))
        os.environ["BRAINALIGN_REGISTRY"] = str(reg)
        from brainalign.data.fetch import load_registry

        prefix = f"weights/{model}/"
        for entry in load_registry(reg):
            for dest in entry.destinations():
                if dest.startswith(prefix):
                    name = dest[len(prefix):]
                    target = mirror_path(entry.url, tmp / "mirror")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if entry.members:  # an archive holding this model's member
                        member = next(m.member for m in entry.members if m.path == dest)
                        _pack(target, member, files[name])
                    else:
                        shutil.move(str(files[name]), target)
        t0 = time.perf_counter()
        fetch(["weights"], tmp / "data", tmp / "mirror", reg, models=[model])
        fetch_s = time.perf_counter() - t0
        shutil.rmtree(tmp / "mirror")
        shutil.rmtree(tmp / "written", ignore_errors=True)
        stim = load_stimuli(mirror_root / NATSOUND / "stimuli" / "wav",
                            mirror_root / NATSOUND / "stimuli" / "category_labels.csv",
                            sample_rate=None, source_rate=None)
        audio, names = stim.audio[:n_sounds], stim.names[:n_sounds]
        config = ExtractConfig(models=(model,), device=device, batch_size=1, threads=threads)
        rss0 = _rss_gb()
        t0 = time.perf_counter()
        runner = build_runner(model, config, data_root=tmp / "data")
        build_s = time.perf_counter() - t0
        rss_build = _rss_gb()
        # one untimed sound first: lazy initialisation (kernels, caches) is paid once per run,
        # not per sound, and would dominate a three-sound extrapolation
        t0 = time.perf_counter()
        extract_activations(runner, audio[:1], stim.sample_rate, names[:1], config, progress=False)
        warmup_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        acts = extract_activations(runner, audio, stim.sample_rate, names, config, progress=False)
        run_s = time.perf_counter() - t0
        row = {
            "model": model, "reduced": reduced, "device": device, "threads": threads,
            "n_params": sum(p.numel() for p in _modules(runner)),
            "layers": len(acts.layers), "sounds": len(names),
            "fetch_s": round(fetch_s, 2), "build_s": round(build_s, 2),
            "warmup_s": round(warmup_s, 2),
            "per_sound_s": round(run_s / len(names), 4),
            "extract_165_s": round(run_s / len(names) * 165, 1),
            "rss_before_build_gb": round(rss0, 3), "peak_rss_after_build_gb": round(rss_build, 3),
            "peak_rss_gb": round(_rss_gb(), 3),
        }
        if device.startswith("cuda"):
            row["cuda_peak_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 3)
            cpu = extract_activations(build_runner(model, ExtractConfig(
                models=(model,), device="cpu", batch_size=1, threads=threads),
                data_root=tmp / "data"), audio, stim.sample_rate, names, config, progress=False)
            row["max_abs_diff_cuda_vs_cpu"] = float(max(
                np.abs(acts.layers[k] - cpu.layers[k]).max() for k in acts.layers))
            row["max_rel_diff_cuda_vs_cpu"] = float(max(
                np.abs(acts.layers[k] - cpu.layers[k]).max()
                / max(float(np.abs(cpu.layers[k]).max()), 1e-12) for k in acts.layers))
        return row


def _modules(runner) -> list:
    import torch

    params, seen = [], set()
    for value in vars(runner).values():
        if isinstance(value, torch.nn.Module):
            for p in value.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
    return params


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=None, help="default: the paper's 35")
    ap.add_argument("--reduced", action="store_true", help="reduced-depth random models")
    ap.add_argument("--sounds", type=int, default=165)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--mirror", type=Path, default=REPO.parent / "shared" / "mirror")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    if args.worker:
        row = worker(args.worker, args.reduced, args.sounds, args.threads, args.device,
                     args.mirror)
        print("RESULT " + json.dumps(row))
        return 0

    import yaml

    from brainalign.atomic import write_json, write_text

    paper = yaml.safe_load((REPO / "src/brainalign/profiles/paper.yaml").read_text())["models"]
    models = args.models or [m for m in paper if m != "braindnn_spectemp_filters"]
    rows = []
    for model in models:
        cmd = [sys.executable, __file__, "--worker", model, "--sounds", str(args.sounds),
               "--threads", str(args.threads), "--device", args.device, "--mirror",
               str(args.mirror)] + (["--reduced"] if args.reduced else [])
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        result = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
        if done.returncode != 0 or not result:
            rows.append({"model": model, "error": (done.stderr or done.stdout)[-800:]})
            print(f"{model}: FAILED\n{rows[-1]['error']}", file=sys.stderr)
            continue
        row = json.loads(result[0][7:])
        row["wall_s"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(f"{model:36s} build {row['build_s']:6.1f} s  {row['per_sound_s']:7.3f} s/sound  "
              f"165 sounds ~{row['extract_165_s']:7.1f} s  peak {row['peak_rss_gb']:5.2f} GB",
              flush=True)
    meta = {"machine": platform.machine(), "cpus": os.cpu_count(), "threads": args.threads,
            "device": args.device, "reduced": args.reduced, "sounds": args.sounds,
            "load_average": os.getloadavg()[0]}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "paper_models" + ("_reduced" if args.reduced else "") + (
        "" if args.device == "cpu" else f"_{args.device.replace(':', '')}")
    write_json(args.out / f"{stem}.json", {"meta": meta, "rows": rows})
    lines = [f"# Paper models on random weights ({'reduced' if args.reduced else 'real'} sizes, "
             f"{args.device}, {args.threads} threads, {args.sounds} sounds)", "",
             f"Timed after one untimed warm-up sound; load average {meta['load_average']:.1f} at "
             "the end (other jobs may share the machine).", "",
             "| model | params | build s | warm-up s | s/sound | 165 sounds s | peak RSS GB |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | failed | | | | | |")
        else:
            lines.append(f"| {r['model']} | {r['n_params']:,} | {r['build_s']} | "
                         f"{r['warmup_s']} | {r['per_sound_s']} | {r['extract_165_s']} | "
                         f"{r['peak_rss_gb']} |")
    write_text(args.out / f"{stem}.md", "\n".join(lines) + "\n")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
