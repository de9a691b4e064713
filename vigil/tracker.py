"""Opens, marks to market and closes positions: stops, targets, time exits and funding per leg."""
from vigil import schemas

DUST = 1e-9  # a leg smaller than this fraction of its opening size counts as closed


def _vwap(fills):
    qty = sum(f["qty"] for f in fills)
    return qty, sum(f["qty"] * f["price"] for f in fills) / qty, sum(f["fee_usdt"] for f in fills)


def _sign(side):
    return 1.0 if side == "buy" else -1.0


def open_position(trade, fills_by_leg, now, position_id):
    """A Position from the fills of each leg; fees count against realized PnL at once."""
    p = trade["proposal"]
    legs, fees = [], 0.0
    for leg, fills in zip(trade["legs"], fills_by_leg):
        if not fills:
            continue
        qty, price, fee = _vwap(fills)
        fees += fee
        legs.append({"venue": leg["venue"], "symbol": leg["symbol"], "side": leg["side"],
                     "market": leg["market"], "qty": qty, "entry": price, "mark": price, "funding": 0.0,
                     "opened_qty": qty, "funding_ts": now})
    return schemas.validate("Position", {
        "id": position_id, "strategy": p["strategy"], "symbol": p["symbol"], "kind": p["kind"],
        "side": p["side"], "legs": legs, "opened_at": now, "stop": p["stop"], "target": p["target"],
        "exit_by": now + int(p["max_hold_s"] * 1000) if p["max_hold_s"] else 0,
        "status": "open", "fees": fees, "funding": 0.0, "realized_pnl": -fees, "unrealized_pnl": 0.0,
        "closed_at": None, "close_reason": None, "proposal_id": p["id"]})


def mark(position, prices, funding, now):
    """Marks every leg, books funding settlements passed since the last mark, returns (position, exit reason)."""
    position = dict(position, legs=[dict(leg) for leg in position["legs"]])
    for leg in position["legs"]:
        leg["mark"] = prices.get((leg["venue"], leg["symbol"]), leg["mark"])
        rate = (funding or {}).get(leg["symbol"], {}).get(leg["venue"])
        if leg["market"] == "swap" and rate:
            _accrue(position, leg, rate, now)
    position["unrealized_pnl"] = sum((leg["mark"] - leg["entry"]) * leg["qty"] * _sign(leg["side"])
                                     for leg in position["legs"])
    return position, _exit_reason(position, now)


def _accrue(position, leg, rate, now):
    """Each settlement time in (funding_ts, now]: longs pay qty*mark*rate to shorts (negative rate: the reverse)."""
    step = int(rate["interval_h"] * 3_600_000)
    last = rate["next_ts"] - step  # the latest settlement at or before now
    while last > now:
        last -= step
    settlements = 0 if last <= leg["funding_ts"] else (last - leg["funding_ts"] - 1) // step + 1
    if settlements <= 0:
        return
    amount = -_sign(leg["side"]) * leg["qty"] * leg["mark"] * rate["rate"] * settlements
    leg["funding"] += amount
    leg["funding_ts"] = last
    position["funding"] += amount
    position["realized_pnl"] += amount


def _exit_reason(position, now):
    if position["status"] == "closing":
        return position["close_reason"]  # an exit that filled only partly goes on until done
    if position["exit_by"] and now >= position["exit_by"]:
        return "time"
    if position["kind"] != "directional":
        return None
    price = position["legs"][0]["mark"]
    long = position["side"] == "buy"
    if position["stop"] is not None and (price <= position["stop"] if long else price >= position["stop"]):
        return "stop"
    if position["target"] is not None and (price >= position["target"] if long else price <= position["target"]):
        return "target"
    return None


def close_position(position, fills_by_leg, now, reason):
    """Books the exit fills leg by leg; what did not fill stays open in status closing."""
    position = dict(position)
    booked = []
    for leg, fills in zip(position["legs"], fills_by_leg):
        leg = dict(leg)
        if fills:
            qty, price, fee = _vwap(fills)
            qty = min(qty, leg["qty"])
            position["realized_pnl"] += (price - leg["entry"]) * qty * _sign(leg["side"]) - fee
            position["fees"] += fee
            leg["qty"] -= qty
            leg["mark"] = price
        booked.append(leg)
    remaining = [leg for leg in booked if leg["qty"] > DUST * leg["opened_qty"]]
    if remaining:
        position.update(legs=remaining, status="closing", close_reason=reason)
        position["unrealized_pnl"] = sum((leg["mark"] - leg["entry"]) * leg["qty"] * _sign(leg["side"])
                                         for leg in remaining)
        return position
    # A closed position keeps its legs at their opening size, as a record of what was traded.
    position.update(legs=[dict(leg, qty=leg["opened_qty"]) for leg in booked], status="closed",
                    closed_at=now, close_reason=reason, unrealized_pnl=0.0)
    return position
