"""The one cochleagram (SpectroTemporal, CochDNNs) against chcochleagram's published example."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from brainalign.data.safe_pickle import StandIn, load_numpy_pickle
from brainalign.errors import InputError
from brainalign.models.frontends import cochleagram as C

EXAMPLE = ("raw.githubusercontent.com/jenellefeather/chcochleagram/"
           "c634ca85566c3f595480cb3e9a8c0f5c6236d311/examples/example_q63_cochleagram_1.pckl")
_CHC = {(f"chcochleagram.{m}", n): type(n, (StandIn,), {}) for m, n in (
    ("cochlear_filters", "ERBCosFilters"), ("envelope_extraction", "HilbertEnvelopeExtraction"),
    ("downsampling", "SincWithKaiserWindow"), ("compression", "ClippedGradPowerCompression"))}


@pytest.fixture(scope="module")
def example(mirror_root) -> dict:
    path = mirror_root / EXAMPLE
    sums = dict(reversed(line.split(None, 1)) for line in
                (mirror_root / "REFERENCE-SHA256SUMS").read_text().splitlines())
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sums[EXAMPLE]
    return load_numpy_pickle(path, stand_ins=_CHC)


def test_example_settings_are_ours(example) -> None:
    kw = example["cgram_kwargs"]
    assert (kw["signal_size"], kw["sr"], kw["env_sr"]) == (C.SIGNAL_SAMPLES, C.SAMPLE_RATE,
                                                           C.ENV_SR)
    assert kw["pad_factor"] is None and kw["use_rfft"] is True
    assert kw["coch_filter_kwargs"] == {"n": C.COCH_N, "low_lim": C.COCH_LOW,
                                        "high_lim": C.COCH_HIGH, "sample_factor": C.COCH_FACTOR,
                                        "full_filter": False}
    assert kw["downsampling_kwargs"] == {"window_size": C.DOWNSAMPLE_TAPS}
    assert kw["compression_kwargs"]["power"] == C.COMPRESSION_POWER
    assert kw["compression_kwargs"]["offset"] == C.COMPRESSION_OFFSET
    assert kw["coch_filter_type"].__name__ == "ERBCosFilters"  # a stand-in: nothing ran


def test_cochleagram_equals_the_published_example(example) -> None:
    sound = example["input_sound"]
    assert sound.shape == (40000,) and abs(np.sqrt(np.mean(sound**2)) - 0.01) < 1e-4
    ours = C.cochleagram(torch.from_numpy(sound.astype(np.float32))[None])[0].numpy()
    ref = example["output_coch"]
    assert ours.shape == ref.shape == (C.N_CHANNELS, 390) == (211, 390)
    diff = float(np.abs(ours - ref).max())
    assert diff < 1e-5, diff  # measured 4e-6 (float32 FFTs)
    np.testing.assert_allclose(ref[0, :5], [0.027992, 0.031380, 0.028116, 0.022113, 0.022973],
                               atol=1e-6)
    assert C.n_frames(40000) == 390


def test_the_example_loader_refuses_other_globals(tmp_path) -> None:
    import os
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    bad = tmp_path / "evil.pckl"
    bad.write_bytes(pickle.dumps({"input_sound": Evil()}))
    with pytest.raises(InputError, match="refusing to unpickle global posix.system"):
        load_numpy_pickle(bad, stand_ins=_CHC)


def test_level_and_clamp() -> None:
    x = torch.randn(2, 40000) * 3 + 1
    y = C.tuckute_level(x)
    assert torch.allclose(y.mean(dim=1), torch.zeros(2), atol=1e-6)
    assert torch.allclose(y.pow(2).mean(dim=1).sqrt(), torch.full((2,), 0.1), atol=1e-6)
    spike = torch.zeros(1, 40000)
    spike[0, 0] = 1.0
    assert C.tuckute_level(spike, clamp=True).abs().max() <= 1.0
