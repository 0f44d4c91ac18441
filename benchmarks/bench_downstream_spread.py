"""Run-to-run spread of the downstream scores: the probe grid over several seeds, one machine.

Floating point differs across CPUs, and a probe that selects its configuration by early stopping
on a small validation set turns a last-digit difference into a different selection. The spread
over seeds on one machine is the proxy for that machine-to-machine spread; ``brainalign verify``
sets its downstream tolerances from it. For each model of params.yaml (the embedded default's
mini tasks, the demo's activations and embedding cache under build/), each seed runs the probe
protocol alone (``downstream.seeds: [s]``, no ``task_seeds``); the script reports per model and
task the SD of one seed's test score, the SD of Overall (task scores z-scored across the models,
as the ``overall`` stage) and of the Table 1 correlations, and what the configured protocol
implies: a task configured with k seeds (``seeds``, or its ``task_seeds`` entry) reports a mean
over k seeds, whose SD is taken as SD / sqrt(k) (independent seeds; for Overall and the
correlations each seed's deviation from the seed mean is scaled by 1 / sqrt(k) before the
z-scores). Tolerances for a difference between two runs (this machine and the reference's):
3 x sqrt(2) x the pooled SD (root mean variance over the models) of the noisiest task.

    python benchmarks/bench_downstream_spread.py [--seeds 0 1 2 3 4] [--params params.yaml]
    python benchmarks/bench_downstream_spread.py --from benchmarks/results/downstream_spread.json
        (summarise saved per-seed scores again under the current params.yaml)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
Scores = dict[int, dict[str, dict[str, float]]]  # seed -> model -> task -> score
MEASURES = ["reg_nh2015", "reg_b2021", "rsacv_nh2015", "rsacv_b2021"]


def measure(p: dict[str, Any], seeds: list[int]) -> tuple[Scores, float]:
    """One single-seed run of the probe protocol per model and seed (temporary outputs)."""
    from brainalign.cli import _layout, _model_digest, _run_models
    from brainalign.downstream.stages import run_downstream
    from brainalign.models.extract import parse_config, registry_embedder

    models = _run_models(p)
    layout = _layout(p)
    base = dict(p["downstream"]) | {"task_seeds": {}}
    extract = dict(p.get("extract") or {}) | {"models": models}
    scores: Scores = {}
    t0 = time.perf_counter()
    for model in models:
        embed, rate = registry_embedder(model, parse_config(extract), data_root=layout.root)
        for seed in seeds:
            with tempfile.TemporaryDirectory() as out:
                got = run_downstream(model, embed, rate, layout.tasks, None, out,
                                     base | {"seeds": [seed]}, cache_dir=REPO / "build" /
                                     "embeddings", progress=False,
                                     model_digest=_model_digest(p, model))
            scores.setdefault(seed, {})[model] = {t: float(v) for t, v in got.items()}
        print(f"{model}: {time.perf_counter() - t0:.0f} s", flush=True)
    return scores, time.perf_counter() - t0


def _overall(per_model: dict[str, dict[str, float]], models: list[str], tasks: list[str]
             ) -> dict[str, float]:
    z = {}
    for t in tasks:
        v = np.array([per_model[m][t] for m in models])
        sd = v.std(ddof=1)
        z[t] = (v - v.mean()) / sd if sd > 0 else np.zeros_like(v)
    return {m: float(np.mean([z[t][i] for t in tasks])) for i, m in enumerate(models)}


def summarise(scores: Scores, p: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """SDs per model and task, of Overall and of r(Overall, alignment), one seed and as
    configured, and the tolerances they imply."""
    from brainalign.downstream.config import DownstreamConfig
    from brainalign.report.correlations import pearson

    seeds = sorted(scores)
    models = list(scores[seeds[0]])
    tasks = list(scores[seeds[0]][models[0]])
    cfg = DownstreamConfig.from_params(p.get("downstream"))
    k = {t: len(cfg.seeds_for(t)) for t in tasks}

    def sd(values: list[float]) -> float:
        return float(np.std(values, ddof=1))

    # the configured protocol: each seed's deviation from the seed mean shrunk by 1/sqrt(k)
    mean = {m: {t: float(np.mean([scores[s][m][t] for s in seeds])) for t in tasks}
            for m in models}
    configured = {s: {m: {t: mean[m][t] + (scores[s][m][t] - mean[m][t]) / math.sqrt(k[t])
                          for t in tasks} for m in models} for s in seeds}
    out: dict[str, Any] = {"seeds": seeds, "models": models, "tasks": tasks,
                           "configured_seeds": k, "scores": {str(s): scores[s] for s in seeds}}
    for name, runs in (("one_seed", scores), ("configured", configured)):
        overall = {s: _overall(runs[s], models, tasks) for s in seeds}
        rows = {m: {t: sd([runs[s][m][t] for s in seeds]) for t in tasks} for m in models}
        for m in models:
            rows[m]["overall"] = sd([overall[s][m] for s in seeds])
        corr = {meas: sd([pearson(np.array([overall[s][m] for m in models]),
                                  np.array([report[m][meas] for m in models]))[0]
                          for s in seeds]) for meas in MEASURES}
        pooled = {t: float(np.sqrt(np.mean([rows[m][t] ** 2 for m in models]))) for t in tasks}
        pooled_overall = float(np.sqrt(np.mean([rows[m]["overall"] ** 2 for m in models])))
        out[name] = {
            "sd": rows, "pooled_sd": pooled, "pooled_sd_overall": pooled_overall,
            "sd_correlation_with_overall": corr,
            "max_sd": {"task": max(rows[m][t] for m in models for t in tasks),
                       "overall": max(rows[m]["overall"] for m in models),
                       "correlation": max(corr.values())},
            "tolerances": {"downstream_atol": 3 * math.sqrt(2) * max(pooled.values()),
                           "overall_atol": 3 * math.sqrt(2) * pooled_overall,
                           "correlation_atol": 3 * math.sqrt(2) * max(corr.values())},
        }
    return out


def markdown(result: dict[str, Any]) -> str:
    tasks, models = result["tasks"], result["models"]
    lines = [f"# Downstream spread over seeds {result['seeds']} (one machine)", ""]
    for name, title in (("one_seed", "SD of one seed's score"),
                        ("configured", "SD as configured (seeds per task: "
                         + ", ".join(f"{t} {k}" for t, k in result["configured_seeds"].items())
                         + "; SD / sqrt(k))")):
        r = result[name]
        lines += [f"## {title}", "", "| model | " + " | ".join(tasks) + " | Overall |",
                  "|---|" + "---|" * (len(tasks) + 1)]
        for m in models:
            lines.append(f"| {m} | " + " | ".join(f"{r['sd'][m][t]:.4f}" for t in tasks)
                         + f" | {r['sd'][m]['overall']:.4f} |")
        lines += ["", "Pooled SD per task (root mean variance over the models): "
                  + ", ".join(f"{t} {v:.4f}" for t, v in r["pooled_sd"].items())
                  + f"; Overall {r['pooled_sd_overall']:.4f}. Largest SD: task "
                  f"{r['max_sd']['task']:.4f}, Overall {r['max_sd']['overall']:.4f}. SD of "
                  "r(Overall, alignment measure): "
                  + ", ".join(f"{m} {v:.4f}" for m, v in r["sd_correlation_with_overall"].items())
                  + ".", "", "Tolerances (3 x sqrt(2) x SD, a difference of two runs): "
                  + ", ".join(f"{k} {v:.3f}" for k, v in r["tolerances"].items()) + ".", ""]
    if "seconds" in result:
        lines.append(f"Measured in {result['seconds']} s.")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--from", dest="saved", type=Path, default=None,
                    help="summarise the per-seed scores of a saved downstream_spread.json")
    args = ap.parse_args()
    os.chdir(REPO)
    from brainalign.atomic import write_json, write_text
    from brainalign.cli import _params

    p = _params(args.params)
    seconds = None
    if args.saved is not None:
        saved = json.loads(args.saved.read_text())
        scores = {int(s): v for s, v in saved["scores"].items()}
        seconds = saved.get("seconds")
    else:
        scores, seconds = measure(p, args.seeds)
    report = json.loads((REPO / "build" / "metrics" / "report.json").read_text())["models"]
    result = summarise(scores, p, report)
    if seconds is not None:
        result["seconds"] = round(seconds, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "downstream_spread.json", result)
    text = markdown(result)
    write_text(args.out / "downstream_spread.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
