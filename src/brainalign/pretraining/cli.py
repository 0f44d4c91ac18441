"""``brainalign pretraining ...``: the Fig. 5 commands (the DVC stages call these).

Registered on the main command line as a typer sub-app; nothing heavy is imported until a
command runs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Fig. 5: brain similarity across EnCodecMAE pretraining (miniature run or the 100 "
         "published checkpoints).",
    no_args_is_help=True,
)
log = logging.getLogger("brainalign")

ParamsOpt = Annotated[Path, typer.Option("--params", help="Parameter file.")]


def _params(path: Path) -> dict:
    from brainalign.params import load_params

    return load_params(path)


@app.command("mini")
def mini(params: ParamsOpt = Path("params.yaml")) -> None:
    """Train the miniature EnCodecMAE (embedded default) -> build/pretraining/miniature/."""
    from brainalign.pretraining.stages import run_miniature

    manifest = run_miniature(_params(params))
    last = manifest["checkpoints"][-1]
    log.info("miniature pretraining: %d checkpoints, steps 0-%d, %d parameters, final loss "
             "%.4f (miniature pretraining, simulated voxels downstream)",
             len(manifest["checkpoints"]), last["step"], manifest["parameters"],
             last["loss"] or float("nan"))


@app.command("score")
def score(params: ParamsOpt = Path("params.yaml")) -> None:
    """Score every checkpoint of pretraining.checkpoints: layer-wise RSA per target (cached)."""
    from brainalign.pretraining.stages import run_dynamics

    summary = run_dynamics(_params(params))
    final = summary["final"]
    for target, best in final["max_layer"].items():
        log.info("step %d, %s: best layer %s, rho %.4f", final["step"], target, best["layer"],
                 best["rho"] if best["rho"] is not None else float("nan"))


@app.command("figure")
def figure(params: ParamsOpt = Path("params.yaml")) -> None:
    """Fig. 5 (PDF, PNG) and its LaTeX float from build/pretraining/dynamics.parquet."""
    from brainalign.pretraining.stages import run_figure

    for path in run_figure(_params(params)):
        log.info("wrote %s", path)


@app.command("list")
def list_checkpoints(params: ParamsOpt = Path("params.yaml")) -> None:
    """List the checkpoints pretraining.checkpoints holds (step, file, pinned sha256)."""
    from brainalign.pretraining.checkpoints import discover
    from brainalign.pretraining.config import parse_params
    from brainalign.pretraining.stages import _layout

    p = _params(params)
    cfg = parse_params(p.get("pretraining"))
    run = discover(cfg.checkpoints, _layout(p).root)
    typer.echo(f"{run.folder}: {len(run.checkpoints)} checkpoints ({run.kind}, model "
               f"{run.spec.name}, {len(run.spec.layers)} layers)")
    for c in run.checkpoints:
        typer.echo(f"  step {c.step:>7d}  {c.name}  {(c.sha256 or 'sha256 not pinned')[:16]}")
