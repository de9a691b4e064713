import numpy as np
import pytest

from vigil import schemas
from vigil.market_state import RESUM_EVERY, FileTrend, Trend

PARAMS = {"adx_period": 14, "vol_short": 10, "vol_long": 60}
rng = np.random.default_rng(3)
N = RESUM_EVERY + 700  # past an exact re-sum of the volatility windows
CLOSE = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, N)))
BARS = np.column_stack((60_000 * np.arange(N), CLOSE, CLOSE * (1 + np.abs(rng.normal(0, 0.001, N))),
                        CLOSE * (1 - np.abs(rng.normal(0, 0.001, N))), CLOSE, np.ones(N)))


def feed(c):
    return schemas.feed({"binance": {"BTC/USDT": c}}, 0)


def wilder(x, n):
    y = sum(x[:n]) / n
    out = [y]
    for v in x[n:]:
        y += (v - y) / n
        out.append(y)
    return np.array(out)


def reference(c, n=14):
    """Wilder's ADX and ATR by the textbook loop, seeded at the first bar."""
    high, low, close = c[:, 2], c[:, 3], c[:, 4]
    up, down = np.diff(high), -np.diff(low)
    plus = np.concatenate(([0.0], np.where((up > down) & (up > 0), up, 0.0)))
    minus = np.concatenate(([0.0], np.where((down > up) & (down > 0), down, 0.0)))
    prev = np.concatenate(([close[0]], close[:-1]))
    tr = np.maximum.reduce([high - low, np.abs(high - prev), np.abs(low - prev)])
    p, m, t = wilder(plus, n), wilder(minus, n), wilder(tr, n)
    dx = np.where(p + m > 0, 100 * np.abs(p - m) / np.where(p + m > 0, p + m, 1), 0.0)
    return wilder(dx, n)[-1], t[-1]


def test_running_figures_match_the_textbook_bar_by_bar():
    trend = Trend("binance", PARAMS)
    for end in range(1, N + 1):
        out = trend.update(feed(BARS[max(0, end - 300):end]))["BTC/USDT"]
        assert schemas.problem("Trend", out) is None
        assert (out["adx"] is None) == (end < 27) and (out["vol_long"] is None) == (end < 61)
        if end in (100, RESUM_EVERY - 1, RESUM_EVERY + 1, N):
            adx, atr = reference(BARS[:end])
            assert out["adx"] == pytest.approx(adx, rel=1e-9) and out["atr"] == pytest.approx(atr, rel=1e-9)
            r = np.diff(np.log(CLOSE[:end]))
            assert out["vol_long"] == pytest.approx(np.std(r[-60:], ddof=1), rel=1e-9)
            assert out["vol_short"] == pytest.approx(np.std(r[-10:], ddof=1), rel=1e-9)
    assert out["bars"] == N


def test_adx_high_in_a_steady_trend_low_in_chop():
    def adx(close):
        c = np.column_stack((60_000 * np.arange(len(close)), close, close + 0.5, close - 0.5, close,
                             np.ones(len(close))))
        return Trend("binance", PARAMS).update(feed(c))["BTC/USDT"]["adx"]
    assert adx(np.linspace(100, 200, 120)) > 60
    assert adx(100 + np.tile([1.0, -1.0], 60)) < 20


def test_a_window_that_does_not_continue_restarts_from_it():
    trend = Trend("binance", PARAMS)
    trend.update(feed(BARS[:100]))
    out = trend.update(feed(BARS[200:300]))["BTC/USDT"]  # a jump: bars 100..199 were never seen
    fresh = Trend("binance", PARAMS).update(feed(BARS[200:300]))["BTC/USDT"]
    assert out == fresh and out["bars"] == 100
    assert trend.update(feed(BARS[200:300]))["BTC/USDT"] == fresh  # no new bar: nothing counted twice
    assert trend.update(schemas.feed(error="down")) == {}


def test_a_backtest_s_figures_over_the_file_equal_the_running_ones(monkeypatch):
    """FileTrend, slice by slice over the whole file, gives what Trend gives bar by bar, from the first window's
    first bar (the seed, ADX's first value, the volatility windows filling) to past a re-sum, across slices."""
    monkeypatch.setattr(FileTrend, "SLICE", 250)
    for params in (PARAMS, {"adx_period": 3, "vol_short": 3, "vol_long": 400}):
        running, whole = Trend("binance", params), FileTrend("binance", params, {"BTC/USDT": BARS})
        for end in range(6, N + 1):
            window = feed(BARS[max(5, end - 300):end])  # the count starts at bar 5, the first window's first
            want, got = running.update(window)["BTC/USDT"], whole.update(window)["BTC/USDT"]
            assert got.keys() == want.keys() and got["bars"] == want["bars"]
            for k in ("adx", "atr", "vol_short", "vol_long"):
                assert (got[k] is None) == (want[k] is None), (end, k)
                assert got[k] is None or got[k] == pytest.approx(want[k], rel=1e-9), (end, k)
    assert whole.update(schemas.feed(error="down")) == {}
    empty = feed(BARS[:0])  # a symbol listed later than the others: no bar yet
    assert FileTrend("binance", PARAMS, {"BTC/USDT": BARS}).update(empty) == Trend("binance", PARAMS).update(empty)
