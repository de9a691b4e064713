"""Keeps the positions: books fills into them, marks them to market (stops, targets, time exits, funding per leg)
and holds the live ones with the closed PnL."""
from vigil import schemas

DUST = 1e-9  # a leg smaller than this fraction of its opening size counts as closed


def _sign(side):
    return 1.0 if side == "buy" else -1.0


def new_position(trade, now):
    """The Position an approved trade will become, written before its first order: every leg at zero."""
    p = trade["proposal"]
    legs = [{"venue": leg["venue"], "symbol": leg["symbol"], "side": leg["side"], "market": leg["market"],
             "qty": 0.0, "opened_qty": 0.0, "entry": leg["price"], "mark": leg["price"], "funding": 0.0,
             "funding_ts": now} for leg in trade["legs"]]
    return schemas.validate("Position", {
        "id": p["id"], "strategy": p["strategy"], "symbol": p["symbol"], "kind": p["kind"],
        "side": p["side"], "legs": legs, "opened_at": now, "stop": p["stop"], "target": p["target"],
        "exit_by": now + int(p["max_hold_s"] * 1000) if p["max_hold_s"] else 0,
        "status": "opening", "fees": 0.0, "funding": 0.0, "realized_pnl": 0.0, "unrealized_pnl": 0.0,
        "closed_at": None, "close_reason": None, "proposal_id": p["id"], "stop_order": None,
        "stop_held": False})


def book(position, order, fill):
    """Adds one fill of one of the position's orders: an entry grows its leg, an exit (reduce-only) shrinks it."""
    position = dict(position, legs=list(position["legs"]))
    leg = position["legs"][order["leg"]] = dict(position["legs"][order["leg"]])
    qty, price, fee = fill["qty"], fill["price"], fill["fee_usdt"]
    if order["reduce_only"]:
        if order["type"] == "venue_stop":
            position["close_reason"] = position["close_reason"] or "stop"  # the venue's stop fired
        position["realized_pnl"] += (price - leg["entry"]) * qty * _sign(leg["side"])
        leg["qty"] -= qty
        leg["mark"] = price
    else:
        leg["entry"] = (leg["entry"] * leg["opened_qty"] + price * qty) / (leg["opened_qty"] + qty)
        leg["opened_qty"] += qty
        leg["qty"] += qty
    position["fees"] += fee
    position["realized_pnl"] -= fee
    return position


def settle(position, orders, now, final=False):
    """The position's status from its orders (dicts of every order it sent) and the quantity its fills left.

    A leg with no entry order yet keeps an opening position opening (the rest of the trade is still to be
    sent), unless final: nothing more will be sent for it (a halt, or a restart settling what a crash left).
    A stop resting at the venue is no exit in flight; stop_order names it, stop_held says the venue confirmed it.
    """
    working = [o for o in orders if o["status"] in schemas.ORDER_WORKING and o["type"] != "venue_stop"]
    stop = next((o for o in orders if o["type"] == "venue_stop" and o["status"] in schemas.ORDER_WORKING), None)
    unsent = len({o["leg"] for o in orders if not o["reduce_only"]}) < len(position["legs"])
    if any(not o["reduce_only"] for o in working) or unsent and not final and position["status"] == "opening":
        status = "opening"
    elif not any(leg["opened_qty"] for leg in position["legs"]):
        status = "void"  # every entry order ended without a fill
    elif all(leg["qty"] <= DUST * leg["opened_qty"] for leg in position["legs"]):
        status = "closed"
    elif working or position["close_reason"]:
        status = "closing"  # an exit is in flight, or one ended short and is sent again next cycle
    else:
        status = "open"
    was, position = position["status"], dict(position, status=status, stop_order=stop and stop["id"],
                                             stop_held=bool(stop) and stop["status"] == "open")
    if status == "closed" and was != "closed":
        position.update(closed_at=now, unrealized_pnl=0.0)
    return position


