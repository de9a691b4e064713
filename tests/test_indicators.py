import numpy as np
import pytest

from vigil import indicators as ind

rng = np.random.default_rng(1)
CLOSE = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 200)))
HIGH = CLOSE * (1 + np.abs(rng.normal(0, 0.003, 200)))
LOW = CLOSE * (1 - np.abs(rng.normal(0, 0.003, 200)))


def ohlc(high, low, close):
    return np.column_stack((np.arange(len(close)), close, high, low, close, np.ones(len(close))))


BARS = ohlc(HIGH, LOW, CLOSE)


def _recursion(series, n):
    y = series[:n].mean()
    out = [y]
    for v in series[n:]:
        y += (v - y) / n
        out.append(y)
    return np.array(out)


def test_smoothing_matches_the_recursion():
    x = np.abs(np.diff(CLOSE))
    for series in (x[:70], np.tile(x, 30)):  # a strategy's window, and thousands of bars
        for n in (2, 14):
            want = _recursion(series, n)
            assert ind.wilder(np.stack((series, 2 * series)), n) == pytest.approx([want[-1], 2 * want[-1]], rel=1e-9)
    assert np.isnan(ind.wilder(np.array([1.0, 2.0]), 5))


def test_smoothing_of_every_bar_at_once_matches_the_recursion():
    x = np.tile(np.abs(np.diff(CLOSE)), 300)  # 60,000 values: 16 doubling passes
    for n in (2, 14, 100):
        want = _recursion(x, n)
        got = ind.wilder_series(x, n)
        assert np.isnan(got[:n - 1]).all() and got[n - 1:] == pytest.approx(want, rel=1e-9)
        head = ind.wilder_series(x[:5000], n)  # going on from a value, as a backtest's slices do
        assert np.concatenate((head, ind.wilder_series(x[5000:], n, head[-1])))[n - 1:] == pytest.approx(want, rel=1e-9)
    assert np.isnan(ind.wilder_series(x[:4], 5)).all() and len(ind.wilder_series(x[:4], 5)) == 4


def test_rsi_of_every_window_at_once_matches_rsi():
    close = np.tile(CLOSE, 5)
    close[300:340] = close[299]  # a flat stretch: no loss in some windows, RSI 100
    for window in (15, 60, 300):
        got = ind.rsi_windows(close, 14, window)
        assert len(got) == len(close) - window + 1
        want = [ind.rsi(close[j - window + 1:j + 1], 14) for j in range(window - 1, len(close))]
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9)
    assert np.isnan(ind.rsi_windows(close, 14, 10)).all()  # a window too short for the period, as rsi() says


def test_true_range_is_the_three_way_max():
    prev = CLOSE[:-1]
    want = np.maximum.reduce([HIGH[1:] - LOW[1:], np.abs(HIGH[1:] - prev), np.abs(LOW[1:] - prev)])
    assert (ind.true_range(BARS)[1:] == want).all()


def test_atr_of_constant_bars_is_the_bar_height():
    h, l, c = np.full(50, 11.0), np.full(50, 9.0), np.full(50, 10.0)
    assert ind.atr(ohlc(h, l, c), 14) == pytest.approx(2.0)


def test_rsi_bounds_and_extremes():
    assert ind.rsi(np.linspace(1, 2, 50), 14) == pytest.approx(100.0)
    assert ind.rsi(np.linspace(2, 1, 50), 14) == pytest.approx(0.0)
    assert all(0 < ind.rsi(CLOSE[:k], 14) < 100 for k in range(20, 200, 7))
    assert np.isnan(ind.rsi(CLOSE[:10], 14))
