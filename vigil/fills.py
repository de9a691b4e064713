"""Simulates how one order fills against one bar: fees, size-dependent slippage and partial fills."""


def simulate(order, bar, params):
    """Returns a Fill for what the bar can absorb, or None when nothing fills (IOC: the rest is dropped)."""
    if not bar or bar["volume"] <= 0:
        return None
    qty = min(order["qty"], params["max_participation"] * bar["volume"])
    if qty <= 0:
        return None
    buy = order["side"] == "buy"
    if order["type"] == "limit":
        limit = order["price"]
        crossed = bar["low"] <= limit if buy else bar["high"] >= limit
        if not crossed:
            return None
        price, rate, liquidity = limit, params["maker_fee"], "maker"
    else:
        base = bar["close"]
        if order["type"] != "market":
            # A stop or target the bar crossed: it fills there, or at the open when the bar gapped past it
            # (worse for a stop, better for a target), then slips like any market order.
            worse = (order["type"] == "stop") == (not buy)
            base = (min if worse else max)(bar["open"], order["price"])
        # Square-root impact law: slippage grows with the square root of the bar volume share taken.
        slip = params["slippage_bps"] / 1e4 + params["impact"] * (qty / bar["volume"]) ** 0.5
        price = base * (1 + slip if buy else 1 - slip)
        rate, liquidity = params["taker_fee"], "taker"
    return {"order_id": order["id"], "venue": order["venue"], "symbol": order["symbol"],
            "side": order["side"], "qty": qty, "price": price, "fee": qty * price * rate,
            "fee_ccy": "USDT", "fee_usdt": qty * price * rate, "liquidity": liquidity, "ts": int(bar["ts"])}