def exit_in_flight(position, orders):
    return any(o["reduce_only"] and o["type"] != "venue_stop" and o["status"] in schemas.ORDER_WORKING
               for o in orders)


def mark(position, bars, funding, now):
    """Marks every leg at its bar's close, books funding settlements passed since the last mark.

    bars: {(venue, symbol): Bar}, the latest closed bar of each. Returns (position, exit reason, level): level
    is the stop or target a bar after the entry crossed (the price an exit resting there would fill at), or
    None for an exit at market.
    """
    position = dict(position, legs=[dict(leg) for leg in position["legs"]])
    for leg in position["legs"]:
        bar = bars.get((leg["venue"], leg["symbol"]))
        if bar:
            leg["mark"] = bar["close"]
        rate = (funding or {}).get(leg["symbol"], {}).get(leg["venue"])
        if leg["market"] == "swap" and rate:
            _accrue(position, leg, rate, now)
    position["unrealized_pnl"] = sum((leg["mark"] - leg["entry"]) * leg["qty"] * _sign(leg["side"])
                                     for leg in position["legs"])
    leg = position["legs"][0]
    return (position, *_exit(position, bars.get((leg["venue"], leg["symbol"])), now))


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


def _exit(position, bar, now):
    """(reason, level) of the exit due now, or (None, None)."""
    if position["status"] == "opening":
        return None, None  # its entry orders are still working: nothing to close yet
    if position["status"] == "closing":
        return position["close_reason"], None  # an exit that filled only partly goes on at market until done
    if position["kind"] == "directional":
        long = position["side"] == "buy"
        low = high = position["legs"][0]["mark"]
        inside = bool(bar) and bar["ts"] >= position["opened_at"]  # a whole bar since the entry
        if inside:  # where the price went inside it, not only where it closed
            low, high = bar["low"], bar["high"]
        stop, target = position["stop"], position["target"]
        # the stop first when both are inside one bar: the bar's path is unknown, so assume the worse;
        # a stop the venue holds is the venue's to fire; one it has not confirmed (its answer lost) is watched
        if stop is not None and not position["stop_held"] and (low <= stop if long else high >= stop):
            return "stop", stop if inside else None
        if target is not None and (high >= target if long else low <= target):
            return "target", target if inside else None
    if position["exit_by"] and now >= position["exit_by"]:
        return "time", None
    return None, None


class Book:
    """The live positions and the closed PnL as the database holds them, kept in step as positions change."""

    def __init__(self, db, settings, alert):
        self.db = db
        self.settings = settings  # the [vigil] section: starting_equity
        self.alert = alert
        self.day_start = db.get("day_start")
        self.load()

    def load(self):
        """From the database (start, and after a halt or a failure mid-step)."""
        self.positions = {p["id"]: p for p in self.db.positions(*schemas.POSITION_LIVE)}
        self.closed_pnl = self.db.realized_pnl(closed_only=True)

    def book(self, position):
        if position["status"] in schemas.POSITION_LIVE:
            self.positions[position["id"]] = position
            return
        self.positions.pop(position["id"], None)
        self.closed_pnl += position["realized_pnl"]  # void: nothing filled, nothing realized
        if position["status"] == "closed":
            self.alert("trade", f"closed {position['id']} ({position['close_reason']}): "
                                f"pnl {position['realized_pnl']:+.2f}")

    def equity(self):
        equity = self.settings["starting_equity"] + self.closed_pnl
        for p in self.positions.values():
            equity += p["realized_pnl"] + p["unrealized_pnl"]
        return equity

    def day_start_equity(self, now):
        """Equity at the first cycle of the UTC day of now: the daily loss limit counts from it."""
        day = now // 86_400_000
        if not self.day_start or self.day_start["day"] != day:
            self.day_start = {"day": day, "equity": self.equity()}
            self.db.put("day_start", self.day_start)
        return self.day_start["equity"]
