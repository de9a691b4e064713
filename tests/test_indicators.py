import numpy as np
import pytest

from vigil import indicators as ind

rng = np.random.default_rng(1)
CLOSE = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 200)))
HIGH = CLOSE * (1 + np.abs(rng.normal(0, 0.003, 200)))
LOW = CLOSE * (1 - np.abs(rng.normal(0, 0.003, 200)))


def test_smoothing_matches_the_recursion_across_chunks():
    x = np.abs(np.diff(CLOSE))
    for series in (x[:70], np.tile(x, 3)):  # a short window (matrix) and more than one chunk
        for n in (2, 14):
            y = series[:n].mean()
            for v in series[n:]:
                y += (v - y) / n
            out = ind._smooth(np.stack((series, 2 * series)), 1 / n, n)
            assert np.isnan(out[:, :n - 1]).all() and out[0, -1] == pytest.approx(y, rel=1e-9)
            assert out[1, -1] == pytest.approx(2 * y, rel=1e-9)
    assert np.isnan(ind._smooth([1.0, 2.0], 0.5, 5)).all()


def test_atr_of_constant_bars_is_the_bar_height():
    h, l, c = np.full(50, 11.0), np.full(50, 9.0), np.full(50, 10.0)
    assert ind.atr(h, l, c, 14)[-1] == pytest.approx(2.0)


def test_adx_high_in_a_steady_trend_low_in_chop():
    up = np.linspace(100, 200, 120)
    assert ind.adx_atr(up + 0.5, up - 0.5, up, 14)[0][-1] > 60
    chop = 100 + np.tile([1.0, -1.0], 60)
    assert ind.adx_atr(chop + 0.5, chop - 0.5, chop, 14)[0][-1] < 20


def test_rsi_bounds_and_extremes():
    assert ind.rsi(np.linspace(1, 2, 50), 14)[-1] == pytest.approx(100.0)
    assert ind.rsi(np.linspace(2, 1, 50), 14)[-1] == pytest.approx(0.0)
    r = ind.rsi(CLOSE, 14)
    assert np.nanmin(r) >= 0 and np.nanmax(r) <= 100


def test_realized_vol_is_the_sample_std_of_log_returns():
    r = np.diff(np.log(CLOSE))
    assert ind.realized_vol(ind.log_returns(CLOSE), 30) == pytest.approx(np.std(r[-30:], ddof=1))
