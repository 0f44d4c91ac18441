"""The Fig. 5 stages end to end on three tiny checkpoints: miniature -> dynamics -> figure;
the cache scores only new checkpoints; outputs are marked and reproducible."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import fig5_helpers as FH  # noqa: E402

from brainalign.alignment.rsa import RSAConfig, layer_rdms, layerwise_rsa  # noqa: E402
from brainalign.data.fmri import load_voxel_dataset  # noqa: E402
from brainalign.models.activations import load_activations  # noqa: E402
from brainalign.pretraining import score as S  # noqa: E402
from brainalign.pretraining import stages  # noqa: E402
from brainalign.pretraining.table import COLUMNS, compare_rows  # noqa: E402

TARGETS = ["NH2015", "B2021", "NH2015/Primary", "NH2015/Posterior"]


@pytest.fixture(scope="module")
def run(data_root, tmp_path_factory):
    """Miniature (3 checkpoints), dynamics and figure in a fresh build folder."""
    build = tmp_path_factory.mktemp("build")
    params = FH.params_for(data_root, build / "pretraining" / "miniature")
    stages.run_miniature(params, build / "pretraining" / "miniature")
    summary = stages.run_dynamics(params, build)
    files = stages.run_figure(params, build)
    return {"build": build, "params": params, "summary": summary, "files": files}


def test_table_metric_and_figure(run) -> None:
    out = stages.paths(run["build"])
    table = pd.read_parquet(out["parquet"])
    assert tuple(table.columns) == COLUMNS
    assert len(table) == 3 * 10 * 4  # steps x layers x targets
    assert table["step"].unique().tolist() == [0, 1, 2]
    assert table["target"].unique().tolist() == TARGETS
    assert set(table["layer_label"]) == {str(i) for i in range(1, 11)}
    assert table["miniature"].all() and table["simulated_voxels"].all()
    assert (table["source"] == "miniature pretraining").all()
    assert table["mean_rho"].notna().all()
    nh = table[table["target"] == "NH2015"]
    assert set(nh["n_subjects"]) == {8}
    b = table[table["target"] == "B2021"]
    assert set(b["n_subjects"]) == {18}  # the two subjects with NaN voxels drop out (authors)
    csv = pd.read_csv(out["csv"], dtype={"layer": str, "layer_label": str})
    assert np.allclose(csv["mean_rho"], table["mean_rho"], rtol=0, atol=1e-9)
    metrics = json.loads(out["metrics"].read_text())
    assert metrics == run["summary"]
    assert metrics["label"] == "miniature pretraining, simulated voxels"
    assert metrics["final"]["step"] == 2 and metrics["first"]["step"] == 0
    assert set(metrics["final"]["rho"]) == set(TARGETS)
    assert len(metrics["final"]["rho"]["NH2015"]) == 10
    for path in run["files"]:
        assert path.is_file() and path.stat().st_size > 0
    assert out["figure"].with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
    tex = out["tex"].read_text()
    assert r"\textbf{Miniature pretraining, simulated voxels:}" in tex
    assert "3 checkpoints, steps 0--2" in tex and "smoothing window 1 (none)" in tex
    assert r"\producedby{figure5}" in tex and r"\label{fig:fig5}" in tex
    # no published counterpart for the miniature
    rows = compare_rows(metrics)
    assert len(rows) == 9 and all(r["reproduced"] is None for r in rows)
    assert all("miniature pretraining, simulated voxels" in r["note"] for r in rows)


def test_scores_are_the_layerwise_rsa_protocol(run, data_root) -> None:
    """The table equals layer-wise RSA computed directly (layerwise_rsa per subject, mean and
    SD over subjects), here for the last checkpoint's NH2015 Primary ROI."""
    from brainalign.data.stimuli import load_stimuli
    from brainalign.models.encodecmae import load_pretraining_checkpoint
    from brainalign.models.extract import ExtractConfig, extract_activations
    from brainalign.pretraining.checkpoints import discover

    ckpts = discover(run["params"]["pretraining"]["checkpoints"], data_root)
    last = ckpts.checkpoints[-1]
    runner = load_pretraining_checkpoint(ckpts.spec, last.path)
    sounds = load_stimuli(data_root / "stimuli/wav", data_root / "stimuli/category_labels.csv",
                          sample_rate=None, source_rate=None)
    acts = extract_activations(runner, sounds.audio, sounds.sample_rate, sounds.names,
                               ExtractConfig(models=("mel256-ec-base",), batch_size=8,
                                             threads=1), progress=False)
    ds = load_voxel_dataset(data_root / "simulated/neural/NH2015", "NH2015")
    rdms = layer_rdms([acts.layers[k] for k in acts.layer_names])
    rho = np.stack([layerwise_rsa(ds.target()[:, (ds.roi == "Primary") & (ds.subject == s)],
                                  rdms, RSAConfig()) for s in ds.subjects])
    table = pd.read_parquet(stages.paths(run["build"])["parquet"])
    part = table[(table["step"] == last.step) & (table["target"] == "NH2015/Primary")]
    np.testing.assert_allclose(part["mean_rho"], rho.mean(axis=0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(part["sd_rho"], rho.std(axis=0, ddof=1), rtol=0, atol=1e-6)


def test_ranked_layers_equal_layerwise_rsa_bit_for_bit(data_root) -> None:
    rng = np.random.default_rng(0)
    layers = [rng.normal(size=(165, 6)) for _ in range(4)] + [np.ones((165, 3))]
    for name in ("NH2015", "B2021"):
        ds = load_voxel_dataset(data_root / "simulated/neural" / name, name)
        for policy in ("authors", "omit"):
            config = RSAConfig(nan_policy=policy)
            rdms = layer_rdms(layers, config)
            ranked = S.RankedLayers(rdms, config)
            for s in ds.subjects:
                x = ds.target()[:, ds.subject == s]
                assert np.array_equal(ranked.rho(x), layerwise_rsa(x, rdms, config),
                                      equal_nan=True)


def test_the_cache_scores_only_new_checkpoints(run, monkeypatch) -> None:
    build, params = run["build"], run["params"]
    out = stages.paths(build)
    before = {k: out[k].read_bytes() for k in ("csv", "parquet", "metrics")}
    calls: list[int] = []
    real = S.score_checkpoint

    def counting(ckpt, *args, **kwargs):
        calls.append(ckpt.step)
        return real(ckpt, *args, **kwargs)

    monkeypatch.setattr(S, "score_checkpoint", counting)
    stages.run_dynamics(params, build)
    assert calls == []
    assert {k: out[k].read_bytes() for k in before} == before  # identical outputs
    # one more training step: steps 0-2 are the same files, only step 3 is scored
    longer = FH.params_for(Path(params["data"]["root"]), out["miniature"], miniature={"steps": 3})
    stages.run_miniature(longer, out["miniature"])
    stages.run_dynamics(longer, build)
    assert calls == [3]
    assert pd.read_parquet(out["parquet"])["step"].unique().tolist() == [0, 1, 2, 3]
    # something that matters (the RSA epsilon) misses the cache; activations are kept only
    # when asked
    assert not (out["cache"] / "activations").exists()
    calls.clear()
    other = {**longer, "rsa": {"eps": 1e-8, "nan_policy": "authors"},
             "pretraining": {**longer["pretraining"], "keep_activations": True}}
    stages.run_dynamics(other, build)
    files = sorted((out["cache"] / "activations").glob("*.npz"))
    assert calls == [0, 1, 2, 3] and len(files) == 4
    acts = load_activations(files[0])
    assert acts.layer_names == [str(i) for i in range(10)] and len(acts.stimuli) == 165


def test_the_figure_needs_its_layers(run) -> None:
    from brainalign.errors import InputError

    params = {**run["params"], "pretraining": {**run["params"]["pretraining"],
                                               "layers_a": ["1", "12"]}}
    with pytest.raises(InputError, match="12"):
        stages.run_figure(params, run["build"])
