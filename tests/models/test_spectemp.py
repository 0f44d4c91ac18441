"""SpectroTemporal baseline: filters, cochleagram and values of the reference implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainalign.models import spectemp as S
from brainalign.models.extract import build_runner
from brainalign.models.frontends import cochleagram as C

# Computed by the reference code (jenellefeather/chcochleagram for the cochleagram,
# model_metamers_pytorch spectemp.make_Hts_filterbank + full 2-D FFT filtering as in
# SpecTempFilterBank) on default_rng(0) noise of 40000 samples at RMS 0.1, float64 filtering.
REFERENCE = {
    (0, 0): 8.971664171815515, (0, 100): 8.971664171815517, (10, 100): 0.003802613405230393,
    (62, 30): 0.0465669277669659, (63, 150): 0.19357785558041182,
    (110, 50): 0.08093797222013316, (110, 210): 0.12399383068930525,
}
REFERENCE_SUM = 7644.6420824387915


@pytest.fixture(scope="module")
def noise_coch() -> torch.Tensor:
    x = np.random.default_rng(0).standard_normal(40000).astype(np.float32)
    x = x - x.mean()
    x = x / np.sqrt(np.mean(x**2)) * 0.1
    return C.cochleagram(torch.from_numpy(x)[None])


def test_filter_bank_layout() -> None:
    filters = S.filter_list()
    assert len(filters) == 9 * 7 + 8 * 6 == 111
    assert filters[0] == (0.0, 0.0) and filters[-1] == (64.0, 2.0)
    bank, cf = C.cochlear_filters(40000)
    assert bank.shape == (211, 20001)
    assert cf[4] > 50 and cf[-5] < 10000 and np.all(np.diff(cf) > 0)
    # power-complementary design: squared responses sum to 1 between the edges
    total = (bank.astype(np.float64) ** 2).sum(axis=0)
    np.testing.assert_allclose(total[100:19000], 1.0, atol=1e-6)


def test_cochleagram_shape_and_tone_channel(make_tone) -> None:
    coch = C.cochleagram(torch.from_numpy(make_tone(1000, 2.0, 20000, amp=0.1))[None])
    assert coch.shape == (1, 211, 390)
    _, cf = C.cochlear_filters(40000)
    peak = int(coch[0].mean(dim=1).argmax())
    assert abs(cf[peak] - 1000) / 1000 < 0.05


def test_matches_reference_values(noise_coch) -> None:
    power = S.spectemp_power(noise_coch)[0].double().numpy()
    assert power.shape == (111, 211)
    for (i, j), value in REFERENCE.items():
        assert power[i, j] == pytest.approx(value, rel=1e-3)
    assert power.sum() == pytest.approx(REFERENCE_SUM, rel=1e-4)


def test_dc_filter_is_the_squared_mean(noise_coch) -> None:
    power = S.spectemp_power(noise_coch)[0]
    expected = (noise_coch[0].double().sum() * S.RESCALE / (422 * 1170)) ** 2
    np.testing.assert_allclose(power[0].numpy(), float(expected), rtol=1e-5)


def test_separable_equals_direct_2d_filtering() -> None:
    coch = torch.rand(2, 30, 50, generator=torch.Generator().manual_seed(0))
    fast = S.spectemp_power(coch)
    direct = S.spectemp_power_direct(coch)
    np.testing.assert_allclose(fast.numpy(), direct.numpy(), rtol=2e-4, atol=1e-7)


def test_runner_layer_and_input_normalisation(make_tone) -> None:
    runner = build_runner("spectemp")
    x = torch.from_numpy(np.random.default_rng(3).standard_normal(40000).astype(np.float32))
    out = runner.forward(torch.stack([x, 7 * x]), ["avgpool"])["avgpool"]
    assert out.shape == (2, 23421)
    np.testing.assert_allclose(out[0].numpy(), out[1].numpy(), rtol=1e-4, atol=1e-6)
    # the reference input length: longer audio is cropped to 2 s, shorter zero-padded
    longer = runner.forward(torch.cat([x, x[:5000]])[None], ["avgpool"])["avgpool"]
    np.testing.assert_allclose(longer[0].numpy(), out[0].numpy(), rtol=1e-4, atol=1e-6)
