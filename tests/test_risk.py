from hypothesis import given, settings, strategies as st

from helpers import RISK, opened, proposal, spread
from vigil import risk, schemas

PRICES = {("binance", "BTC/USDT"): 100.0, ("bybit", "BTC/USDT"): 100.0,
          ("binance", "ETH/USDT"): 50.0, ("bybit", "ETH/USDT"): 50.0}


def state(positions=(), equity=10000.0, day_start=10000.0):
    return {"now": 0, "equity": equity, "day_start_equity": day_start, "positions": list(positions),
            "prices": PRICES}


def test_size_from_risk_per_trade_and_stop_distance():
    (verdict, trade), = risk.evaluate([proposal(entry=100, stop=98)], state(), RISK)
    assert verdict["approved"]
    # 0.5% of 10,000 = 50 at risk over a 2.0 stop distance -> 25 units, but the position cap is 2,500 -> 25.
    assert trade["legs"][0]["qty"] == 25
    (verdict, trade), = risk.evaluate([proposal(entry=100, stop=90)], state(), RISK)
    assert trade["legs"][0]["qty"] == 5  # 50 / 10
    assert {c["name"] for c in verdict["checks"]} >= {"daily_loss", "open_positions", "stop_side", "gross_cap",
                                                      "symbol_cap", "net_cap", "position_cap", "min_notional"}


def test_stop_on_the_wrong_side_is_rejected():
    (verdict, trade), = risk.evaluate([proposal(entry=100, stop=105)], state(), RISK)
    assert not verdict["approved"] and trade is None and "stop_side" in verdict["reason"]


def test_daily_loss_blocks_entries_but_not_exits():
    pos = {"id": "p1", "strategy": "s", "symbol": "ETH/USDT", "side": "buy", "kind": "directional",
           "status": "open", "legs": [{"venue": "binance", "symbol": "ETH/USDT", "side": "buy", "market": "swap",
                                        "qty": 1.0, "entry": 50.0, "mark": 50.0, "funding": 0.0}]}
    close = proposal(symbol="ETH/USDT", side="sell", entry=50, stop=None, target=None, intent="close", position_id="p1")
    out = risk.evaluate([proposal(), close], state([pos], equity=9600, day_start=10000), RISK)
    assert not out[0][0]["approved"] and "daily_loss" in out[0][0]["reason"]
    assert out[1][0]["approved"] and out[1][1]["legs"][0]["side"] == "sell" and out[1][1]["legs"][0]["qty"] == 1.0


def test_conflicting_proposals_keep_the_most_confident():
    a = proposal(side="buy", strategy="a", confidence=0.4)
    b = proposal(side="sell", entry=100, stop=105, target=90, strategy="b", confidence=0.9)
    (va, ta), (vb, tb) = risk.evaluate([a, b], state(), RISK)
    assert not va["approved"] and ta is None and "conflict" in va["checks"][0]["name"]
    assert vb["approved"]


def test_spread_sizes_both_legs_equally():
    (verdict, trade), = risk.evaluate([spread()], state(), RISK)
    assert verdict["approved"]
    q = [leg["qty"] for leg in trade["legs"]]
    assert q[0] == q[1] and abs(q[0] * 100 - 1250) < 1e-6


def exposures(positions):
    by_symbol, gross, net = {}, 0.0, 0.0
    for p in positions:
        for leg in p["legs"]:
            n = leg["qty"] * PRICES[(leg["venue"], leg["symbol"])]
            gross += n
            by_symbol[leg["symbol"]] = by_symbol.get(leg["symbol"], 0.0) + n
            net += n if leg["side"] == "buy" else -n
    return by_symbol, gross, net


def test_caps_hold_for_any_sequence_of_proposals():
    one = st.tuples(st.sampled_from(["BTC/USDT", "ETH/USDT"]), st.sampled_from(["buy", "sell"]),
                    st.floats(0.001, 0.5), st.floats(0, 1), st.sampled_from(["a", "b", "c"]),
                    st.booleans(), st.integers(0, 10))

    @settings(max_examples=200, derandomize=True, deadline=None)
    @given(st.lists(st.lists(one, max_size=5), max_size=8))
    def check(batches):
        equity = 10000.0
        positions = []
        for cycle, batch in enumerate(batches):
            proposals = []
            for symbol, side, dist, conf, strat, is_spread, close_idx in batch:
                price = PRICES[("binance", symbol)]
                if close_idx < len(positions) and close_idx % 3 == 0:
                    p = positions[close_idx]
                    proposals.append(proposal(symbol=p["symbol"], side=side, entry=price, stop=None, target=None,
                                              strategy=p["strategy"], cycle=cycle, intent="close",
                                              position_id=p["id"]))
                elif is_spread:
                    proposals.append(spread(symbol=symbol, entry=price, strategy=strat, cycle=cycle))
                else:
                    stop = price * (1 - dist) if side == "buy" else price * (1 + dist)
                    proposals.append(proposal(symbol=symbol, side=side, entry=price, stop=stop, target=None, strategy=strat,
                                              cycle=cycle, confidence=conf))
            for i, p in enumerate(proposals):
                p["id"] += f":{i}"
            for verdict, trade in risk.evaluate(proposals, state(positions, equity), RISK):
                schemas.validate("Verdict", verdict)
                if trade is None:
                    continue
                p = trade["proposal"]
                if p["intent"] == "close":
                    positions = [q for q in positions if q["id"] != p["position_id"]]
                    continue
                fills = [[{"qty": leg["qty"], "price": leg["price"], "fee_usdt": 0.0}] for leg in trade["legs"]]
                positions.append(opened(trade, fills))
            by_symbol, gross, net = exposures(positions)
            eps = 1e-6
            assert len(positions) <= RISK["max_open_positions"]
            assert gross <= RISK["max_gross"] * equity + eps
            assert abs(net) <= RISK["max_net"] * equity + eps
            for v in by_symbol.values():
                assert v <= RISK["max_symbol"] * equity + eps
            for p in positions:
                assert sum(leg["qty"] * leg["entry"] for leg in p["legs"]) <= RISK["max_position"] * equity + eps
    check()
