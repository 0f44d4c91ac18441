"""The ``brainalign`` command line: one subcommand per pipeline step (DVC stages call these)."""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from brainalign import __version__
from brainalign.errors import InputError
from brainalign.provenance import lock_sha256, source_sha256

app = typer.Typer(
    help="Score audio models against human auditory cortex (Pepino et al., 2025).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("brainalign")

ParamsOpt = Annotated[Path, typer.Option("--params", help="Parameter file.")]


def _git_head() -> str | None:
    """HEAD of the git checkout holding this code (``-dirty`` with tracked changes), or None."""
    where = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                             text=True, check=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=where, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("-dirty" if dirty.strip() else "")


def git_commit(image: str | None = None) -> str:
    """The git commit of the code that runs.

    In the Docker image $BRAINALIGN_GIT_COMMIT (``image``) is the commit the image was built
    from; it is the answer when the image's own copy runs (its build outputs are not in the
    image, so git would call it dirty). When a checkout is mounted over it
    (``make docker-demo``), git's HEAD of that checkout is the code that runs and wins.
    """
    head = _git_head()
    if image and (head is None or head.removesuffix("-dirty") == image):
        return image
    return head or "unknown"


def version_string() -> str:
    """``brainalign <version>, git <commit>[, image <commit>], source sha256 <hash>, uv.lock
    sha256 <hash>``: the last two are what the manuscript's title page names (content digests)."""
    image = os.environ.get("BRAINALIGN_GIT_COMMIT")
    commit = git_commit(image)
    parts = [f"brainalign {__version__}", f"git {commit}"]
    if image and image != commit:
        parts.append(f"image {image}")
    parts.append(f"source sha256 {source_sha256()}")
    lock = lock_sha256()
    if lock:
        parts.append(f"uv.lock sha256 {lock}")
    return ", ".join(parts)


def _version(value: bool) -> None:
    if value:
        typer.echo(version_string())
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print the version and git commit, then exit.",
        ),
    ] = False,
) -> None:
    """Score audio models against human auditory cortex (Pepino et al., 2025)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("fontTools", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _params(path: Path) -> dict:
    from brainalign.params import load_params

    return load_params(path)


def _layout(params: dict):
    from brainalign.data.layout import DataLayout, DataParams
    from brainalign.params import section

    return DataLayout.from_params(section(DataParams, params.get("data"), "data"))


@app.command()
def fetch(
    params: ParamsOpt = Path("params.yaml"),
    group: Annotated[
        list[str] | None,
        typer.Option(
            "--group", "-g",
            help="github | lab | hear | weights | reference | pretraining (repeatable); "
                 "default: params data.fetch.",
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model", "-m",
            help="With the weights group: only these models' checkpoints (repeatable); "
                 "default: the models of params.yaml.",
        ),
    ] = None,
    mirror: Annotated[
        Path | None,
        typer.Option(
            "--mirror", help="Mirror root laid out as <host>/<path>; default $BRAINALIGN_MIRROR."
        ),
    ] = None,
    track: Annotated[
        bool,
        typer.Option("--dvc/--no-dvc", help="Record data/ in data.dvc afterwards (`dvc add`)."),
    ] = True,
) -> None:
    """Fetch the raw inputs into the data root (checksums verified), then simulate if configured.

    The weights group places each model's checkpoints in data/weights/<model>/ (trust on first
    use: the first download records its sha256 in the registry; commit that file).
    """
    from brainalign.data.fetch import fetch as do_fetch
    from brainalign.data.layout import DataParams
    from brainalign.params import section

    p = _params(params)
    data = section(DataParams, p.get("data"), "data")
    groups = tuple(group) if group else data.fetch
    models_ = None
    if "weights" in groups:
        from brainalign.models.registry import get_spec

        models_ = list(model) if model else _run_models(p)
        for name in models_:
            get_spec(name, where="--model")
    elif model:
        raise InputError("--model", "only applies to the weights group (add --group weights)")
    placed = do_fetch(groups, data.root, mirror, models=models_)
    log.info("fetched %d inputs (%s) into %s", len(placed), ", ".join(groups), data.root)
    if _layout(p).needs_simulation and "github" in groups:  # the simulation reads the components
        _simulate(p)
    if track:
        _dvc_track(Path(data.root))


def _dvc_track(root: Path) -> None:
    """Record data/ in data.dvc (and the DVC cache) so DVC versions the raw inputs."""
    dvc_file = root.with_name(root.name + ".dvc")
    if not Path(".dvc").is_dir():
        log.info("not a DVC repository here: skipping `dvc add %s`", root)
        return
    before = dvc_file.read_text() if dvc_file.is_file() else None
    subprocess.run(["dvc", "add", "-q", str(root)], check=True)
    if dvc_file.read_text() != before:
        log.warning("%s now records a different version of %s/: commit it", dvc_file, root)
    else:
        log.info("%s/ matches %s (tracked and clean)", root, dvc_file)


def _simulate(p: dict) -> None:
    from brainalign.data.components import load_components
    from brainalign.data.fetch import sha256_of
    from brainalign.data.simulate import SimulateParams, simulate_release
    from brainalign.data.stimuli import canonical_names, read_category_labels
    from brainalign.params import section

    layout = _layout(p)
    sim = section(SimulateParams, p.get("simulate"), "simulate")
    comp = load_components(layout.components)
    labels = read_category_labels(layout.labels_csv)
    summary = simulate_release(
        comp,
        [labels[n] for n in canonical_names()],
        layout.simulated_root,
        sim,
        components_sha256=sha256_of(layout.components),
    )
    for name, info in summary.items():
        log.info("simulated %s: %s (SIMULATED voxels, not the lab's data)", name, info)


@app.command()
def simulate(params: ParamsOpt = Path("params.yaml")) -> None:
    """Write the simulated NH2015/B2021 stand-ins (lab-release format) from the real components."""
    _simulate(_params(params))


@app.command()
def check(params: ParamsOpt = Path("params.yaml")) -> None:
    """Load and validate every configured input; print a one-line summary of each."""
    from brainalign.data.components import load_components
    from brainalign.data.folds import load_folds

    p = _params(params)
    layout = _layout(p)
    _check_params(p)
    _check_models(p, layout.root)
    _check_checksums(p, layout.root)
    stim = layout.stimulus_set()
    order = "canonical order" if layout.canonical_stimuli else "the dataset's own order"
    typer.echo(f"stimuli: {len(stim)} sounds at {stim.sample_rate} Hz in {stim.source}, {order}")
    folds = load_folds(layout.folds)
    typer.echo(
        f"folds: {len(folds)} sounds, counts {list(map(int, __import__('numpy').bincount(folds)))}"
    )
    comp = load_components(layout.components)
    typer.echo(f"components: R {comp.responses.shape}, W {comp.weights.shape}")
    for name, ds in layout.voxel_datasets().items():
        tag = "SIMULATED" if ds.simulated else ("lab release" if ds.format == "lab" else "")
        tag = ", ".join(t for t in (tag, "NIfTI" if ds.format == "nifti" else "") if t)
        typer.echo(
            f"{name}: {ds.n_voxels} voxels, {len(ds.subjects)} subjects, "
            f"{int((~ds.complete_voxels()).sum())} with NaN ({tag})"
        )


def _check_params(p: dict) -> None:
    """Every section of params.yaml through its validator (unknown keys, types, ranges)."""
    from brainalign.alignment.stages import parse_regression_params, parse_rsa_params
    from brainalign.data.layout import DataParams
    from brainalign.data.simulate import SimulateParams
    from brainalign.downstream.config import DownstreamConfig
    from brainalign.downstream.mini_tasks import MiniTasksConfig
    from brainalign.models.extract import parse_config
    from brainalign.params import section
    from brainalign.report.verify import VerifyConfig

    section(DataParams, p.get("data"), "data")
    section(SimulateParams, p.get("simulate"), "simulate")
    parse_config(_extract_section(p))
    parse_regression_params(p.get("regression"))
    parse_rsa_params(p.get("rsa"))
    MiniTasksConfig.from_params(p.get("mini_tasks"))
    DownstreamConfig.from_params(p.get("downstream"))
    section(VerifyConfig, p.get("verify"), "verify")
    from brainalign.pretraining.config import parse_params as parse_pretraining

    parse_pretraining(p.get("pretraining"))
    from brainalign.cluster.config import parse_cluster

    parse_cluster(p.get("cluster"))
    known = {"data", "simulate", "models", "extract", "regression", "rsa", "mini_tasks",
             "downstream", "verify", "pretraining", "cluster"}
    unknown = sorted(set(p) - known)
    if unknown:
        raise InputError(f"params.yaml: {unknown[0]}", f"unknown section; expected some of "
                         f"{sorted(known)}")
    typer.echo(f"params.yaml: {len(p)} sections valid")


def _check_checksums(p: dict, root: Path) -> None:
    """The fetched inputs of the configured groups match the registry's sha256."""
    from brainalign.data.fetch import load_registry, sha256_of
    from brainalign.data.layout import DataParams
    from brainalign.params import section

    groups = [g for g in section(DataParams, p.get("data"), "data").fetch if g != "weights"]
    for group in groups:
        files: list[tuple[str, str | None]] = []
        for e in (e for e in load_registry() if e.group == group):
            if e.listing is not None:  # a Hub folder: its resolved files (none before a fetch)
                files += [(f.path, f.sha256) for f in e.listing.files] or [(e.path, None)]
            else:
                files.append((e.path, e.sha256))
        present = [(path, sha) for path, sha in files if (root / path).is_file()]
        for path, sha in present:
            if sha is not None and sha256_of(root / path) != sha:
                raise InputError(root / path, f"does not match the registry's sha256 {sha} "
                                 "(run `brainalign fetch` to replace it)")
        typer.echo(f"{group}: {len(present)} of {len(files)} files present, checksums verified")


