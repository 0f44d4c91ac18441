"""Benchmark: what the whole paper costs on this machine, per stage kind (measured + extrapolated).

Stage kinds and where each number comes from (every row of the output says which):

- **extraction** (165 stimuli x 36 models, and the 100 EnCodecMAE checkpoints of Fig. 5):
  ``benchmarks/results/paper_models*.json`` (``bench_paper_models.py``: the real architectures
  on random weights) when present; otherwise *measured* here on proxy encoders (a 50-frames/s
  transformer front end, 12 x 768 "base" and 24 x 1024 "large", batch 1) and *extrapolated* to
  the other sizes by multiply-adds; SpectroTemporal from ``benchmarks/results/extract.json``.
- **embedding** of the six HEAR tasks (their clip counts and lengths, below): reading and
  resampling 48 kHz audio *measured* here (``read_wav`` + ``resample``, soxr HQ), the forward
  passes extrapolated from the extraction throughput per audio second.
- **probe** grid per task: the batched grid's cost per training clip and epoch *measured* by
  ``bench_probe.py`` (``benchmarks/results/probe.json``, or a short run here), scaled by each
  model's probe input size and each task's labels (multiply-adds), times the task's training
  and validation clips, times epochs: early stopping makes them unknown before the run, so the
  estimate uses 60 epochs per fit (bounds: 21, the patience + 1, and 200, the maximum).
- **regression** and **RSA**: ``benchmarks/results/alignment.json`` (``bench_alignment.py``:
  NH2015 and B2021 sizes, 13 x 768; components: 6 targets, negligible), per model.

HEAR task sizes (clips per split, seconds per clip): hear-preprocess task configs
(github.com/hearbenchmark/hear-preprocess: sample_duration, folds, the 50 h NSynth budget of
37.5 / 12.5 / 12.5 h) with the source datasets' split sizes (NSynth test 4,096 notes; Speech
Commands v0.02 as split by TFDS: 85,511 / 10,102 / 4,890; FSD50K, Fonseca et al. 2022: 36,796
train (12 over-long clips dropped by HEAR) / 4,170 valid / 10,231 eval, 0.3-30 s, 108.3 h in
all; CREMA-D 7,438 in 5 folds of 1,487-1,488; GTZAN 1,000 x 30 s in 10 folds; ESC-50 2,000 x 5 s
in 5 folds). HEAR pads or trims fixed-duration tasks to their sample_duration.

    python benchmarks/bench_paper_scale.py [--threads 2] [--epochs 60]

Writes ``benchmarks/results/paper_scale.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

# name: (clips of the grid's train split, its valid clips, all clips, seconds per clip, labels,
#        other k-fold splits (refits), train/valid clips of a refit)
HEAR = {
    "nsynth_pitch-v2.2.3-50h": dict(train=33_750, valid=11_250, clips=49_096, seconds=4.0,
                                    labels=88, refits=0),
    "speech_commands-v0.0.2-full": dict(train=85_511, valid=10_102, clips=100_503, seconds=1.0,
                                        labels=12, refits=0),
    "fsd50k-v1.0-full": dict(train=36_784, valid=4_170, clips=51_185, seconds=7.62, labels=200,
                             refits=0),
    "tfds_gtzan-1.0.0-full": dict(train=800, valid=100, clips=1_000, seconds=30.0, labels=10,
                                  refits=9),
    "tfds_crema_d-1.0.0-full": dict(train=4_463, valid=1_488, clips=7_438, seconds=5.0,
                                    labels=6, refits=4),
    "esc50-v2.0.0-full": dict(train=1_200, valid=400, clips=2_000, seconds=5.0, labels=50,
                              refits=4),
}

# Proxy classes: (transformer layers, width) for the extraction proxy, or a measured rate.
PROXIES = {"small": (5, 768), "base": (12, 768), "large": (20, 1024), "xl": (32, 1280),
           "xxl": (40, 1536), "cnn": (12, 768), "light": (4, 512)}
# The paper's 36 models: (proxy class, probe input dim, candidate layers). Probe dims: the
# smallest layer (per-layer PCA) or the single layer; approximate where the spec gives none.
MODELS = {
    **{k: ("base", 768, 10) for k in ("mel256-ec-base", "mel256-ec-base-as",
                                      "mel256-ec-base-fma", "mel256-ec-base-ll",
                                      "mel256-ec-base_st-nopn", "ec-ec-base", "spec-ec-base")},
    "mel256-ec-small": ("small", 768, 5),
    "mel256-ec-large": ("large", 1024, 11), "mel256-ec-large_st-nopn": ("large", 1024, 11),
    **{k: ("base", 768, 13) for k in ("BEATs_iter1", "BEATs_iter2", "BEATs_iter3",
                                      "BEATs_iter3_finetuned_on_AS2M_cpt1")},
    "dasheng_base": ("base", 768, 12), "dasheng_base_ft-as": ("base", 768, 12),
    "dasheng_06B": ("xl", 1280, 12), "dasheng_12B": ("xxl", 1536, 11),
    **{f"braindnn_resnet50_{t}": ("cnn", 2048, 7)
       for t in ("word", "speaker", "audioset", "word_speaker_audioset")},
    **{f"braindnn_kell2018_{t}": ("light", 1024, 9)
       for t in ("word", "speaker", "audioset", "word_speaker_audioset")},
    "braindnn_ast": ("base", 768, 14), "braindnn_vggish": ("light", 512, 13),
    "braindnn_wav2vec2": ("base", 768, 13), "braindnn_dcase2020": ("light", 256, 5),
    "braindnn_deepspeech": ("light", 1024, 7), "braindnn_sepformer": ("light", 256, 33),
    "braindnn_s2t": ("small", 256, 13), "braindnn_zerospeech": ("light", 64, 5),
    "braindnn_metricgan": ("light", 256, 4), "braindnn_spectemp_filters": ("spectemp", 23_421, 1),
}
PRETRAIN_CHECKPOINTS = 100
STIMULI_SECONDS = 165 * 2.0
EPOCH_BOUNDS = (21, 200)


def encoder_macs(layers: int, width: int, frames: int) -> float:
    """Multiply-adds of a pre-norm transformer encoder (4x MLP) over ``frames`` tokens."""
    per_layer = frames * (4 * width * width + 8 * width * width) + 2 * frames * frames * width
    return float(layers * per_layer)


def measure_encoder(layers: int, width: int, seconds: float, threads: int, device: str
                    ) -> float:
    """Seconds per audio second of a proxy encoder (conv front end to 50 frames/s, batch 1;
    fastest of 5 runs)."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(width, max(1, width // 64), 4 * width,
                                             batch_first=True, norm_first=True)
    encoder = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
    front = torch.nn.Conv1d(1, width, kernel_size=400, stride=320)
    encoder, front = encoder.to(device).eval(), front.to(device).eval()
    audio = torch.randn(1, 1, int(16_000 * seconds), device=device)
    times = []
    with torch.inference_mode():
        encoder(front(audio).transpose(1, 2))
        for _ in range(5):  # the fastest of 5: the machine is shared, other jobs slow some runs
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            encoder(front(audio).transpose(1, 2))
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return min(times) / seconds


