"""Known behaviour of each pretrained offline model, and the random-init controls."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainalign.models.extract import ExtractConfig, build_runner
from brainalign.models.registry import get_spec
from brainalign.models.weights import verify_packaged


def _crepe_pitch(runner, audio: np.ndarray) -> float:
    """CREPE's local weighted average of bin cents around the most probable bin (+-4 bins), on
    the time-averaged probabilities. Written out because torchcrepe's ``weighted_argmax`` takes
    logits and dithers the bin centres with unseeded noise (up to +-10 cents per call)."""
    probs = runner.forward(torch.from_numpy(audio)[None], ["classifier"])["classifier"][0]
    probs = probs.double().numpy()
    centre = int(probs.argmax())
    window = np.arange(max(0, centre - 4), min(probs.size, centre + 5))
    cents = 20.0 * window + 1997.3794084376191  # CREPE's bin centres, in cents above 10 Hz
    mean = float((cents * probs[window]).sum() / probs[window].sum())
    return 10.0 * 2.0 ** (mean / 1200.0)


@pytest.mark.parametrize("name", ["crepe-tiny", "crepe-full"])
def test_crepe_pitch_of_220hz(name, make_tone) -> None:
    runner = build_runner(name, ExtractConfig(options={name: {"hop_ms": 50.0}}))
    with torch.inference_mode():
        pitch = _crepe_pitch(runner, make_tone(220.0, 2.0, 16000))
    # measured: tiny +7.1 cents, full -0.4 cents; a wrong rate or framing would be >> 100
    assert abs(1200.0 * np.log2(pitch / 220.0)) < 10.0


def test_crepe_top_matches_package(make_tone) -> None:
    """Our framing + classifier equals torchcrepe's own preprocess + model."""
    import torchcrepe

    runner = build_runner("crepe-tiny", ExtractConfig(options={"crepe-tiny": {"hop_ms": 20.0}}))
    audio = torch.from_numpy(make_tone(330.0, 0.3, 16000) + 0.01)[None]
    with torch.inference_mode():
        ours = runner.forward(audio, ["classifier"])["classifier"][0]
        frames = next(torchcrepe.preprocess(audio, 16000, hop_length=320, device="cpu"))
        theirs = runner.model(frames).mean(dim=0)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-6)


def test_pesto_pitch_of_220hz(make_tone) -> None:
    from pesto.utils import reduce_activations

    runner = build_runner("pesto")
    with torch.inference_mode():
        probs = runner.forward(torch.from_numpy(make_tone(220.0, 1.0, 16000))[None],
                               ["output"])["output"]
        semitones = reduce_activations(probs, reduction="alwa")
    hz = 440 * 2 ** ((float(semitones.squeeze()) - 69) / 12)
    assert abs(hz - 220.0) < 1.0


def test_fcpe_pitch_of_220hz_and_package_latent(make_tone) -> None:
    runner = build_runner("fcpe")
    audio = torch.from_numpy(make_tone(220.0, 1.0, 16000))[None]
    with torch.inference_mode():
        out = runner.forward(audio, ["output", "encoder6"])
        latent, _ = runner.latent(audio)
        cents = runner.infer.model.latent2cents_local_decoder(out["output"][:, None], mask=False)
        f0_package = runner.infer.infer(audio[..., None], 16000)
    assert abs(float(runner.infer.model.cent_to_f0(cents).squeeze()) - 220.0) < 1.0
    np.testing.assert_allclose(out["output"][0].numpy(), latent[0].mean(dim=0).numpy(), rtol=1e-6)
    assert abs(float(f0_package[0, 10:-10].median()) - 220.0) < 1.0
    assert out["encoder6"].shape == (1, 512)


def test_resemblyzer_layers_match_package() -> None:
    from resemblyzer import VoiceEncoder

    runner = build_runner("resemblyzer")
    wav = (0.1 * np.random.default_rng(5).standard_normal(40000)).astype(np.float32)
    package = VoiceEncoder(device="cpu", verbose=False)
    with torch.inference_mode():
        ours = runner.forward(torch.from_numpy(wav)[None], list(runner.layers))
        expected = package.embed_utterance(wav)
        mel = torch.from_numpy(runner.mel(wav))[None]
        top_package, _ = package.lstm(mel)
        top_ours = runner.layer_outputs(mel)[-1]
    np.testing.assert_allclose(ours["embedding"][0].numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(top_ours.numpy(), top_package.numpy(), atol=1e-6)
    np.testing.assert_allclose(ours["lstm3"][0].numpy(), top_package[0].mean(dim=0).numpy(),
                               atol=1e-6)


def test_aisfx_embedding_matches_package() -> None:
    from aisfx.inference import load_bestModel

    from brainalign.models.aisfx_cnn import log_mel

    runner = build_runner("aisfx")
    path = verify_packaged(get_spec("aisfx"))
    weights, ds_dict = torch.load(path, map_location="cpu", weights_only=False)
    package = load_bestModel(weights, ds_dict, "cpu")
    wav = (0.2 * np.random.default_rng(6).standard_normal(44100)).astype(np.float32)
    with torch.inference_mode():
        ours = runner.forward(torch.from_numpy(wav)[None], ["embedding", "block1_conv1"])
        theirs = package.get_embedding(torch.from_numpy(log_mel(wav))[None])
    np.testing.assert_allclose(ours["embedding"].numpy(), theirs.numpy(), rtol=1e-5, atol=1e-6)
    assert ours["block1_conv1"].shape == (1, 64 * 96)


def test_soundnet_conv1_matches_shipped_weights() -> None:
    from brainalign.models.soundnet import BN_EPS, INPUT_SCALE, load_sound8

    runner = build_runner("soundnet")
    params = load_sound8(verify_packaged(get_spec("soundnet")))["conv1"]
    wav = (0.1 * np.random.default_rng(7).standard_normal(22050)).astype(np.float32)
    with torch.inference_mode():
        maps = runner.maps(torch.from_numpy(wav)[None])
    x = np.concatenate([np.zeros(32), wav.astype(np.float64) * INPUT_SCALE, np.zeros(32)])
    w = params["weights"][:, 0, 0, :].astype(np.float64)  # (64 taps, 16 channels)
    for pos in (0, 17, 5000, 11025):
        conv = x[2 * pos: 2 * pos + 64] @ w + params["biases"]
        bn = (conv - params["mean"]) / np.sqrt(params["var"] + BN_EPS) * params["gamma"]
        expected = np.maximum(bn + params["beta"], 0)
        np.testing.assert_allclose(maps["conv1"][0, :, pos].numpy(), expected, rtol=1e-4,
                                   atol=1e-4)
    assert maps["conv7"].shape[1] == 1024


@pytest.mark.parametrize("name", ["crepe-tiny-random", "soundnet-random", "aisfx-random"])
def test_random_init_is_seeded(name) -> None:
    def flat(seed: int) -> torch.Tensor:
        runner = build_runner(name, ExtractConfig(seed=seed))
        module = next(v for v in vars(runner).values() if isinstance(v, torch.nn.Module))
        return torch.cat([p.detach().flatten() for p in module.parameters()])

    first, again, other = flat(0), flat(0), flat(1)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    trained = build_runner(name.removesuffix("-random"))
    module = next(v for v in vars(trained).values() if isinstance(v, torch.nn.Module))
    trained_flat = torch.cat([p.detach().flatten() for p in module.parameters()])
    assert trained_flat.shape == first.shape and not torch.equal(trained_flat, first)