def _check_models(p: dict, root: Path) -> None:
    """The run's models are registered, their DVC dependencies are the registry's, and their
    fetched weights (when present) match the registry's sha256."""
    from brainalign.models.registry import get_spec, stage_dependencies
    from brainalign.models.weights import fetched_files, sha256_file, weights_dir

    for name in _run_models(p):
        spec = get_spec(name, where=f"params.yaml: models.{name}")
        expected = stage_dependencies(name, str(root))
        if p["models"][name] != expected:
            raise InputError(f"params.yaml: models.{name}",
                             f"expected {expected} (the model's own DVC dependencies), got "
                             f"{p['models'][name]}")
        if not spec.fetched:
            continue
        files, folder = fetched_files(name), weights_dir(root, name)
        missing = [f for f in files if not (folder / f).is_file()]
        bad = [f for f in files if f not in missing and files[f]["sha256"] is not None
               and sha256_file(folder / f) != files[f]["sha256"]]
        if bad:
            raise InputError(folder / bad[0], "does not match the registry's sha256")
        state = (f"{len(files)} weight file(s) verified" if not missing else
                 f"{len(missing)} of {len(files)} weight file(s) not fetched yet "
                 "(brainalign fetch --group weights)")
        typer.echo(f"model {name}: {state}")


def _model_key(name: str) -> str:
    """A model's params.yaml key: ``hear:<module>`` is spelled ``hear-<module>`` there."""
    from brainalign.models.hear import model_key

    return model_key(name)


ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="Model name (see `brainalign models`).",
                      callback=_model_key)
]
BUILD = Path("build")


