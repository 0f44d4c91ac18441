"""Fig. 5b smoothing: the authors' ``savgol_filter(window_length=10, polyorder=3)`` against a
direct least-squares polynomial fit, which documents what SciPy does with an even window."""

from __future__ import annotations

import numpy as np
import pytest

from brainalign.report.figure5 import smooth


def _direct(y: np.ndarray, window: int, order: int) -> np.ndarray:
    """What SciPy computes (mode 'interp'), written out: interior outputs are the fit of the
    window centred on the output evaluated at the window's centre (half a sample ahead for an
    even window); the first and last window//2 outputs come from the fits of the first and
    last ``window`` samples, evaluated at the samples."""
    n, half = len(y), window // 2
    t = np.arange(n, dtype=np.float64)
    out = np.empty(n)
    lead = 0.5 if window % 2 == 0 else 0.0
    for i in range(half, n - half):
        lo = i - half + (1 if window % 2 == 0 else 0)
        seg = slice(lo, lo + window)
        coef = np.polyfit(t[seg], y[seg], order)
        out[i] = np.polyval(coef, i + lead)
    first = np.polyfit(t[:window], y[:window], order)
    last = np.polyfit(t[-window:], y[-window:], order)
    out[:half] = np.polyval(first, t[:half])
    out[n - half:] = np.polyval(last, t[n - half:])
    return out


@pytest.mark.parametrize("n", [12, 30, 100])
def test_even_window_equals_a_direct_polynomial_fit(n: int) -> None:
    rng = np.random.default_rng(n)
    y = 0.2 + 0.3 * (1 - np.exp(-np.arange(n) / 8)) + rng.normal(0, 0.02, n)
    got, used = smooth(y, 10, 3)
    assert used == 10
    np.testing.assert_allclose(got, _direct(y, 10, 3), rtol=0, atol=1e-10)


def test_even_window_is_half_a_sample_ahead() -> None:
    """A cubic is reproduced exactly at i + 0.5 inside, at i at the edges (the lead)."""
    t = np.arange(30, dtype=np.float64)
    cubic = 1e-3 * t**3 - 0.02 * t**2 + t
    got, _ = smooth(cubic, 10, 3)
    inner = np.arange(5, 25)
    np.testing.assert_allclose(got[inner], np.polyval(np.polyfit(t, cubic, 3), inner + 0.5),
                               atol=1e-9)
    np.testing.assert_allclose(got[:5], cubic[:5], atol=1e-9)
    np.testing.assert_allclose(got[25:], cubic[25:], atol=1e-9)


def test_odd_window_is_centred() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=25)
    got, used = smooth(y, 9, 3)
    assert used == 9
    np.testing.assert_allclose(got, _direct(y, 9, 3), atol=1e-10)


def test_short_curves() -> None:
    """Fewer points than the window: the window shrinks; at most order + 1 points: unchanged."""
    y = np.array([0.1, 0.3, 0.2, 0.5, 0.4, 0.45])
    got, used = smooth(y, 10, 3)
    assert used == 6
    np.testing.assert_allclose(got, _direct(y, 6, 3), atol=1e-10)
    few = np.array([0.1, 0.2, 0.4])
    got, used = smooth(few, 10, 3)
    assert used == 1 and np.array_equal(got, few)
    assert smooth(y, 1, 3)[1] == 1
