import numpy as np
import pytest

from vigil import indicators, schemas
from vigil.trend import Trend

rng = np.random.default_rng(3)
N = 400
CLOSE = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, N)))
BARS = np.column_stack((60_000 * np.arange(N), CLOSE, CLOSE * (1 + np.abs(rng.normal(0, 0.001, N))),
                        CLOSE * (1 - np.abs(rng.normal(0, 0.001, N))), CLOSE, np.ones(N)))


def feed(c):
    return schemas.feed({"binance": {"BTC/USDT": c}}, 0)


def test_running_figures_match_the_window_computation_bar_by_bar():
    trend = Trend("binance", 14)
    for end in range(1, N + 1):
        out = trend.update(feed(BARS[max(0, end - 300):end]))["BTC/USDT"]
        assert schemas.problem("Trend", out) is None
        if end < 27:
            assert out["adx"] is None
    adx, atr = indicators.adx_atr(BARS, 14)  # the same bars in one window, seeded at the same first bar
    assert out["adx"] == pytest.approx(adx, rel=1e-9) and out["atr"] == pytest.approx(atr, rel=1e-9)
    assert out["bars"] == N


def test_a_window_that_does_not_continue_restarts_from_it():
    trend = Trend("binance", 14)
    trend.update(feed(BARS[:100]))
    out = trend.update(feed(BARS[200:300]))["BTC/USDT"]  # a jump: bars 100..199 were never seen
    fresh = Trend("binance", 14).update(feed(BARS[200:300]))["BTC/USDT"]
    assert out == fresh and out["bars"] == 100
    same = trend.update(feed(BARS[200:300]))["BTC/USDT"]  # no new bar: nothing counted twice
    assert same == fresh
    assert trend.update(schemas.feed(error="down")) == {}
