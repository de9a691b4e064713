"""Sizes each proposal and holds it against every exposure limit, recording each check with its figures."""
import math

from vigil import schemas


def _check(name, ok, value, limit, detail):
    return {"name": name, "ok": bool(ok), "value": None if value is None else round(float(value), 8),
            "limit": None if limit is None else round(float(limit), 8), "detail": detail}


def _exposure(positions, prices):
    """Signed notional per symbol and gross notional, marked at the latest prices."""
    by_symbol, gross = {}, 0.0
    for p in positions:
        for leg in p["legs"]:
            notional = leg["qty"] * prices.get((leg["venue"], leg["symbol"]), leg["mark"])
            by_symbol.setdefault(leg["symbol"], [0.0, 0.0])
            by_symbol[leg["symbol"]][0 if leg["side"] == "buy" else 1] += notional
            gross += notional
    return by_symbol, gross


def evaluate(proposals, state, params):
    """Returns [(Verdict, ApprovedTrade or None)] in proposal order; approved trades count toward later caps."""
    positions = list(state["positions"])
    winners = _resolve_conflicts(proposals)
    out = []
    for p in proposals:
        if p["intent"] == "close":
            out.append(_close(p, positions))
        elif winners.get(p["symbol"]) is not p:
            w = winners[p["symbol"]]
            check = _check("conflict", False, p["confidence"], w["confidence"],
                           f"{w['strategy']} proposed {w['side']} {p['symbol']} with higher priority")
            out.append((_verdict(p, [check], f"rejected: conflicts with {w['id']}"), None))
        else:
            verdict, trade = _open(p, state, positions, params)
            out.append((verdict, trade))
            if trade:
                positions.append({"strategy": p["strategy"], "symbol": p["symbol"], "side": p["side"],
                                  "legs": [dict(leg, mark=leg["price"]) for leg in trade["legs"]]})
    return out


def _resolve_conflicts(proposals):
    """One opening per symbol per cycle: the highest confidence wins, ties go to the earlier proposal."""
    winners = {}
    for p in proposals:
        if p["intent"] == "open":
            w = winners.get(p["symbol"])
            if w is None or p["confidence"] > w["confidence"]:
                winners[p["symbol"]] = p
    return winners


def _close(p, positions):
    position = next((q for q in positions if q.get("id") == p["position_id"]), None)
    if position is None or position["strategy"] != p["strategy"]:
        check = _check("position", False, None, None, f"no open position {p['position_id']} of {p['strategy']}")
        return _verdict(p, [check], f"rejected: no open position {p['position_id']}"), None
    legs = [{"venue": leg["venue"], "symbol": leg["symbol"], "side": schemas.opposite(leg["side"]),
             "market": leg["market"], "qty": leg["qty"], "price": leg["mark"], "notional": leg["qty"] * leg["mark"]}
            for leg in position["legs"]]
    check = _check("exit", True, None, None, "exits are always allowed by risk")
    trade = {"proposal": p, "legs": legs, "checks": [check]}
    return _verdict(p, [check], f"approved: close {p['position_id']}"), schemas.validate("ApprovedTrade", trade)


