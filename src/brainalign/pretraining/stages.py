"""The Fig. 5 stages: plain paths and the params.yaml dict in, files out.

- :func:`run_miniature` (DVC ``pretrain-mini``): the miniature pretraining of the embedded
  default -> ``build/pretraining/miniature/`` (checkpoints + ``miniature.json``).
- :func:`run_dynamics` (DVC ``dynamics``): every checkpoint of ``pretraining.checkpoints``
  scored (activations of the 165 sounds, layer-wise RSA per target), through the
  content-keyed cache ``build/pretraining/cache/`` (a persistent DVC output), so a run with more
  checkpoints scores only the new ones; writes ``build/pretraining/dynamics.{csv,parquet}``
  and the metric ``build/metrics/pretraining.json`` (first and final checkpoint).
- :func:`run_figure` (DVC ``figure5``): ``build/report/fig5.{pdf,png}`` and the float
  ``fig5.tex`` the paper inputs.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from brainalign.atomic import atomic_path, write_json, write_text
from brainalign.errors import InputError
from brainalign.pretraining.config import DATASETS, parse_params, parse_target
from brainalign.pretraining.table import metrics, tidy

log = logging.getLogger(__name__)

BUILD = Path("build")


def paths(build: str | Path = BUILD) -> dict[str, Path]:
    """Every output of the Fig. 5 stages under ``build``."""
    build = Path(build)
    return {
        "miniature": build / "pretraining" / "miniature",
        "cache": build / "pretraining" / "cache",
        "csv": build / "pretraining" / "dynamics.csv",
        "parquet": build / "pretraining" / "dynamics.parquet",
        "metrics": build / "metrics" / "pretraining.json",
        "figure": build / "report" / "fig5",
        "tex": build / "report" / "fig5.tex",
    }


def _layout(params: Mapping[str, Any]) -> Any:
    from brainalign.data.layout import DataLayout, DataParams
    from brainalign.params import section

    return DataLayout.from_params(section(DataParams, params.get("data"), "data"))


def run_miniature(params: Mapping[str, Any], out_dir: str | Path | None = None
                  ) -> dict[str, Any]:
    """Train the miniature (``pretraining.miniature``) into ``out_dir``; returns the manifest."""
    from brainalign.pretraining.miniature import train

    cfg = parse_params(params.get("pretraining"))
    return train(cfg.miniature, out_dir if out_dir is not None else paths()["miniature"])


def _context(run: Any, sounds: Any, layout: Any, extract_cfg: Any, rsa_config: Any,
             targets: list[str], device: Any) -> dict[str, Any]:
    """What a checkpoint's numbers depend on besides the checkpoint (the cache key)."""
    from brainalign.pretraining.score import code_digest, folder_digest, versions

    spec = run.spec
    datasets = sorted({parse_target(t)[0] for t in targets})
    return {
        "model": spec.name, "config": dict(spec.config), "layers": list(spec.layers),
        "extract": {"resampler": extract_cfg.resampler, "batch_size": extract_cfg.batch_size,
                    "threads": extract_cfg.threads, "seed": extract_cfg.seed,
                    "device": device.type, "options": extract_cfg.model_options(spec.name)},
        "stimuli": dict(zip(sounds.names, sounds.sha256, strict=True)),
        "fmri": {name: folder_digest(layout.fmri_folder(name)) for name in datasets},
        "rsa": {"eps": rsa_config.eps, "nan_policy": rsa_config.nan_policy},
        "targets": list(targets), "code": code_digest(), "versions": versions(),
    }


