import pytest

import helpers
from helpers import fill, proposal, spread
from vigil import tracker

H = 3_600_000


def opened(p, legs_fills, now=0):
    legs = [{"venue": leg["venue"], "symbol": leg["symbol"], "side": leg["side"], "market": leg["market"],
             "qty": 1.0, "price": 100.0, "notional": 100.0} for leg in p["legs"]]
    return helpers.opened({"proposal": p, "legs": legs, "checks": []}, legs_fills, now)


def closed(position, legs_fills, now, reason, working=()):
    """Books exit fills leg by leg, as the executor does once each exit order answers."""
    position = dict(position, close_reason=position["close_reason"] or reason)
    for i, fills in enumerate(legs_fills):
        for f in fills:
            position = tracker.book(position, {"leg": i, "type": "market", "reduce_only": True}, f)
    return tracker.settle(position, [{"type": "market", "reduce_only": True, "status": s} for s in working], now, final=True)


def bars(close, low=None, high=None, ts=-60_000, open_=None):
    """The latest closed bar of BTC/USDT on binance; by default one that ended as the position opened."""
    low, high = min(close, low or close), max(close, high or close)
    return {("binance", "BTC/USDT"): {"ts": ts, "open": open_ or close, "high": high, "low": low, "close": close,
                                      "volume": 1.0}}


def test_directional_stop_target_and_time_exits():
    pos = opened(proposal(entry=100, stop=95, target=110, max_hold_s=3600), [[fill("o", 2, 100, fee=0.1)]])
    assert pos["realized_pnl"] == -0.1 and pos["exit_by"] == H
    pos, why, level = tracker.mark(pos, bars(104.0), None, 1000)
    assert (why, level) == (None, None) and pos["unrealized_pnl"] == pytest.approx(8.0)
    assert tracker.mark(pos, bars(94.0), None, 1000)[1:] == ("stop", None)  # the entry's own bar: its close
    assert tracker.mark(pos, bars(111.0), None, 1000)[1:] == ("target", None)
    assert tracker.mark(pos, bars(104.0), None, H)[1] == "time"
    # a bar after the entry: its low crossed the stop although it closed above, so the stop fired inside it
    assert tracker.mark(pos, bars(101.0, low=94.0, ts=0), None, 1000)[1:] == ("stop", 95)
    assert tracker.mark(pos, bars(101.0, high=112.0, ts=0), None, 1000)[1:] == ("target", 110)
    # both inside one bar: the stop, since the path inside the bar is unknown
    assert tracker.mark(pos, bars(101.0, low=94.0, high=112.0, ts=0), None, H)[1:] == ("stop", 95)


def test_close_books_pnl_and_a_partial_exit_stays_closing():
    pos = opened(proposal(), [[fill("o", 2, 100, fee=0.1)]])
    assert pos["status"] == "open" and pos["legs"][0]["opened_qty"] == 2
    working = closed(pos, [[]], 4, "target", working=["open"])
    assert working["status"] == "closing" and tracker.exit_in_flight(working, [{"type": "market", "reduce_only": True,
                                                                                "status": "open"}])
    half = closed(pos, [[fill("x", 1, 110, fee=0.05, side="sell")]], 5, "target")
    assert half["status"] == "closing" and half["legs"][0]["qty"] == 1
    assert tracker.mark(half, {}, None, 6)[1:] == ("target", None)  # the exit goes on next cycle, at market
    done = closed(half, [[fill("y", 1, 90, fee=0.05, side="sell")]], 7, "target")
    # +10 on the first unit, -10 on the second, fees 0.1 + 0.05 + 0.05
    assert done["status"] == "closed" and done["realized_pnl"] == pytest.approx(-0.2)
    assert done["closed_at"] == 7 and done["legs"][0]["qty"] == 0 and done["legs"][0]["opened_qty"] == 2


def test_an_entry_still_working_is_opening_and_one_that_never_filled_is_void():
    p = proposal()
    pos = opened(p, [[fill("o", 1, 100, trade_id="t1")]])
    assert tracker.settle(pos, [{"type": "market", "reduce_only": False, "status": "open", "leg": 0}], 1)["status"] == "opening"
    two = opened(spread(), [[fill("a", 1, 100)], []])  # the second leg's order not sent yet
    sent = [{"type": "market", "reduce_only": False, "status": "filled", "leg": 0}]
    assert tracker.settle(dict(two, status="opening"), sent, 1)["status"] == "opening"
    assert tracker.settle(dict(two, status="opening"), sent, 1, final=True)["status"] == "open"  # none will be
    assert tracker.mark(dict(pos, status="opening"), bars(1.0), None, 1)[1] is None
    more = tracker.book(pos, {"leg": 0, "type": "market", "reduce_only": False}, fill("o", 3, 104, trade_id="t2"))
    assert more["legs"][0]["qty"] == 4 and more["legs"][0]["entry"] == pytest.approx(103)  # the fills' VWAP
    assert opened(p, [[]])["status"] == "void"


def test_two_leg_spread_pnl_and_funding_by_hand():
    # Long 10 on binance at 100, short 10 on bybit at 101; fees 0.5 and 0.505.
    p = spread()
    pos = opened(p, [[fill("a", 10, 100, fee=0.5)], [fill("b", 10, 101, fee=0.505, side="sell", venue="bybit")]],
                 now=0)
    funding = {"BTC/USDT": {"binance": {"rate": 0.0001, "interval_h": 8.0, "next_ts": 8 * H, "mark": 100.0},
                            "bybit": {"rate": 0.0005, "interval_h": 4.0, "next_ts": 4 * H, "mark": 101.0}}}
    prices = {("binance", "BTC/USDT"): {"ts": 0, "open": 100.0, "high": 100.0, "low": 100.0, "close": 100.0},
              ("bybit", "BTC/USDT"): {"ts": 0, "open": 101.0, "high": 101.0, "low": 101.0, "close": 101.0}}
    pos, _, _ = tracker.mark(pos, prices, funding, 3 * H)  # no settlement passed yet
    assert pos["funding"] == 0
    funding["BTC/USDT"]["binance"]["next_ts"] = 16 * H
    funding["BTC/USDT"]["bybit"].update(next_ts=12 * H, rate=0.0004)
    pos, _, _ = tracker.mark(pos, prices, funding, 9 * H)
    # binance: one settlement (8h): long pays 10*100*0.0001 = 0.1
    # bybit: two settlements (4h, 8h) at 0.0004: short receives 2 * 10*101*0.0004 = 0.808
    assert pos["legs"][0]["funding"] == pytest.approx(-0.1)
    assert pos["legs"][1]["funding"] == pytest.approx(0.808)
    pos, _, _ = tracker.mark(pos, prices, funding, 10 * H)  # same settlements: nothing counted twice
    assert pos["funding"] == pytest.approx(0.708)
    done = closed(pos, [[fill("c", 10, 102, fee=0.51, side="sell")],
                        [fill("d", 10, 102.5, fee=0.5125, side="buy", venue="bybit")]], 11 * H, "spread compressed")
    # price: +20 on the long, -15 on the short; fees 0.5 + 0.505 + 0.51 + 0.5125 = 2.0275; funding +0.708
    assert done["status"] == "closed"
    assert done["realized_pnl"] == pytest.approx(20 - 15 - 2.0275 + 0.708)
    assert done["fees"] == pytest.approx(2.0275)