def _run_models(params: dict) -> list[str]:
    """The run's model names: the keys of params.yaml ``models``."""
    models = params.get("models")
    if not isinstance(models, dict) or not models:
        raise InputError(
            "params.yaml: models", "expected a mapping of model name -> {code, frontend, weights}"
        )
    return list(models)


def _require_run_model(params: dict, model: str) -> None:
    """``model`` must be one of params.yaml ``models``; the error says how to get there."""
    from brainalign.models.registry import get_spec

    run = _run_models(params)
    if model in run:
        return
    get_spec(model, where="--model")  # unknown: suggests the closest registered names
    raise InputError("--model", f"{model!r} is registered but not in params.yaml models "
                     f"({', '.join(run)}); add it with `brainalign add-model {model}`")


def _extract_section(params: dict) -> dict:
    section_ = dict(params.get("extract") or {})
    section_["models"] = _run_models(params)
    return section_


def _activations(model: str) -> Path:
    return BUILD / "activations" / f"{model}.npz"


def _write_metrics(kind: str, name: str, metrics: dict) -> Path:
    """Per-step metrics for `dvc metrics` (build/metrics/<kind>/<name>.json)."""
    from brainalign.atomic import write_json

    path = BUILD / "metrics" / kind / f"{name}.json"
    write_json(path, metrics)
    return path


def _datasets(params: dict) -> dict:
    """The voxel datasets of the configured source (NH2015 and B2021 of the lab-release format,
    or those of the NIfTI description), loaded and validated."""
    return _layout(params).voxel_datasets()


@app.command()
def models(
    weights: Annotated[
        bool, typer.Option("--weights/--no-weights", help="Also list each model's weight files.")
    ] = True,
) -> None:
    """List every registered model: family, training, rate, layers, weight sources."""
    from brainalign.models.registry import get_spec, model_names
    from brainalign.models.weights import describe_sources

    for name in model_names():
        spec = get_spec(name)
        typer.echo(
            f"{name:36s} {spec.family:13s} {spec.training:16s} {spec.sample_rate:6d} Hz  "
            f"{len(spec.layers):2d} layers  {spec.label}"
        )
        if not weights:
            continue
        if spec.weights is not None:
            typer.echo(f"    {spec.weights.distribution or spec.weights.package}=="
                       f"{spec.weights.version} {spec.weights.path}")
        for line in describe_sources(name) if spec.fetched else []:
            typer.echo(f"    {line}")


