"""A HEAR-API module used as a model by its module name."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from brainalign.errors import InputError
from brainalign.models.extract import ExtractConfig, extract_activations
from brainalign.models.registry import get_spec

TOY = textwrap.dedent('''
    """Toy HEAR module: framewise RMS and a random projection, with two internal layers."""
    import torch

    TRAINING = "untrained"

    class Toy(torch.nn.Module):
        sample_rate = 8000
        scene_embedding_size = 4
        timestamp_embedding_size = 4
        layer_names = ("frames", "proj")

        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.proj = torch.nn.Parameter(torch.randn(80, 4, generator=g))

        def layers(self, audio):
            frames = audio[:, : audio.shape[1] // 80 * 80].reshape(audio.shape[0], -1, 80)
            return {"frames": frames.abs(), "proj": frames @ self.proj}

    def load_model(model_file_path=""):
        return Toy()

    def get_timestamp_embeddings(audio, model):
        emb = model.layers(audio)["proj"]
        ts = torch.arange(emb.shape[1]) * 10.0
        return emb, ts.expand(emb.shape[0], -1)

    def get_scene_embeddings(audio, model):
        return get_timestamp_embeddings(audio, model)[0].amax(dim=1)

    def get_layer_embeddings(audio, model):
        return model.layers(audio)
''')


@pytest.fixture()
def toy_module(tmp_path, monkeypatch) -> str:
    (tmp_path / "toy_hear_module.py").write_text(TOY)
    (tmp_path / "not_hear_module.py").write_text("def load_model():\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "toy_hear_module"


def test_hear_module_as_model(toy_module) -> None:
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(8000).astype(np.float32) for _ in range(2)]
    acts = extract_activations(f"hear:{toy_module}", clips, 8000, ["a", "b"], ExtractConfig())
    assert acts.layer_names == ["scene", "timestamp", "frames", "proj"]
    assert acts.meta["training"] == "untrained" and acts.meta["family"] == "HEAR"
    from toy_hear_module import Toy

    model = Toy()
    x = torch.from_numpy(np.stack(clips))
    frames = x.reshape(2, -1, 80)
    proj = (frames @ model.proj).detach()
    np.testing.assert_allclose(acts.layers["timestamp"], proj.mean(dim=1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(acts.layers["scene"], proj.amax(dim=1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(acts.layers["frames"], frames.abs().mean(dim=1).numpy(), rtol=1e-5)


def test_hear_layer_subset(toy_module) -> None:
    cfg = ExtractConfig(options={f"hear:{toy_module}": {"layers": ["proj"]}})
    acts = extract_activations(f"hear:{toy_module}", [np.ones(800, np.float32)], 16000, ["a"], cfg)
    assert acts.layer_names == ["proj"] and acts.meta["sample_rate"] == 8000


def test_bad_hear_modules(toy_module) -> None:
    with pytest.raises(InputError, match="not a HEAR-API module"):
        get_spec("hear:not_hear_module")
    with pytest.raises(InputError, match="cannot import HEAR module"):
        get_spec("hear:no_such_module_xyz")
