import pytest

from helpers import FILLS
from vigil.sim import simulate

BAR = {"ts": 0, "open": 100.0, "high": 102.0, "low": 98.0, "close": 101.0, "volume": 1000.0}


def order(qty, side="buy", type_="market", price=None):
    return {"id": "o1", "venue": "binance", "symbol": "BTC/USDT", "side": side, "qty": qty, "type": type_,
            "price": price}


def test_market_buy_pays_fee_and_size_dependent_slippage():
    f = simulate(order(10), BAR, FILLS)
    slip = 1 / 1e4 + 0.003 * (10 / 1000) ** 0.5
    assert f["qty"] == 10 and f["price"] == pytest.approx(101 * (1 + slip))
    assert f["fee"] == pytest.approx(10 * f["price"] * 0.0005) and f["liquidity"] == "taker"
    small = simulate(order(1), BAR, FILLS)
    assert small["price"] < f["price"]  # bigger orders slip more


def test_market_sell_receives_less():
    assert simulate(order(10, "sell"), BAR, FILLS)["price"] < 101


def test_partial_fill_when_the_bar_cannot_absorb_it():
    f = simulate(order(500), BAR, FILLS)
    assert f["qty"] == pytest.approx(100)  # 10% of the bar's volume


def test_no_volume_no_fill():
    assert simulate(order(1), dict(BAR, volume=0.0), FILLS) is None


def test_a_crossed_stop_or_target_fills_at_its_level_or_at_a_gapped_open():
    slip = 1 / 1e4 + 0.003 * (10 / 1000) ** 0.5
    gap_down = dict(BAR, open=96.0, low=95.0)
    # a long's stop (sell) at 99: inside the bar at 99; when the bar opened below it, at that open (worse)
    assert simulate(order(10, "sell", "stop", 99.0), BAR, FILLS)["price"] == pytest.approx(99 * (1 - slip))
    assert simulate(order(10, "sell", "stop", 99.0), gap_down, FILLS)["price"] == pytest.approx(96 * (1 - slip))
    # a short's stop (buy) at 101.5: there, or at an open above it
    assert simulate(order(10, "buy", "stop", 101.5), BAR, FILLS)["price"] == pytest.approx(101.5 * (1 + slip))
    gap_up = dict(BAR, open=103.0, high=104.0)
    assert simulate(order(10, "buy", "stop", 101.5), gap_up, FILLS)["price"] == pytest.approx(103 * (1 + slip))
    # a long's target (sell) at 101.5: there, or at an open above it (better)
    assert simulate(order(10, "sell", "target", 101.5), BAR, FILLS)["price"] == pytest.approx(101.5 * (1 - slip))
    assert simulate(order(10, "sell", "target", 101.5), gap_up, FILLS)["price"] == pytest.approx(103 * (1 - slip))
