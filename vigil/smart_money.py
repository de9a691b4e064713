"""Trades with coordinated whale flows: large net inflows to exchanges are bearish, large outflows bullish."""
import math

from vigil import indicators, schemas
from vigil.schemas import CLOSE

EXITS = False  # it never proposes an exit: its positions end at their stop, target or time
PARAMS = {
    "min_usd": (float, 1_000_000.0, 0.0, 1e12, "ignore transfers smaller than this (USD)"),
    "threshold_usd": (float, 20_000_000.0, 0.0, 1e13, "decayed net exchange flow that triggers a trade (USD)"),
    "min_transfers": (int, 3, 1, 1000, "distinct large transfers needed (coordination)"),
    "decay_s": (float, 1800.0, 1.0, 604800.0, "half-life of a transfer's weight in seconds"),
    "atr_period": (int, 14, 2, 200, "ATR period for stop and target"),
    "stop_atr": (float, 3.0, 0.1, 50.0, "stop distance in ATRs"),
    "target_atr": (float, 6.0, 0.1, 100.0, "target distance in ATRs"),
    "max_hold_s": (float, 10800.0, 0.0, 2592000.0, "time exit in seconds (0 = none)"),
}


def quiet(candles, window, feeds, params):
    """Without on-chain transfers it has no flows to follow."""
    return "onchain" not in feeds


def propose(ctx):
    name, params = ctx["name"], ctx["params"]
    onchain = ctx["snapshot"]["feeds"]["onchain"]
    candles = ctx["snapshot"]["feeds"]["candles"]
    if not onchain["ok"]:
        return {"strategy": name, "reason": f"onchain feed unavailable: {onchain['error']}"}
    if not candles["ok"]:
        return {"strategy": name, "reason": f"candles feed unavailable: {candles['error']}"}
    flows = net_flows(onchain["data"]["transfers"], ctx["now"], params)
    held = {p["symbol"] for p in ctx["positions"]}
    by_asset = {s.split("/")[0]: s for s in ctx["symbols"]}
    best = None
    for asset, (net, count, span_s) in flows.items():
        symbol = by_asset.get(asset)
        if symbol is None or symbol in held or count < params["min_transfers"]:
            continue
        if abs(net) >= params["threshold_usd"] and (best is None or abs(net) > abs(best[1])):
            best = (symbol, net, count, span_s)
    if best is None:
        strongest = max(flows.items(), key=lambda kv: abs(kv[1][0]), default=None)
        if strongest is None:
            return {"strategy": name, "reason": "no large exchange flows in the window"}
        asset, (net, count, _) = strongest
        return {"strategy": name, "reason": f"strongest flow {asset} ${net / 1e6:+.1f}M net over {count} "
                                            f"transfer(s), below the trigger"}
    symbol, net, count, span_s = best
    c = candles["data"].get(ctx["trade_venue"], {}).get(symbol)
    if c is None or len(c) < params["atr_period"] + 2:
        return {"strategy": name, "reason": f"not enough {symbol} candles for a stop"}
    entry = float(c[-1, CLOSE])
    atr = indicators.atr(c, params["atr_period"])
    side = "sell" if net > 0 else "buy"
    sign = 1 if side == "buy" else -1
    reason = (f"${abs(net) / 1e6:.1f}M net {'inflow to' if net > 0 else 'outflow from'} exchanges in {count} "
              f"{symbol.split('/')[0]} transfers over {span_s / 60:.0f} min, so {side} {symbol}")
    legs = [{"venue": ctx["trade_venue"], "symbol": symbol, "side": side, "market": "swap"}]
    confidence = abs(net) / (3 * params["threshold_usd"]) if params["threshold_usd"] else 1.0
    return schemas.proposal(ctx, symbol=symbol, side=side, legs=legs, entry=entry,
                            stop=entry - sign * params["stop_atr"] * atr, target=entry + sign * params["target_atr"] * atr,
                            confidence=confidence, reason=reason, max_hold_s=params["max_hold_s"])

def net_flows(transfers, now, params):
    """asset -> (decayed inflow minus outflow in USD, distinct transfers counted, seconds spanned)."""
    seen, out = set(), {}
    for t in transfers:
        if t["id"] in seen or t["usd"] < params["min_usd"] or t["flow"] not in ("inflow", "outflow"):
            continue
        seen.add(t["id"])
        weight = math.pow(0.5, max(0, now - t["ts"]) / 1000 / params["decay_s"])
        net, count, first, last = out.get(t["asset"], (0.0, 0, t["ts"], t["ts"]))
        signed = t["usd"] if t["flow"] == "inflow" else -t["usd"]
        out[t["asset"]] = (net + signed * weight, count + 1, min(first, t["ts"]), max(last, t["ts"]))
    return {a: (net, count, (last - first) / 1000) for a, (net, count, first, last) in out.items()}