def measure_audio(threads: int) -> dict[str, float]:
    """Seconds per audio second to read a 48 kHz wav and resample it (soxr HQ)."""
    import numpy as np
    import soundfile as sf

    from brainalign.data.stimuli import read_wav, resample

    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.wav"
        seconds = 30.0
        sf.write(path, np.random.default_rng(0).uniform(-0.5, 0.5, int(48_000 * seconds)),
                 48_000, subtype="PCM_16")
        for rate in (16_000, 24_000):
            t0 = time.perf_counter()
            for _ in range(5):
                audio, _ = read_wav(path, expected_rate=48_000)
                resample(audio, 48_000, rate)
            out[f"read_resample_to_{rate}"] = (time.perf_counter() - t0) / 5 / seconds
    return out


def probe_rate(threads: int) -> dict:
    """Seconds per (member, training clip, epoch) of the batched grid at 13 x 768."""
    path = RESULTS / "probe.json"
    if path.is_file():
        data = json.loads(path.read_text())
        runs: dict[tuple[str, str], dict] = {}
        for r in data["runs"]:  # the fastest repeat of each mode, as bench_probe reports
            key = (r.get("task", ""), r.get("mode", ""))
            if "error" not in r and (key not in runs or r["wall_s"] < runs[key]["wall_s"]):
                runs[key] = r
        out = {"source": f"measured: {path.relative_to(REPO)} (bench_probe.py)"}
        for kind, labels in (("multilabel", 200), ("multiclass", 10)):
            for mode in ("batched-2", "sequential-1", "batched-1", "sequential-2"):
                r = runs.get((kind, mode))
                if r is not None:
                    clips = (r["train_clips"] + r["valid_clips"]) * r["epochs"] * 16
                    out[f"{kind}:{mode}"] = {"labels": labels, "s_per_member_clip_epoch":
                                             r["wall_s"] / clips}
        return out
    import numpy as np
    import torch

    from brainalign.downstream.batched import Member, fit_members
    from brainalign.downstream.config import DownstreamConfig
    from brainalign.downstream.metrics import get_metric
    from brainalign.downstream.probe import SplitInputs, deterministic_torch

    n, n_valid = 2048, 256
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n + 2 * n_valid, 13, 768), dtype=np.float32)
    y = (rng.random((n + 2 * n_valid, 200)) < 0.01).astype(np.float32)
    inputs = SplitInputs(x[:n], y[:n], x[n:n + n_valid], y[n:n + n_valid], x[-n_valid:],
                         y[-n_valid:], None)
    cfg = DownstreamConfig(max_epochs=1, patience=2, workers=threads, metrics_backend="builtin")
    t0 = time.perf_counter()
    with deterministic_torch(1, torch.device("cpu")):
        fit_members({0: inputs}, [Member(c, 0, 0) for c in cfg.grid()], "multilabel",
                    {"mAP": get_metric("mAP", "builtin")}, "mAP", cfg, torch.device("cpu"))
    wall = time.perf_counter() - t0
    return {"source": f"measured here: batched grid, {n} clips x 1 epoch, {threads} workers",
            f"multilabel:batched-{threads}": {"labels": 200, "s_per_member_clip_epoch":
                                               wall / ((n + n_valid) * 16)}}