def run_dynamics(params: Mapping[str, Any], build: str | Path = BUILD,
                 registry: str | Path | None = None) -> dict[str, Any]:
    """Score every checkpoint (cached), write the tidy table and the metric; returns it."""
    import torch

    from brainalign.alignment.stages import parse_rsa_params
    from brainalign.data.stimuli import load_stimuli
    from brainalign.models.activations import save_activations
    from brainalign.models.encodecmae import PRETRAIN_MODEL
    from brainalign.models.extract import parse_config, resolve_device
    from brainalign.models.weights import sha256_file
    from brainalign.pretraining.checkpoints import discover
    from brainalign.pretraining.miniature import LABEL
    from brainalign.pretraining.score import (
        ResultCache,
        SharedFrontEnd,
        cache_key,
        make_targets,
        score_checkpoint,
    )

    out = paths(build)
    cfg = parse_params(params.get("pretraining"))
    layout = _layout(params)
    rsa_config, _ = parse_rsa_params(params.get("rsa"))
    extract_cfg = parse_config({**dict(params.get("extract") or {}), "models": [PRETRAIN_MODEL]})
    run = discover(cfg.checkpoints, layout.root, registry)
    needed = [d for d in DATASETS if any(parse_target(t)[0] == d for t in cfg.targets)]
    datasets = {name: layout.voxel_dataset(name) for name in needed}
    targets = make_targets(cfg.targets, datasets)
    simulated = any(ds.simulated for ds in datasets.values())
    sounds = load_stimuli(layout.wav_dir, layout.labels_csv, sample_rate=run.spec.sample_rate,
                          source_rate=None, resampler=extract_cfg.resampler)
    for ds in datasets.values():
        if tuple(ds.stimuli) != tuple(sounds.names):
            raise InputError(ds.source, "the sound order differs from the stimuli's")
    device = resolve_device(extract_cfg.device)
    context = _context(run, sounds, layout, extract_cfg, rsa_config, list(cfg.targets), device)
    cache = ResultCache(out["cache"])
    front_end = SharedFrontEnd()
    rows: list[dict[str, Any]] = []
    fresh = 0
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    try:
        for ckpt in run.checkpoints:
            sha = ckpt.sha256 or sha256_file(ckpt.path)
            key = cache_key(sha, context)
            entry = cache.get(key)
            keep = cache.activations_path(key, ckpt.step)
            if entry is None or (cfg.keep_activations and not keep.is_file()):
                scores, acts = score_checkpoint(dataclasses.replace(ckpt, sha256=sha), run.spec,
                                                sounds, targets, extract_cfg, rsa_config,
                                                device, front_end)
                entry = {"step": ckpt.step, "checkpoint": ckpt.name, "sha256": sha,
                         "origin": ckpt.origin, "rows": scores}
                cache.put(key, entry)
                if cfg.keep_activations:
                    save_activations(keep, acts)
                fresh += 1
            for r in entry["rows"]:
                rows.append({
                    "step": ckpt.step, "checkpoint": ckpt.name, "sha256": sha,
                    "layer": r["layer"], "layer_label": str(int(r["layer"]) + 1),
                    "target": r["target"], "dataset": r["dataset"], "roi": r["roi"],
                    "mean_rho": r["mean_rho"], "sd_rho": r["sd_rho"],
                    "n_subjects": r["n_subjects"], "source": run.kind,
                    "miniature": run.miniature, "simulated_voxels": simulated,
                })
    finally:
        torch.set_num_threads(threads)
    log.info("dynamics: %d checkpoints (%d scored now, %d from the cache) in %.1f s",
             len(run.checkpoints), fresh, len(run.checkpoints) - fresh, time.perf_counter() - t0)
    table = tidy(rows)
    with atomic_path(out["csv"]) as tmp:
        table.to_csv(tmp, index=False, float_format="%.10g")
    with atomic_path(out["parquet"]) as tmp:
        table.to_parquet(tmp, index=False)
    info = {"source": run.kind, "miniature": run.miniature, "simulated_voxels": simulated,
            "label": LABEL if run.miniature else run.kind, "model": run.spec.name,
            "checkpoints": str(cfg.checkpoints), "targets": list(cfg.targets),
            "layers": list(run.spec.layers)}
    summary = metrics(table, info)
    write_json(out["metrics"], summary)
    return summary


def run_figure(params: Mapping[str, Any], build: str | Path = BUILD) -> list[Path]:
    """Fig. 5 from the tidy table: PDF, PNG and the LaTeX float."""
    import pandas as pd

    from brainalign.outputs import damaged
    from brainalign.report.figure5 import caption, figure5, figure_tex

    out = paths(build)
    cfg = parse_params(params.get("pretraining"))
    if not out["parquet"].is_file():
        raise InputError(out["parquet"], "not found (run `dvc repro dynamics`)")
    try:
        table = pd.read_parquet(out["parquet"])
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        raise damaged(out["parquet"], exc, "table") from None
    layers = set(table["layer"])
    missing = [k for k in (*cfg.layers_a, *cfg.layers_b) if k not in layers]
    if missing:
        raise InputError("params.yaml: pretraining.layers_a/layers_b",
                         f"layer keys {missing} are not in the table (has {sorted(layers)})")
    miniature = bool(table["miniature"].any())
    simulated = bool(table["simulated_voxels"].any())
    files, used = figure5(table, out["figure"], cfg.layers_a, cfg.layers_b,
                         cfg.smoothing_window, cfg.smoothing_order, miniature=miniature,
                         simulated=simulated)
    steps = sorted(table["step"].unique())
    text = caption(len(steps), int(steps[0]), int(steps[-1]), cfg.layers_a, cfg.layers_b,
                   cfg.smoothing_window, cfg.smoothing_order, used, miniature=miniature,
                   simulated=simulated, source=str(table["source"].iloc[0]))
    write_text(out["tex"], figure_tex(text))
    return [*files, out["tex"]]