@app.command("add-model")
def add_model(
    name: Annotated[list[str], typer.Argument(help="Registered model names (`brainalign "
                                               "models`) or hear:<module>.")],
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Add models to params.yaml `models` with their own DVC dependencies (then `dvc repro`)."""
    from brainalign.models.hear import model_key
    from brainalign.models.registry import get_spec, stage_dependencies
    from brainalign.params import edit_params

    p = _params(params)
    root = str(_layout(p).root)
    for model in name:
        get_spec(model, where=model)
    keys = [model_key(m) for m in name]  # hear:<module> -> hear-<module> (file-name safe)

    def add(doc) -> None:
        for model in keys:
            if model in doc["models"]:
                log.info("%s is already in params.yaml", model)
                continue
            doc["models"][model] = stage_dependencies(model, root)
            log.info("added %s: %s", model, doc["models"][model])

    edit_params(params, add)


@app.command()
def extract(model: ModelOpt, params: ParamsOpt = Path("params.yaml")) -> None:
    """Run one model on the 165 sounds: one time-averaged vector per layer and sound (NPZ)."""
    from brainalign.models.extract import run_extract

    p = _params(params)
    _require_run_model(p, model)
    layout = _layout(p)
    info = run_extract(
        model, layout.wav_dir, layout.labels_csv, _activations(model), _extract_section(p),
        data_root=layout.root, stimuli=layout.stimulus_set(),
    )
    # Timings are logged, not recorded as metrics: two runs must give identical metrics.
    _write_metrics(
        "extract",
        model,
        {
            "model": info["model"],
            "n_sounds": info["n_sounds"],
            "layer_dims": info["layer_dims"],
            "weights_sha256": info.get("weights"),
        },
    )
    log.info("extracted %s: %d layers in %.1f s", model, len(info["layers"]), info["seconds"])


@app.command("verify-activations")
def verify_activations_cmd(
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Models to compare (repeatable); default: the run's "
                     "models that have a counterpart in the archive."),
    ] = None,
    archive: Annotated[
        Path | None,
        typer.Option("--archive", help="model_actv.tar (or its unpacked folder); default: "
                     "<data root>/downloads/model_actv.tar (brainalign fetch -g reference)."),
    ] = None,
    min_r: Annotated[float, typer.Option("--min-r", help="A layer fails below this Pearson r.")
                     ] = 0.99,
    max_rel_diff: Annotated[
        float | None,
        typer.Option("--max-rel-diff", help="A layer also fails above this max |ours - theirs| / "
                     "max |theirs| (default: reported only)."),
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Compare our activations with Tuckute et al. 2023's published ones, layer by layer.

    Prints and writes build/verify_activations/verify_activations.{csv,json}; exit code 1 when a
    layer disagrees beyond the tolerance (or is missing, or has another shape).
    """
    from brainalign.models.reference import (
        TUCKUTE_FOLDERS,
        format_table,
        verify_activations,
        write_report,
    )

    p = _params(params)
    names = list(model) if model else [m for m in _run_models(p) if m in TUCKUTE_FOLDERS]
    if not names:
        raise InputError("--model", "none of the run's models has a counterpart in Tuckute et "
                         "al.'s archive; name one with --model")
    path = archive or _layout(p).root / "downloads" / "model_actv.tar"
    rows = verify_activations(path, [_activations(m) for m in names], min_r, max_rel_diff)
    for line in format_table(rows):
        typer.echo(line)
    csv, _ = write_report(rows, BUILD / "verify_activations")
    bad = [r for r in rows if r.verdict != "ok"]
    typer.echo(f"{len(rows) - len(bad)} of {len(rows)} layers within tolerance "
               f"(r >= {min_r}{f', rel <= {max_rel_diff}' if max_rel_diff is not None else ''}); "
               f"report: {csv}")
    if bad:
        raise typer.Exit(1)


@app.command()
def regress(model: ModelOpt, params: ParamsOpt = Path("params.yaml")) -> None:
    """Nested-CV ridge of one model on NH2015, B2021 and the six NH2015 components."""
    from brainalign.alignment.stages import run_regression
    from brainalign.data.components import load_components
    from brainalign.data.folds import load_folds

    p = _params(params)
    _require_run_model(p, model)
    layout = _layout(p)
    datasets = _datasets(p)
    targets: dict = dict(datasets)
    if layout.canonical_stimuli:  # the components are responses to the canonical 165 sounds
        targets["NH2015comp"] = load_components(layout.components)
    out = BUILD / "regression" / model
    summary: dict = {"model": model, "simulated_voxels": layout.simulated}
    for name, target in targets.items():
        log.info("regression: %s on %s", model, name)
        folds = layout.folds_of(target) if name in datasets else load_folds(layout.folds)
        summary[name] = run_regression(
            _activations(model), target, folds, p.get("regression"), out / name
        )
    _write_metrics("regression", model, _headline_regression(summary))


def _headline_regression(summary: dict) -> dict:
    keep = {"model", "simulated_voxels"}
    out = {k: summary[k] for k in keep}
    for name in ("NH2015", "B2021"):
        m = summary.get(name, {})
        out[name] = {k: m[k] for k in ("mean_r2", "sem_r2", "n_subjects") if k in m}
    comp = summary.get("NH2015comp", {})
    out["NH2015comp"] = comp.get("r2", comp)
    return out


@app.command()
def rsa(model: ModelOpt, params: ParamsOpt = Path("params.yaml")) -> None:
    """Layer-wise (max over layers) and cross-validated RSA of one model on NH2015 and B2021."""
    from brainalign.alignment.stages import run_rsa

    p = _params(params)
    _require_run_model(p, model)
    layout = _layout(p)
    summary: dict = {"model": model, "simulated_voxels": layout.simulated}
    for name, ds in _datasets(p).items():
        log.info("RSA: %s on %s", model, name)
        summary[name] = run_rsa(
            _activations(model), ds, layout.folds_of(ds), p.get("rsa"),
            BUILD / "rsa" / model / name
        )
    _write_metrics("rsa", model, summary)


@app.command()
def topline(params: ParamsOpt = Path("params.yaml")) -> None:
    """RSA noise ceiling: each subject's RDM vs the mean RDM of the other subjects."""
    from brainalign.alignment.stages import run_topline

    p = _params(params)
    summary: dict = {"simulated_voxels": _layout(p).simulated}
    for name, ds in _datasets(p).items():
        summary[name] = run_topline(ds, p.get("rsa"), BUILD / "topline" / name)
    _write_metrics("topline", "topline", summary)


@app.command("build-tasks")
def build_tasks(params: ParamsOpt = Path("params.yaml")) -> None:
    """Build the offline HEAR-format mini tasks (nat165-category, synth-pitch, synth-multilabel)."""
    from brainalign.downstream.stages import run_build_mini_tasks

    p = _params(params)
    layout = _layout(p)
    counts = run_build_mini_tasks(
        layout.github_wav_dir, layout.labels_csv, layout.folds, layout.tasks, p.get("mini_tasks")
    )
    log.info("built mini tasks under %s: %s", layout.tasks, counts)


def _model_digest(p: dict, model: str) -> str:
    """sha256 over what fixes a model's embeddings: its DVC dependency files (code, front end,
    weights), the shared extraction code and the extract settings."""
    import hashlib
    import json

    from brainalign.models.weights import sha256_file

    deps = dict(p["models"][model])
    files = [Path(deps[k]) for k in ("code", "frontend")] + [
        Path("src/brainalign/models") / f for f in ("base.py", "extract.py", "activations.py")
    ] + [Path("src/brainalign/data/stimuli.py")]
    weights = Path(deps["weights"])
    if weights.is_dir():
        files += sorted(f for f in weights.rglob("*") if f.is_file())
    elif weights.is_file():
        files.append(weights)
    ext = dict(p.get("extract") or {})
    settings = {k: ext.get(k) for k in ("device", "resampler", "batch_size", "seed", "threads")}
    settings["options"] = (ext.get("options") or {}).get(model)
    h = hashlib.sha256(json.dumps({"model": model, **settings}, sort_keys=True,
                                  default=str).encode())
    for f in files:
        h.update(f"{f}:{sha256_file(f) if f.is_file() else 'absent'}\n".encode())
    return h.hexdigest()


@app.command()
def downstream(model: ModelOpt, params: ParamsOpt = Path("params.yaml")) -> None:
    """Probe one model on the configured HEAR-format tasks (16-config grid, k-fold rules)."""
    from brainalign.downstream.config import DownstreamConfig
    from brainalign.downstream.embeddings import seed_cache_from_activations
    from brainalign.downstream.hear_tasks import load_task
    from brainalign.downstream.mini_tasks import NAT165
    from brainalign.downstream.stages import run_downstream
    from brainalign.models.activations import load_activations
    from brainalign.models.extract import parse_config, registry_embedder

    p = _params(params)
    _require_run_model(p, model)
    layout = _layout(p)
    cfg = DownstreamConfig.from_params(p.get("downstream"))
    embed, rate = registry_embedder(model, parse_config(_extract_section(p)),
                                    data_root=_layout(p).root)
    out = BUILD / "downstream" / model
    # The embedding cache lives outside the stage's DVC output (DVC deletes outputs before a
    # rerun): an interrupted stage resumes from its finished shards. Its fingerprint carries
    # the model's own inputs, so a changed model never reuses old embeddings.
    cache = BUILD / "embeddings"
    digest = _model_digest(p, model)
    if NAT165 in cfg.tasks and _activations(model).is_file() and layout.canonical_stimuli:
        acts = load_activations(_activations(model))
        task = load_task(layout.tasks / NAT165, cfg.unseen_labels)
        seed_cache_from_activations(task, acts.layers, acts.stimuli, model, rate, cache,
                                    dtype=cfg.embed_dtype, model_digest=digest)
    scores = run_downstream(
        model, embed, rate, layout.tasks, None, out, p.get("downstream"), cache_dir=cache,
        model_digest=digest,
    )
    _write_metrics("downstream", model, {"model": model, **scores})


@app.command()
def overall(params: ParamsOpt = Path("params.yaml")) -> None:
    """Overall downstream score: each task's score z-scored across the run's models, averaged."""
    from brainalign.downstream.stages import run_overall

    p = _params(params)
    files = {m: BUILD / "downstream" / m / "metrics.json" for m in _run_models(p)}
    result = run_overall(files, BUILD / "overall" / "overall.json")
    _write_metrics("downstream", "overall", result)


REPORT = BUILD / "report"


def _table(params: dict):
    """The aggregate table written by `brainalign aggregate`."""
    import pandas as pd

    from brainalign.outputs import damaged

    path = REPORT / "models.parquet"
    if not path.is_file():
        raise InputError(path, "aggregate table not found (run `brainalign aggregate`)")
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        raise damaged(path, exc, "table") from None


def _read_json(path: Path) -> dict:
    """A JSON output of an earlier stage, with one clear error when missing or damaged."""
    import json

    from brainalign.outputs import damaged, stage_of

    if not path.is_file():
        stage = stage_of(path)
        raise InputError(path, f"not found (run `dvc repro {stage}`)" if stage else "not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise damaged(path, exc, "JSON file") from None


def _tasks(params: dict) -> list[str]:
    from brainalign.downstream.config import DownstreamConfig

    return list(DownstreamConfig.from_params(params.get("downstream")).tasks)


@app.command()
def aggregate(params: ParamsOpt = Path("params.yaml")) -> None:
    """One tidy table of every model of the run (CSV + Parquet) and headline metrics."""
    from brainalign.atomic import atomic_path, write_json
    from brainalign.report.aggregate import aggregate as build_table
    from brainalign.report.aggregate import headline, topline

    p = _params(params)
    table = build_table(_run_models(p), BUILD / "metrics", BUILD / "overall" / "overall.json")
    top = topline(BUILD / "metrics")
    with atomic_path(REPORT / "models.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.10g")
    with atomic_path(REPORT / "models.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    write_json(REPORT / "topline.json", top)
    write_json(BUILD / "metrics" / "report.json", headline(table, top))
    log.info("aggregate table: %d models x %d columns", *table.shape)


def _correlation_metrics(table, corr, simulated: bool) -> dict:
    """The correlations as DVC metrics: Table 1 (r and n per subset, measure, task), the Fig. 3
    pairs and the Fig. 6 pairs (r, p), rounded to 1e-6."""
    from brainalign.report import published
    from brainalign.report.correlations import pairwise

    def rnd(x: float) -> float | None:
        return None if x != x else round(float(x), 6)

    out: dict = {"simulated_voxels": simulated, "table1": {}}
    for row in corr.itertuples():
        out["table1"].setdefault(row.subset, {}).setdefault(row.measure, {})[row.task] = rnd(row.r)
    out["n"] = {sub: int(corr[corr.subset == sub]["n"].max()) for sub in corr["subset"].unique()}
    pairs = pairwise(table, list(published.FIG3))
    out["fig3"] = {f"{r.x}~{r.y}": rnd(r.r) for r in pairs.itertuples()}
    fig6 = pairwise(table, [("overall", m) for m in published.FIG6])
    out["fig6"] = {r.y: {"r": rnd(r.r), "p": None if r.p != r.p else float(f"{r.p:.3g}")}
                   for r in fig6.itertuples()}
    return out


@app.command()
def correlate(params: ParamsOpt = Path("params.yaml")) -> None:
    """Table 1 (LaTeX + CSV) and Figs. 3, 6 and S2: alignment vs downstream correlations."""
    from brainalign.atomic import atomic_path, write_text
    from brainalign.report import figures, published
    from brainalign.report.correlations import correlation_table
    from brainalign.report.tables import table1_latex, table1_wide

    p = _params(params)
    table = _table(p)
    simulated = bool(table["simulated_voxels"].any())
    tasks = _tasks(p)
    columns = {t: f"dsz_{t}" for t in tasks} | {"Overall": "overall"}
    corr = correlation_table(table, list(published.MEASURES), columns)
    with atomic_path(REPORT / "correlations.csv") as tmp:
        corr.assign(simulated_voxels=simulated).to_csv(tmp, index=False, float_format="%.10g")
    wide = table1_wide(corr, published.MEASURE_LABELS, list(columns))
    with atomic_path(REPORT / "table1.csv") as tmp:
        wide.assign(simulated_voxels=simulated).to_csv(tmp, index=False, float_format="%.10g")
    _write_metrics("", "correlations", _correlation_metrics(table, corr, simulated))
    caption = (
        "Reproduces Table~1 of the paper. Pearson r between each alignment measure and each "
        "downstream score (task z-scores and Overall) over the models of this run; cells shaded "
        "by two-sided p (dark: p < .01, light: p < .05); row maximum in bold. \\simtag"
    )
    produced = r"\producedby{correlate}{build/report/models.parquet}"
    write_text(
        REPORT / "table1.tex",
        table1_latex(corr, published.MEASURE_LABELS, list(columns), caption,
                     produced_by=produced),
    )
    figures.figure3(table, REPORT / "fig3", simulated)
    figures.figure6(table, REPORT / "fig6", simulated)
    figures.figure_s2(table, REPORT / "figS2", simulated)


@app.command("figures")
def figures_cmd(params: ParamsOpt = Path("params.yaml")) -> None:
    """Figs. 2 and 4: alignment per model (regression, RSA, components)."""

    from brainalign.report import figures

    p = _params(params)
    table = _table(p)
    simulated = bool(table["simulated_voxels"].any())
    top = _read_json(REPORT / "topline.json")
    figures.figure2(table, top, REPORT / "fig2", simulated)
    figures.figure4(table, REPORT / "fig4", simulated)


@app.command()
def compare(params: ParamsOpt = Path("params.yaml")) -> None:
    """Reproduced vs published: every published number with a counterpart in this run."""

    from brainalign.atomic import atomic_path, write_text
    from brainalign.data.layout import LAB_STIMULI
    from brainalign.params import section
    from brainalign.report.compare import compare as build_compare
    from brainalign.report.compare import compare_latex
    from brainalign.report.verify import VerifyConfig

    p = _params(params)
    table = _table(p)
    top = _read_json(REPORT / "topline.json")
    simulated = bool(table["simulated_voxels"].any())
    vc = section(VerifyConfig, p.get("verify"), "verify")
    rows = build_compare(table, _tasks(p), simulated, top,
                         authors_stimuli=_layout(p).stimuli == LAB_STIMULI,
                         tolerances={"alignment": vc.alignment_atol,
                                     "correlation": vc.correlation_atol})
    dynamics = BUILD / "metrics" / "pretraining.json"
    if dynamics.is_file():  # Fig. 5a's read-off values (stage `dynamics`)
        import pandas as pd

        from brainalign.pretraining.table import compare_rows as fig5_rows

        rows = pd.concat([rows, pd.DataFrame(fig5_rows(_read_json(dynamics), vc.alignment_atol))],
                         ignore_index=True)
    with atomic_path(REPORT / "reproduced_vs_published.csv") as tmp:
        rows.to_csv(tmp, index=False, float_format="%.10g")
    write_text(REPORT / "reproduced_vs_published.tex", compare_latex(rows, simulated))


@app.command()
def verify(
    against: Annotated[
        str | None,
        typer.Option("--against", help="A git revision (default: params verify.reference, HEAD: "
                     "the committed metrics) or a results folder."),
    ] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Print every row, not only the "
                                           "failures and the informative ones.")] = False,
    allow_missing: Annotated[bool, typer.Option("--allow-missing", help="Measures of the "
                             "reference that this run lacks are not failures.")] = False,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Compare this workspace's metrics with a reference and the published numbers.

    Tolerances per kind come from params.yaml `verify` (README "Reviewer verification"). Writes
    build/verify/verify.{csv,json}; exit code 1 when a measure is out of tolerance.
    """
    from brainalign.params import section
    from brainalign.report.verify import VerifyConfig, format_rows, summary, write_report
    from brainalign.report.verify import verify as run_verify

    config = section(VerifyConfig, _params(params).get("verify"), "verify")
    rows = run_verify(Path("."), config, against, allow_missing)
    for line in format_rows(rows, show_all):
        typer.echo(line)
    csv = write_report(rows, BUILD / "verify")
    counts = summary(rows)
    for kind, verdicts in counts.items():
        typer.echo(f"{kind:12s} " + ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items())))
    failed = sum(v.get("fail", 0) + v.get("missing", 0) for v in counts.values())
    typer.echo(f"{len(rows)} measures against {against or config.reference}: "
               f"{'all within tolerance' if not failed else f'{failed} out of tolerance'}; "
               f"report: {csv}")
    if failed:
        raise typer.Exit(1)


@app.command()
def paper(params: ParamsOpt = Path("params.yaml")) -> None:
    """Build paper/brainalign.tex into build/paper/brainalign.pdf with latexmk (TeX Live)."""
    import shutil

    from brainalign.atomic import write_text
    from brainalign.report.paper import provenance_tex, results_tex

    p = _params(params)
    table = _table(p)
    out = (BUILD / "paper").resolve()
    write_text(out / "provenance.tex",
               provenance_tex(table, _tasks(p), source_sha256(), lock_sha256() or "unknown")
               + results_tex(table, _read_json(REPORT / "topline.json")))
    latexmk = shutil.which("latexmk")
    if latexmk is None:
        raise InputError("latexmk", "not found: install TeX Live with `make tex` (Debian packages)")
    env = {**os.environ, "SOURCE_DATE_EPOCH": "0", "FORCE_SOURCE_DATE": "1"}
    # latexmk works in a scratch folder: its aux files hold absolute paths and timings, so only
    # the PDF (byte-reproducible: fixed dates and trailer ID) moves into build/paper/.
    with tempfile.TemporaryDirectory(prefix=".paper-", dir=out.parent) as scratch:
        run_ = subprocess.run(
            [latexmk, "-pdf", "-interaction=nonstopmode", "-halt-on-error",
             f"-outdir={scratch}", "brainalign.tex"],
            cwd="paper", env=env, capture_output=True, text=True,
        )
        if run_.returncode != 0:
            log.error("%s", run_.stdout[-3000:])
            failed_log = out / "brainalign.log"
            if (Path(scratch) / "brainalign.log").is_file():
                shutil.copyfile(Path(scratch) / "brainalign.log", failed_log)
            raise InputError("paper/brainalign.tex", f"latexmk failed (log: {failed_log})")
        os.replace(Path(scratch) / "brainalign.pdf", out / "brainalign.pdf")
    log.info("paper: %s", out / "brainalign.pdf")


@app.command()
def profile(
    name: Annotated[str, typer.Argument(help="paper, or a configuration file of overrides "
                                        "(e.g. configs/nifti-demo.yaml)")],
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Rewrite params.yaml for a named configuration (`git checkout params.yaml`: the demo)."""
    from importlib import resources

    import yaml

    from brainalign.models.registry import model_names

    if name.endswith((".yaml", ".yml")):  # a configuration file, e.g. configs/nifti-demo.yaml
        from brainalign.readers import read_yaml_mapping

        overrides = read_yaml_mapping(name, "configuration file not found",
                                      "expected a mapping of params.yaml sections to override")
    else:
        source = resources.files("brainalign.profiles").joinpath(f"{name}.yaml")
        if not source.is_file():
            raise InputError("profile", f"unknown profile {name!r}; expected 'paper' or a "
                             ".yaml configuration file")
        overrides = yaml.safe_load(source.read_text())
    p = _params(params)
    missing = [m for m in overrides.get("models", []) if m not in model_names()]
    if missing:
        raise InputError(
            f"profile {name}",
            f"{len(missing)} of its models are not in the registry: {missing[:4]}...",
        )
    from brainalign.models.registry import stage_dependencies
    from brainalign.params import edit_params

    root = str(overrides.get("data", {}).get("root", p.get("data", {}).get("root", "data")))

    def apply(doc) -> None:
        for key, value in overrides.items():
            if key == "models":
                doc["models"] = {m: stage_dependencies(m, root) for m in value}
            elif isinstance(value, dict) and isinstance(doc.get(key), dict):
                for sub, v in value.items():
                    doc[key][sub] = v
            else:
                doc[key] = value

    edit_params(params, apply)
    log.info("params.yaml now holds the %s configuration", name)


app.add_typer(__import__("brainalign.cluster.cli", fromlist=["app"]).app, name="cluster")
app.add_typer(__import__("brainalign.report.brainmaps", fromlist=["cli"]).cli)  # brainmaps*
app.add_typer(__import__("brainalign.pretraining.cli", fromlist=["app"]).app, name="pretraining")


def run() -> None:
    """Entry point that turns InputError into one clear line and exit code 2."""
    try:
        app()
    except InputError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise SystemExit(2) from None