def probe_macs(dim: int, layers: int, labels: int) -> float:
    """Multiply-adds per clip of one grid member, averaged over the grid's two depths."""
    return layers * dim + dim * 1024 + 0.5 * 1024 * 1024 + 1024 * labels


def extraction_rates(threads: int, device: str) -> tuple[dict[str, float], dict[str, str]]:
    """Seconds per audio second per proxy class, and where each number comes from."""
    rates, source = {}, {}
    base = measure_encoder(*PROXIES["base"], 10.0, threads, device)
    large = measure_encoder(*PROXIES["large"], 10.0, threads, device)
    rates["base"], source["base"] = base, "measured (proxy 12 x 768, 10-s clip)"
    rates["large"], source["large"] = large, "measured (proxy 20 x 1024, 10-s clip)"
    per_mac = large / encoder_macs(*PROXIES["large"], 500)
    for name in ("small", "xl", "xxl", "light", "cnn"):
        rates[name] = per_mac * encoder_macs(*PROXIES[name], 500)
        source[name] = "extrapolated from the large proxy by multiply-adds"
    extract = RESULTS / "extract.json"
    spectemp = None
    if extract.is_file():
        for row in json.loads(extract.read_text()).get("per_model", []):
            if row.get("model") == "spectemp":
                spectemp = row["extract_s"] / STIMULI_SECONDS
    rates["spectemp"] = spectemp if spectemp is not None else base
    source["spectemp"] = ("measured: benchmarks/results/extract.json (165 x 2-s sounds)"
                          if spectemp is not None else "assumed = base")
    for path in sorted(RESULTS.glob("paper_models*.json")):
        data = json.loads(path.read_text())
        for row in data.get("rows", []):
            if "per_sound_s" in row and row.get("model") in MODELS and not row.get("reduced"):
                rates[row["model"]] = row["per_sound_s"] / 2.0
                source[row["model"]] = f"measured: {path.relative_to(REPO)}"
    return rates, source


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=60, help="assumed epochs per probe fit")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = ap.parse_args()

    from brainalign.atomic import write_json, write_text

    load_before = os.getloadavg()
    rates, rate_source = extraction_rates(args.threads, args.device)
    audio = measure_audio(args.threads)
    probe = probe_rate(args.threads)
    align = json.loads((RESULTS / "alignment.json").read_text())
    reg_s = align["NH2015"]["regression_seconds"] + align["B2021"]["regression_seconds"]
    rsa_s = align["NH2015"]["rsa_seconds"] + align["B2021"]["rsa_seconds"]
    probe_key = next(k for k in ("multilabel:batched-2", "multilabel:batched-1",
                                 f"multilabel:batched-{args.threads}") if k in probe)
    probe_ref = probe[probe_key]
    seq_ref = probe.get("multilabel:sequential-1")
    ref_macs = probe_macs(768, 13, probe_ref["labels"])
    hear_seconds = sum(t["clips"] * t["seconds"] for t in HEAR.values())

    per_model = {}
    totals = {"extraction": 0.0, "embedding": 0.0, "probe": 0.0, "probe_sequential": 0.0,
              "regression": 0.0, "rsa": 0.0}
    for model, (proxy, dim, layers) in MODELS.items():
        rate = rates.get(model, rates[proxy])
        extraction = rate * STIMULI_SECONDS
        embedding = rate * hear_seconds + audio["read_resample_to_16000"] * hear_seconds
        probe_s = seq_s = 0.0
        for task in HEAR.values():
            clips = (task["train"] + task["valid"]) * (16 + task["refits"])
            scale = probe_macs(dim, layers, task["labels"]) / ref_macs
            probe_s += clips * args.epochs * scale * probe_ref["s_per_member_clip_epoch"]
            if seq_ref is not None:
                seq_s += clips * args.epochs * scale * seq_ref["s_per_member_clip_epoch"]
        per_model[model] = {"proxy": proxy, "probe_dim": dim, "layers": layers,
                            "extraction_s": extraction, "embedding_s": embedding,
                            "probe_s": probe_s, "probe_sequential_s": seq_s,
                            "regression_s": reg_s, "rsa_s": rsa_s}
        for key in ("extraction", "embedding", "probe", "regression", "rsa"):
            totals[key] += per_model[model][f"{key}_s"]
        totals["probe_sequential"] += seq_s
    # Fig. 5: 100 EnCodecMAE-base checkpoints, extraction + layer-wise RSA (NH2015, B2021, ROIs)
    totals["extraction"] += PRETRAIN_CHECKPOINTS * rates["base"] * STIMULI_SECONDS
    totals["rsa"] += PRETRAIN_CHECKPOINTS * rsa_s
    total = sum(v for k, v in totals.items() if k != "probe_sequential")
    epochs_lo, epochs_hi = EPOCH_BOUNDS
    probe_range = [totals["probe"] * e / args.epochs for e in (epochs_lo, epochs_hi)]
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "threads": args.threads, "device": args.device,
                    "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "hear_tasks": HEAR, "hear_audio_hours": hear_seconds / 3600,
        "hear_clips": sum(t["clips"] for t in HEAR.values()),
        "extraction_s_per_audio_s": rates, "extraction_sources": rate_source,
        "audio_s_per_audio_s": audio, "probe": probe, "probe_reference": probe_key,
        "alignment_source": "benchmarks/results/alignment.json (bench_alignment.py)",
        "assumed_epochs": args.epochs, "epoch_bounds": EPOCH_BOUNDS,
        "totals_hours": {k: v / 3600 for k, v in totals.items()},
        "probe_hours_range": [v / 3600 for v in probe_range],
        "total_hours": total / 3600,
        "total_days": total / 86400,
        "per_model": per_model,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "paper_scale.json", result)
    write_text(RESULTS / "paper_scale.md", report(result))
    print(report(result))
    return 0