def _open(p, state, positions, params):
    equity = state["equity"]
    prices = state["prices"]
    checks = []
    price = {(leg["venue"], leg["symbol"]): prices.get((leg["venue"], leg["symbol"]), p["entry"])
             for leg in p["legs"]}
    loss = state["day_start_equity"] - equity
    checks.append(_check("daily_loss", loss < params["daily_loss"] * state["day_start_equity"],
                         loss, params["daily_loss"] * state["day_start_equity"], "loss since 00:00 UTC"))
    open_count = sum(1 for q in positions if q.get("status", "open") != "closed")
    checks.append(_check("open_positions", open_count < params["max_open_positions"], open_count + 1,
                         params["max_open_positions"], "positions after this one"))
    opposing = [q for q in positions if q["symbol"] == p["symbol"] and q["side"] != p["side"]
                and p["kind"] == "directional" and q.get("kind", "directional") == "directional"]
    checks.append(_check("opposes_open_position", not opposing, len(opposing), 0,
                         f"held the other way by {opposing[0]['strategy']}" if opposing else "no opposite holding"))
    # Size: what is lost at the stop is risk_per_trade of equity; a spread has no stop, so the cap sizes it.
    per_leg_cap = params["max_position"] * equity / len(p["legs"])
    if p["kind"] == "directional":
        stop_ok = p["stop"] is not None and (p["stop"] < p["entry"] if p["side"] == "buy" else p["stop"] > p["entry"])
        checks.append(_check("stop_side", stop_ok, p["stop"], p["entry"], "stop must be on the losing side of entry"))
        risk_cash = params["risk_per_trade"] * equity
        notional = risk_cash / (abs(p["entry"] - p["stop"]) / p["entry"]) if stop_ok else 0.0
    else:
        notional = per_leg_cap
    notional = min(notional, per_leg_cap)
    by_symbol, gross = _exposure(positions, prices)
    long, short = by_symbol.get(p["symbol"], [0.0, 0.0])
    room_symbol = params["max_symbol"] * equity - (long + short)
    room_gross = params["max_gross"] * equity - gross
    net_now = sum(v[0] - v[1] for v in by_symbol.values())
    if p["kind"] == "directional":
        delta = 1 if p["side"] == "buy" else -1
        room_net = params["max_net"] * equity - delta * net_now
    else:
        room_net = float("inf")  # equal legs: a spread adds no net exposure
    limit_per_leg = min(room_symbol, room_gross, room_net * len(p["legs"])) / len(p["legs"])
    shrunk = limit_per_leg < notional
    notional = max(0.0, min(notional, limit_per_leg))
    checks.append(_check("position_cap", True, notional * len(p["legs"]), params["max_position"] * equity,
                         "notional of this position"))
    checks.append(_check("symbol_cap", True, long + short + notional * len(p["legs"]),
                         params["max_symbol"] * equity, f"{p['symbol']} notional after this trade"))
    checks.append(_check("net_cap", True, abs(net_now + (notional if p["side"] == "buy" else -notional)
                                             if p["kind"] == "directional" else net_now),
                         params["max_net"] * equity, "|long - short| after this trade"))
    checks.append(_check("gross_cap", True, gross + notional * len(p["legs"]), params["max_gross"] * equity,
                         "gross exposure after this trade"))
    checks.append(_check("min_notional", notional >= params["min_notional"], notional, params["min_notional"],
                         "shrunk to fit the caps" if shrunk else "per leg"))
    failed = [c for c in checks if not c["ok"]]
    if failed:
        return _verdict(p, checks, "rejected: " + "; ".join(f"{c['name']} ({c['detail']})" for c in failed)), None
    legs = []
    # One quantity for every leg (rounded down: rounding must never break a cap), so a spread stays
    # delta-neutral whatever the small price difference between its venues.
    qty = math.floor(notional / max(price.values()) * 1e8) / 1e8
    for leg in p["legs"]:
        px = price[(leg["venue"], leg["symbol"])]
        legs.append({"venue": leg["venue"], "symbol": leg["symbol"], "side": leg["side"],
                     "market": leg["market"], "qty": qty, "price": px, "notional": qty * px})
    trade = schemas.validate("ApprovedTrade", {"proposal": p, "legs": legs, "checks": checks})
    described = " / ".join(f"{leg['side']} {leg['qty']:g} {leg['symbol']}@{leg['venue']}" for leg in legs)
    reason = (f"approved: {described}"
              f" ({notional * len(legs) / equity:.1%} of equity{', shrunk to fit' if shrunk else ''})")
    return _verdict(p, checks, reason), trade


def _verdict(p, checks, reason):
    return {"proposal_id": p["id"], "approved": reason.startswith("approved"), "checks": checks, "reason": reason}
