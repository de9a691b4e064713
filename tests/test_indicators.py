import numpy as np
import pytest

from vigil import indicators as ind

rng = np.random.default_rng(1)
CLOSE = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 200)))
HIGH = CLOSE * (1 + np.abs(rng.normal(0, 0.003, 200)))
LOW = CLOSE * (1 - np.abs(rng.normal(0, 0.003, 200)))


def test_sma_matches_the_mean_of_each_window():
    out = ind.sma(CLOSE, 10)
    assert np.isnan(out[:9]).all()
    assert out[50] == pytest.approx(CLOSE[41:51].mean())


def test_ema_recursion():
    out = ind.ema(CLOSE, 10)
    y = CLOSE[:10].mean()
    for v in CLOSE[10:60]:
        y += 2 / 11 * (v - y)
    assert out[59] == pytest.approx(y)
    assert ind.ema([1.0, 2.0], 5).tolist() == pytest.approx([np.nan, np.nan], nan_ok=True)


def test_atr_of_constant_bars_is_the_bar_height():
    h, l, c = np.full(50, 11.0), np.full(50, 9.0), np.full(50, 10.0)
    assert ind.atr(h, l, c, 14)[-1] == pytest.approx(2.0)


def test_adx_high_in_a_steady_trend_low_in_chop():
    up = np.linspace(100, 200, 120)
    assert ind.adx(up + 0.5, up - 0.5, up, 14)[-1] > 60
    chop = 100 + np.tile([1.0, -1.0], 60)
    assert ind.adx(chop + 0.5, chop - 0.5, chop, 14)[-1] < 20


def test_bollinger_band_width():
    mid, up, lo = ind.bollinger(CLOSE, 20, 2.0)
    w = CLOSE[-20:]
    assert mid[-1] == pytest.approx(w.mean())
    assert up[-1] - mid[-1] == pytest.approx(2 * w.std())
    assert lo[-1] == pytest.approx(2 * mid[-1] - up[-1])


def test_rsi_bounds_and_extremes():
    assert ind.rsi(np.linspace(1, 2, 50), 14)[-1] == pytest.approx(100.0)
    assert ind.rsi(np.linspace(2, 1, 50), 14)[-1] == pytest.approx(0.0)
    r = ind.rsi(CLOSE, 14)
    assert np.nanmin(r) >= 0 and np.nanmax(r) <= 100


def test_realized_vol_is_the_sample_std_of_log_returns():
    r = np.diff(np.log(CLOSE))
    assert ind.realized_vol(CLOSE, 30)[-1] == pytest.approx(np.std(r[-30:], ddof=1))


def test_rolling_range():
    hi, lo = ind.rolling_range(HIGH, LOW, 5)
    assert hi[10] == HIGH[6:11].max() and lo[10] == LOW[6:11].min()
    assert np.isnan(hi[3])
