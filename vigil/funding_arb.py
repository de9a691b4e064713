"""Opens a delta-neutral two-venue perpetual spread when funding diverges enough to pay for itself, and closes it when the edge goes."""
from vigil import schemas

PARAMS = {
    "entry_apr": (float, 0.25, 0.0, 10.0, "net annualized funding spread to open (0.25 = 25%)"),
    "exit_apr": (float, 0.05, -1.0, 10.0, "close when the annualized spread falls below this"),
    "fee_rate": (float, 0.0005, 0.0, 0.01, "taker fee per leg and side, both venues"),
    "slippage": (float, 0.0003, 0.0, 0.05, "expected slippage per leg and side"),
    "hold_days": (float, 3.0, 0.1, 365.0, "expected holding period, to annualize entry and exit costs"),
    "spot_leg": (bool, False, None, None, "long spot on the cheap venue instead of its perpetual"),
    "max_hold_s": (float, 0.0, 0.0, 31536000.0, "time exit in seconds (0 = none)"),
}


def annualized(rate):
    return rate["rate"] * 24 / rate["interval_h"] * 365


def quiet(candles, window, feeds, params):
    """Without funding rates it has nothing to compare."""
    return "funding" not in feeds


def propose(ctx):
    name, params = ctx["name"], ctx["params"]
    feed = ctx["snapshot"]["feeds"]["funding"]
    if not feed["ok"]:
        return {"strategy": name, "reason": f"funding feed unavailable: {feed['error']}"}
    for position in ctx["positions"]:
        exit_reason = _exit(position, feed["data"].get(position["symbol"], {}), params)
        if exit_reason:
            return schemas.exit_proposal(ctx, position, exit_reason)
    held = {p["symbol"] for p in ctx["positions"]}
    cost = 4 * (params["fee_rate"] + params["slippage"]) * 365 / params["hold_days"]
    best, why = None, "no symbol with funding on two venues"
    for symbol in ctx["symbols"]:
        rates = {v: r for v, r in feed["data"].get(symbol, {}).items() if v in ctx["venues"]}
        if symbol in held or len(rates) < 2:
            continue
        high = max(rates, key=lambda v: annualized(rates[v]))
        low = min(rates, key=lambda v: annualized(rates[v]))
        gross = annualized(rates[high]) - annualized(rates[low])
        net = gross - cost
        why = f"best net funding spread {net:.1%} a year, below the {params['entry_apr']:.0%} entry threshold"
        if net > params["entry_apr"] and (best is None or net > best[0]):
            best = (net, gross, symbol, high, low, rates)
    if best is None:
        return {"strategy": name, "reason": why}
    net, gross, symbol, high, low, rates = best
    long_market = "spot" if params["spot_leg"] else "swap"
    legs = [{"venue": low, "symbol": symbol, "side": "buy", "market": long_market},
            {"venue": high, "symbol": symbol, "side": "sell", "market": "swap"}]
    reason = (f"{symbol} funding pays {annualized(rates[high]):.1%} a year on {high} against "
              f"{annualized(rates[low]):.1%} on {low}: {net:.1%} net of fees and slippage, so short {high} "
              f"and long {low}")
    confidence = net / (4 * params["entry_apr"]) if params["entry_apr"] else 1.0
    return schemas.proposal(ctx, symbol=symbol, side="buy", legs=legs, entry=rates[low]["mark"], stop=None,
                            target=None, confidence=confidence, reason=reason, kind="spread",
                            max_hold_s=params["max_hold_s"])

def _exit(position, rates, params):
    """The spread as held (short leg's funding minus long leg's) has compressed or flipped."""
    short = next(leg for leg in position["legs"] if leg["side"] == "sell")
    long = next(leg for leg in position["legs"] if leg["side"] == "buy")
    if short["venue"] not in rates or (long["market"] == "swap" and long["venue"] not in rates):
        return None  # without both rates there is no evidence to act on; the position is held
    paid = annualized(rates[short["venue"]])
    owed = annualized(rates[long["venue"]]) if long["market"] == "swap" else 0.0
    spread = paid - owed
    if spread < 0:
        return f"funding spread flipped to {spread:.1%} a year ({short['venue']} now pays less than {long['venue']})"
    if spread < params["exit_apr"]:
        return f"funding spread compressed to {spread:.1%} a year, below the {params['exit_apr']:.0%} exit threshold"
    return None