def report(r: dict) -> str:
    t = r["totals_hours"]
    lo, hi = r["probe_hours_range"]
    m = r["machine"]
    rows = [
        ("extraction (165 stimuli x 36 models + 100 checkpoints)", t["extraction"],
         "proxy encoders measured here; sizes extrapolated by multiply-adds"),
        (f"embedding ({r['hear_clips']:,} HEAR clips, {r['hear_audio_hours']:.0f} h of audio, "
         "x 36 models)", t["embedding"],
         "read + resample measured here; forward passes extrapolated from extraction"),
        (f"probe grid, batched ({r['assumed_epochs']} epochs per fit; {lo:,.0f}-{hi:,.0f} h for "
         "21-200)", t["probe"], f"{r['probe']['source']}; scaled by probe size and labels"),
        ("probe grid, sequential (for comparison, not in the total)", t["probe_sequential"],
         "same scaling from the sequential-1 run"),
        ("regression (NH2015 + B2021 + components)", t["regression"],
         "measured: alignment.json, per model"),
        ("RSA (layer-wise + cross-validated, + 100 checkpoints)", t["rsa"],
         "measured: alignment.json, per model"),
    ]
    lines = [
        "# The whole paper on this machine: estimated cost per stage kind", "",
        f"Machine: {m['cpus']} cores ({m['threads']} threads used), {m['device']}, load average "
        f"{m['load_average_before'][0]:.1f} (shared). 36 models; six HEAR tasks.", "",
        "| stage kind | hours | days | from |", "|---|---|---|---|",
    ]
    for name, hours, src in rows:
        lines.append(f"| {name} | {hours:,.1f} | {hours / 24:,.2f} | {src} |")
    lines += [f"| **total** | **{r['total_hours']:,.0f}** | **{r['total_days']:,.1f}** | |", "",
              "Extraction rates (s per audio second): " + ", ".join(
                  f"{k} {v:.3g} ({r['extraction_sources'][k].split(' (')[0]})"
                  for k, v in r["extraction_s_per_audio_s"].items()), "",
              "Audio reading + resampling (s per audio second): " + ", ".join(
                  f"{k} {v:.3g}" for k, v in r["audio_s_per_audio_s"].items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
